"""Lab helpers for rekey and event tests: short rekey timers and a client's own SA counts.

Nothing here edits the lab's standard configurations: :func:`short_rekey_client_conf`
derives a client configuration from :func:`exporter.demo.lab.configs.client_swanctl_conf`, to be
loaded with ``client.charon.load(...)`` before the client connects.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.demo.lab.charon import Charon, decode
from exporter.demo.lab.configs import ClientShape, client_swanctl_conf

CHILD_EVENTS = ("child-updown", "child-rekey")


def short_rekey_client_conf(
    shape: ClientShape, child_rekey: int = 4, ike_rekey: int | None = None
) -> str:
    """The client's usual configuration, with its CHILD SA rekeyed by charon itself every
    ``child_rekey`` seconds (``rand_time = 0`` so the timing is exact) and, if given, its
    IKE SA rekeyed every ``ike_rekey`` seconds (IKEv2) or reauthenticated (IKEv1)."""
    conf = client_swanctl_conf(shape)
    child_marker = "        start_action = none\n"
    if child_marker not in conf:
        raise ValueError("unexpected client configuration: no start_action line")
    child_timers = (
        f"        rekey_time = {child_rekey}s\n"
        f"        life_time = {child_rekey * 3}s\n"
        "        rand_time = 0s\n"
    )
    conf = conf.replace(child_marker, child_marker + child_timers, 1)
    if ike_rekey is not None:
        ike_marker = "    vips = 0.0.0.0\n"
        key = "rekey_time" if shape.conn == "ikev2-psk" else "reauth_time"
        ike_timers = f"    {key} = {ike_rekey}s\n    over_time = {ike_rekey}s\n    rand_time = 0s\n"
        conf = conf.replace(ike_marker, ike_marker + ike_timers, 1)
    return conf


@dataclass
class SaCounts:
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0

    def raise_to(self, child: Mapping[str, Any]) -> None:
        """Counts of one CHILD SA only grow: keep the largest seen of each."""
        self.bytes_in = max(self.bytes_in, int(child.get("bytes-in", 0)))
        self.bytes_out = max(self.bytes_out, int(child.get("bytes-out", 0)))
        self.packets_in = max(self.packets_in, int(child.get("packets-in", 0)))
        self.packets_out = max(self.packets_out, int(child.get("packets-out", 0)))


def _children(ike_sas: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    """Every CHILD SA in a list of ``{ike_name: ike_sa}`` sections."""
    for section in ike_sas:
        for ike in section.values():
            if isinstance(ike, Mapping):
                for child in ike.get("child-sas", {}).values():
                    if isinstance(child, Mapping):
                        yield child


class ClientLedger:
    """What one (client) charon itself counted, per CHILD SA uniqueid.

    ``read()`` takes the current counts from ``list-sas``; with ``listen=True`` a thread
    also follows the charon's child-updown/child-rekey events, which carry the final
    counts of CHILD SAs that end (needed when charon rekeys on its own timer). Totals sum
    every CHILD SA this charon had while watched, so they survive its rekeys.
    """

    def __init__(self, charon: Charon, *, listen: bool = False) -> None:
        self.charon = charon
        self.per_sa: dict[str, SaCounts] = {}
        self.events = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        if listen:
            self._thread = threading.Thread(target=self._listen, daemon=True)
            self._thread.start()
            if not self._ready.wait(10):
                raise RuntimeError(f"no event subscription on {charon.name}")

    def _take(self, children: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            for child in children:
                uid = str(child.get("uniqueid", ""))
                if uid:
                    self.per_sa.setdefault(uid, SaCounts()).raise_to(child)

    def read(self) -> SaCounts:
        """Take the live CHILD SAs' counts now; return the totals."""
        self._take(_children(self.charon.list_sas()))
        return self.total()

    def total(self) -> SaCounts:
        with self._lock:
            total = SaCounts()
            for c in self.per_sa.values():
                total.bytes_in += c.bytes_in
                total.bytes_out += c.bytes_out
                total.packets_in += c.packets_in
                total.packets_out += c.packets_out
            return total

    def _listen(self) -> None:
        import vici

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stream: Any = None
        try:
            sock.connect(str(self.charon.socket_path))
            stream = vici.Session(sock).listen(list(CHILD_EVENTS), timeout=0.2)
            for name, message in stream:
                # listen() registers before its first receive; the first timeout or event
                # proves the subscription is in place.
                self._ready.set()
                if self._stop.is_set():
                    return
                if name is None:
                    continue
                self.events += 1
                self._take(_event_children(decode(message)))
        except OSError:
            return  # the charon went away
        finally:
            self._ready.set()
            if stream is not None:
                with contextlib.suppress(Exception):  # unregistering from a dead charon
                    stream.close()
            sock.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _event_children(message: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """CHILD SAs in a child-updown (``child-sas: {name: sa}``) or child-rekey event
    (``child-sas: {name: {old: sa, new: sa}}``)."""
    for ike in message.values():
        if not isinstance(ike, Mapping):
            continue
        for child in ike.get("child-sas", {}).values():
            if not isinstance(child, Mapping):
                continue
            if "old" in child or "new" in child:
                for side in ("old", "new"):
                    if isinstance(child.get(side), Mapping):
                        yield child[side]
            else:
                yield child
