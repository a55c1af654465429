"""A VICI peer on a Unix socket that floods the exporter's event stream with new SAs.

It answers what the exporter asks (version, stats, the listings: empty unless told
otherwise), confirms event registrations, and once a connection has registered for every
event the exporter follows, writes `ike-updown` + `child-updown` up events of `flood`
distinct IKE SAs (fresh uniqueids, remote hosts and users, so no reauthentication
heuristic merges two) as fast as the exporter reads them. `drop_events()` closes the event
connection: the exporter reconnects and asks for a listing, which (empty) removes every
SA the flood announced.

Events are taken from a real charon's recording (tests/fixtures/vici-events/up.json).
"""

from __future__ import annotations

import copy
import json
import socket
import struct
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vici.protocol import Packet

from exporter.vici.codec import frame as _frame

# The frames both fakes send are encoded in one place: the replaying fake's.
from tests.fakes.vici_server import encode_event, encode_response

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vici-events"
HEADER = struct.Struct("!I")
EVENTS = frozenset({"ike-updown", "child-updown", "ike-rekey", "child-rekey"})
ANSWERS: dict[str, dict[str, Any]] = {
    "version": {"daemon": "charon", "version": "5.9.8", "sysname": "Linux"},
    "stats": {"uptime": {"running": "1 hour", "since": "Nov 25 04:26:09 2026"}},
}


def _templates(recording: str, up: bool) -> list[tuple[str, dict[str, Any]]]:
    """The IKEv2 connection's ike-updown and child-updown events (up or down), in the
    order charon sent them."""
    data = json.loads((FIXTURES / f"{recording}.json").read_text())
    return [
        (e["event"], e["message"])
        for e in data["events"]
        if "ikev2-psk" in e["message"] and (e["message"].get("up") == "yes") == up
    ]


def flood_events(
    count: int, first: int = 1, up: bool = True
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Up (or down) events of `count` IKE SAs numbered from `first`, each with one CHILD SA
    (the same uniqueid), its own remote host and user."""
    templates = _templates("up", True) if up else _templates("down-terminate-ikev2", False)
    for i in range(first, first + count):
        host = f"10.{(i >> 16) % 256}.{(i >> 8) % 256}.{i % 256}"
        for name, tpl in templates:
            msg = copy.deepcopy(tpl)
            sa = msg["ikev2-psk"]
            sa.update({"uniqueid": str(i), "remote-host": host, "remote-id": f"user{i}"})
            children = sa.pop("child-sas", None)
            if children:
                (child,) = children.values()
                child["uniqueid"] = str(i)
                sa["child-sas"] = {f"ikev2-psk-{i}": child}
            yield name, msg


def _response(message: Mapping[str, Any] | None = None) -> bytes:
    return encode_response(message or {})


class FakeCharon:
    """Serves `path` from a thread per connection until `close()`."""

    def __init__(self, path: Path, flood: int = 0, batch: int = 50, held: bool = False) -> None:
        """`held`: the flood waits for `release()`."""
        self.path = path
        self._go = threading.Event()
        if not held:
            self._go.set()
        self.flood = flood
        self.batch = batch
        #: IKE SAs whose up events were written so far.
        self.flooded = 0
        self.flood_done = threading.Event()
        self._flood_started = False
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        self._conns: list[socket.socket] = []
        self._event_conn: socket.socket | None = None
        self._closed = False
        #: What `list-sas` answers: one `list-sa` event each ({conn: IKE SA section}).
        self.listing: list[dict[str, Any]] = []
        self._event_sending: threading.Lock | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="fake-charon").start()

    @property
    def uri(self) -> str:
        return f"unix://{self.path}"

    def close(self) -> None:
        self._closed = True
        self._go.set()
        self._server.close()
        with self._lock:
            for conn in self._conns:
                conn.close()

    def send_events(self, events: list[tuple[str, dict[str, Any]]]) -> bool:
        """Write events to the event connection, if there is one."""
        with self._lock:
            conn, sending = self._event_conn, self._event_sending
        if conn is None or sending is None:
            return False
        data = b"".join(encode_event(name, msg) for name, msg in events)
        try:
            with sending:
                conn.sendall(data)
        except OSError:
            return False
        return True

    def release(self) -> None:
        """Start the flood (or let it start once the event stream registers)."""
        self._go.set()

    def drop_events(self) -> None:
        """Close the event connection (the exporter reconnects and lists again)."""
        with self._lock:
            conn, self._event_conn = self._event_conn, None
        if conn is not None:
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        registered: set[str] = set()
        # The flood and the answers (the stream's liveness question) share the socket:
        # whole frames only, one writer at a time.
        sending = threading.Lock()
        try:
            while True:
                packet = self._read(conn)
                kind = packet[0]
                name = packet[2 : 2 + packet[1]].decode() if kind != Packet.EVENT else ""
                if kind in (Packet.EVENT_REGISTER, Packet.EVENT_UNREGISTER):
                    with sending:
                        conn.sendall(_frame(bytes([Packet.EVENT_CONFIRM])))
                    registered.add(name)
                    if registered >= EVENTS:
                        with self._lock:
                            self._event_conn, self._event_sending = conn, sending
                    if registered >= EVENTS and self.flood and not self._flood_started:
                        self._flood_started = True
                        threading.Thread(
                            target=self._flood, args=(conn, sending), daemon=True
                        ).start()
                elif kind == Packet.CMD_REQUEST:
                    listed = b""
                    if name == "list-sas":
                        listed = b"".join(encode_event("list-sa", sa) for sa in self.listing)
                    with sending:
                        conn.sendall(listed + _response(ANSWERS.get(name)))
        except OSError:
            pass
        finally:
            conn.close()

    def _flood(self, conn: socket.socket, sending: threading.Lock) -> None:
        chunk: list[bytes] = []
        while not self._go.wait(0.1):
            if self._closed:
                return
        try:
            for name, msg in flood_events(self.flood):
                chunk.append(encode_event(name, msg))
                if len(chunk) >= 2 * self.batch:
                    with sending:
                        conn.sendall(b"".join(chunk))
                    self.flooded += len(chunk) // 2
                    chunk = []
            with sending:
                conn.sendall(b"".join(chunk))
            self.flooded += len(chunk) // 2
        except OSError:
            return
        self.flood_done.set()

    @staticmethod
    def _read(conn: socket.socket) -> bytes:
        head = FakeCharon._exactly(conn, HEADER.size)
        return FakeCharon._exactly(conn, HEADER.unpack(head)[0])

    @staticmethod
    def _exactly(conn: socket.socket, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            part = conn.recv(n - len(data))
            if not part:
                raise ConnectionError("peer closed")
            data += part
        return bytes(data)
