"""Benchmark: does the event path keep up with 1,000+ up/down events per second, losing none?

Two measurements (issue 3):

``playback``
    The real ``EventStream`` and ``SaLedger`` read from a Unix socket server that plays back
    event packets recorded from a real charon (tests/fixtures/vici-events), re-encoded with
    ``vici.protocol`` and given fresh uniqueids and peer addresses, at full speed. Measures
    events/s processed and checks every count and byte total is exact.

``charon``
    Real charon in the netns lab (root): one client charon brings up N IKEv2 tunnels at
    once (``start_action = start``), then is stopped (SIGTERM: it deletes all of them). The
    real exporter runs against the server; the event rate charon produced is taken from a
    separate VICI listener's timestamps, and the exporter's counters must match exactly.

    python bench/events.py                       # both
    python bench/events.py playback --tunnels 20000
    python bench/events.py charon --tunnels 300
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vici.protocol import Message, Packet  # noqa: E402

from exporter.config import ViciAddress  # noqa: E402
from exporter.strongswan.charon_events import EVENTS, decode_event  # noqa: E402
from exporter.strongswan.event_stream import EventStream  # noqa: E402
from exporter.strongswan.ledger import SaLedger  # noqa: E402
from exporter.vici import Backoff  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "vici-events"
HEADER = struct.Struct("!I")
Event = tuple[str, dict[str, Any]]


@dataclass
class Row:
    what: str
    events: int
    seconds: float
    exact: bool
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


# -- playback ---------------------------------------------------------------------------------


def _recorded(name: str) -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    events: list[dict[str, Any]] = data["events"]
    return events


def templates() -> dict[str, dict[str, Any]]:
    """One real up and one real down event of each kind, for the IKEv2 connection: the
    ike-updown/child-updown pair charon sends when a tunnel comes up and when it goes."""
    up = [e for e in _recorded("up") if "ikev2-psk" in e["message"]]
    down = _recorded("down-terminate-ikev2")
    found: dict[str, dict[str, Any]] = {}
    for e in up:
        found[f"{e['event']}/up"] = e["message"]
    for e in down:
        if e["message"].get("up") != "yes":
            found[f"{e['event']}/down"] = e["message"]
    wanted = {"ike-updown/up", "child-updown/up", "child-updown/down", "ike-updown/down"}
    if set(found) != wanted:
        raise SystemExit(f"fixtures lack events: have {sorted(found)}")
    return found


def _tunnel_events(tpl: Mapping[str, dict[str, Any]], i: int, nbytes: int) -> list[Event]:
    """Up and down of tunnel ``i``: its own uniqueids and remote host (a distinct peer, so no
    reauthentication heuristic applies), ``nbytes`` in its final CHILD SA counts."""
    ike_id, child_id = str(1000 + i), str(5000 + i)
    host = f"10.{100 + (i >> 16) % 100}.{(i >> 8) % 256}.{i % 256}"
    out: list[Event] = []
    for key in ("ike-updown/up", "child-updown/up", "child-updown/down", "ike-updown/down"):
        msg = copy.deepcopy(tpl[key])
        sa = msg["ikev2-psk"]
        sa["uniqueid"] = ike_id
        sa["remote-host"] = host
        sa["remote-id"] = host
        children = sa.get("child-sas", {})
        for name in list(children):
            child = children.pop(name)
            child["uniqueid"] = child_id
            if key == "child-updown/down":
                child["bytes-in"] = str(nbytes)
                child["packets-in"] = str(nbytes // 100)
            children[f"ikev2-psk-{child_id}"] = child
        out.append((key.split("/")[0], msg))
    return out


def encode_event(name: str, message: Mapping[str, Any]) -> bytes:
    payload = Packet._named_request(Packet.EVENT, name, Message.serialize(message))
    return bytes(HEADER.pack(len(payload)) + payload)


class Player(threading.Thread):
    """A fake charon VICI socket: confirms the event registrations, then writes all
    packets as fast as the reader takes them. Anything else gets an empty response."""

    def __init__(self, path: str, packets: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.blob = b"".join(packets)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)
        self.started_at = 0.0
        self.sent_at = 0.0

    def _read_packet(self, conn: socket.socket) -> bytes:
        head = self._exactly(conn, 4)
        return self._exactly(conn, HEADER.unpack(head)[0])

    @staticmethod
    def _exactly(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("reader closed")
            data += chunk
        return data

    def run(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            for _ in EVENTS:
                packet = self._read_packet(conn)
                if packet[0] != Packet.EVENT_REGISTER:
                    raise RuntimeError(f"expected a registration, got packet type {packet[0]}")
                confirm = bytes([Packet.EVENT_CONFIRM])
                conn.sendall(HEADER.pack(len(confirm)) + confirm)
            self.started_at = time.perf_counter()
            conn.sendall(self.blob)
            self.sent_at = time.perf_counter()
            # Keep the connection open until the reader is done (it is closed then).
            try:
                while conn.recv(4096):
                    pass
            except OSError:
                pass


async def _playback(tunnels: int, grace: float, sockdir: Path) -> list[Row]:
    tpl = templates()
    events: list[Event] = []
    expected_bytes = 0
    for i in range(tunnels):
        nbytes = 100 * (i % 50 + 1)
        expected_bytes += nbytes
        events += _tunnel_events(tpl, i, nbytes)
    packets = [encode_event(name, msg) for name, msg in events]

    # The ledger alone, no I/O, on the first tenth, quarter and all of the same events:
    # what one event costs, and whether that depends on how many came before.
    ledger_rows = []
    for part in sorted({max(1, tunnels // 10), max(1, tunnels // 4), tunnels}):
        ledger_only = SaLedger(reauth_grace=grace)
        ledger_only.reconcile([], ledger_only.clock())
        chunk = events[: 4 * part]
        t0 = time.perf_counter()
        for name, msg in chunk:
            _apply(ledger_only, name, msg)
        seconds = time.perf_counter() - t0
        part_bytes = sum(100 * (i % 50 + 1) for i in range(part))
        exact = _exact(ledger_only, part, part_bytes, settle=True)
        what = f"SaLedger.apply_event alone, {part} tunnels"
        ledger_rows.append(Row(what, len(chunk), seconds, exact, "no I/O"))

    ledger_rows += sustained(events, grace, rate=1000.0, block=2000)

    path = str(sockdir / "fake-charon.vici")
    Path(path).unlink(missing_ok=True)
    player = Player(path, packets)
    player.start()
    ledger = SaLedger(reauth_grace=grace)

    async def reconcile() -> None:
        ledger.reconcile([], ledger.clock())  # the fake charon lists no SAs

    address = ViciAddress.parse(f"unix://{path}")
    stream = EventStream(address, 5.0, ledger.apply, reconcile, backoff=Backoff())
    stream.start()
    deadline = time.monotonic() + 120
    while stream.events_received < len(events) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    done = time.perf_counter()
    received = stream.events_received
    await stream.stop()
    seconds = done - player.started_at
    exact = received == len(events) and _exact(ledger, tunnels, expected_bytes, settle=True)
    note = f"socket write done after {player.sent_at - player.started_at:.2f}s"
    what = f"EventStream over a Unix socket + SaLedger, {tunnels} tunnels"
    stream_row = Row(what, received, seconds, exact, note)
    Path(path).unlink(missing_ok=True)
    return [stream_row, *ledger_rows]


def sustained(events: list[Event], grace: float, rate: float, block: int) -> list[Row]:
    """The ledger fed as if charon sent ``rate`` events per second for as long as the list
    lasts (a simulated clock, so grace times expire as they would): the processing rate of
    the first and the last block of ``block`` events. Below ``rate``, it falls behind."""
    now = [0.0]
    ledger = SaLedger(reauth_grace=grace, clock=lambda: now[0])
    ledger.reconcile([], now[0])
    per_block: list[float] = []
    for start in range(0, len(events), block):
        t0 = time.perf_counter()
        for name, msg in events[start : start + block]:
            now[0] += 1.0 / rate
            _apply(ledger, name, msg)
        per_block.append(time.perf_counter() - t0)
    tunnels = len(events) // 4
    expected = sum(100 * (i % 50 + 1) for i in range(tunnels))
    exact = _exact(ledger, tunnels, expected, settle=True)
    last = len(per_block) - 1
    return [
        Row(
            f"SaLedger at a steady {rate:,.0f} events/s (simulated clock), block {n + 1}",
            min(block, len(events) - n * block),
            per_block[n],
            exact,
            f"events {n * block}-{min(len(events), (n + 1) * block)}",
        )
        for n in sorted({0, last})
    ]


def _apply(ledger: SaLedger, name: str, message: dict[str, Any]) -> None:
    """One event as the event stream hands it on: decoded once, then applied."""
    event = decode_event(name, message, time.time())
    if event is not None:
        ledger.apply(event)


def _exact(ledger: SaLedger, tunnels: int, expected_bytes: int, settle: bool) -> bool:
    if settle:
        # Count drops still inside their reauthentication grace (as the 1 s tick would).
        ledger.clock = lambda: time.monotonic() + ledger.reauth_grace + 1
        ledger.tick()
    ike = {k: v for k, v in ledger.ike_events.items() if v}
    child = {k: v for k, v in ledger.child_events.items() if v}
    totals = ledger.traffic_totals().get(("ikev2-psk", "ikev2-psk"))
    ok = (
        ike == {("ikev2-psk", "up"): tunnels, ("ikev2-psk", "down"): tunnels}
        and child
        == {("ikev2-psk", "ikev2-psk", "up"): tunnels, ("ikev2-psk", "ikev2-psk", "down"): tunnels}
        and totals is not None
        and totals.bytes_in == expected_bytes
    )
    if not ok:
        print(
            f"MISMATCH: ike={ike} child={child} bytes_in={totals and totals.bytes_in} "
            f"expected {tunnels} each and {expected_bytes} bytes",
            file=sys.stderr,
        )
    return ok


def playback(tunnels: int, grace: float) -> list[Row]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        return asyncio.run(_playback(tunnels, grace, Path(tmp)))


# -- real charon ------------------------------------------------------------------------------


def _scale_server_conn() -> dict[str, Any]:
    from exporter.demo.lab.configs import ESP_PROPOSALS, IKE_PROPOSALS, SERVER_ADDR, TUNNEL_TARGET

    return {
        "scale": {
            "version": "2",
            "proposals": IKE_PROPOSALS.split(","),
            "pools": ["scale-pool"],
            "send_certreq": "no",
            "local-1": {"auth": "psk", "id": SERVER_ADDR},
            "remote-1": {"auth": "psk", "id": "*@scale"},
            "children": {
                "scale": {
                    "local_ts": [f"{TUNNEL_TARGET}/32"],
                    "esp_proposals": ESP_PROPOSALS.split(","),
                }
            },
        }
    }


def _scale_client_conn(i: int) -> dict[str, Any]:
    from exporter.demo.lab.configs import ESP_PROPOSALS, IKE_PROPOSALS, SERVER_ADDR, TUNNEL_TARGET

    return {
        f"s{i}": {
            "version": "2",
            "remote_addrs": [SERVER_ADDR],
            "vips": ["0.0.0.0"],
            "proposals": IKE_PROPOSALS.split(","),
            "local-1": {"auth": "psk", "id": f"user{i}@scale"},
            "remote-1": {"auth": "psk", "id": SERVER_ADDR},
            "children": {
                f"s{i}": {
                    "remote_ts": [f"{TUNNEL_TARGET}/32"],
                    "esp_proposals": ESP_PROPOSALS.split(","),
                    "start_action": "start",
                }
            },
        }
    }


class Listener(threading.Thread):
    """A separate VICI subscriber on the server: timestamps of every up/down event."""

    def __init__(self, socket_path: str) -> None:
        super().__init__(daemon=True)
        import vici

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(socket_path)
        self.session = vici.Session(sock)
        self.times: dict[str, list[float]] = {"up": [], "down": []}
        self.counts: dict[tuple[str, str], int] = {}
        self.stop = False
        self.ready = threading.Event()

    def run(self) -> None:
        stream = self.session.listen(["ike-updown", "child-updown"], 0.2)
        try:
            for name, message in stream:
                self.ready.set()
                if self.stop:
                    return
                if name is None:
                    continue
                kind = "up" if message.get("up") == b"yes" else "down"
                self.times[kind].append(time.monotonic())
                key = (name.decode(), kind)
                self.counts[key] = self.counts.get(key, 0) + 1
        except OSError:
            return
        finally:
            with contextlib.suppress(Exception):  # unregistering from a charon that is gone
                stream.close()


def _span(times: list[float]) -> float:
    return max(times) - min(times) if len(times) > 1 else 0.0


def charon(tunnels: int) -> list[Row]:
    import subprocess
    import urllib.request

    from exporter.demo.lab import Lab
    from tests.conftest import Scrape, exporter_argv, exporter_env, free_port

    rows: list[Row] = []
    with Lab(["ikev2-psk"], connect=False) as lab:
        with lab.server.session() as s:
            s.load_pool({"scale-pool": {"addrs": "10.98.0.0/20"}})
            s.load_conn(_scale_server_conn())
        port = free_port()
        argv = exporter_argv(
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--vici.socket",
            lab.server_uri,
            "--collector.strongswan.reauth-grace",
            "1",
        )
        exp = subprocess.Popen(
            argv, cwd=ROOT, env=exporter_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def scrape() -> Scrape:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=15) as resp:
                return Scrape(resp.read().decode())

        def wait(check: Any, timeout: float) -> Scrape:
            deadline = time.monotonic() + timeout
            last: Scrape | None = None
            while time.monotonic() < deadline:
                try:
                    last = scrape()
                    if check(last):
                        return last
                except OSError:
                    pass
                time.sleep(0.5)
            raise SystemExit(f"timed out; last scrape:\n{last.text if last else ''}")

        def value(s: Scrape, name: str, **labels: str) -> float:
            return s.value(name, **labels) or 0.0

        def ike_n(s: Scrape, event: str) -> float:
            return value(s, "strongswan_ike_sa_events_total", conn="scale", event=event)

        def child_n(s: Scrape, event: str) -> float:
            return value(
                s, "strongswan_child_sa_events_total", conn="scale", child="scale", event=event
            )

        try:
            wait(lambda s: value(s, "strongswan_event_stream_up") == 1, 30)
            listener = Listener(str(lab.server_socket))
            listener.start()
            listener.ready.wait(10)
            client = lab.clients[0]
            t_load = time.monotonic()
            with client.charon.session() as s:
                for i in range(tunnels):
                    s.load_conn(_scale_client_conn(i))  # start_action = start: initiates
            up = wait(lambda s: ike_n(s, "up") >= tunnels and child_n(s, "up") >= tunnels, 120)
            ups = len(listener.times["up"])
            up_exact = ike_n(up, "up") == child_n(up, "up") == tunnels and ups == 2 * tunnels
            rows.append(
                Row(
                    f"real charon: {tunnels} tunnels up",
                    ups,
                    _span(listener.times["up"]),
                    up_exact,
                    f"load-conn to all up {time.monotonic() - t_load:.1f}s",
                )
            )
            t_stop = time.monotonic()
            client.charon.stop(timeout=60)  # SIGTERM: it deletes every IKE SA on the way out
            wait(lambda s: ike_n(s, "down") >= tunnels and child_n(s, "down") >= tunnels, 120)
            counted = time.monotonic() - t_stop
            time.sleep(2.5)  # past the 1 s grace: anything counted twice would show now
            final = scrape()
            downs = len(listener.times["down"])
            exact = (
                all(ike_n(final, e) == child_n(final, e) == tunnels for e in ("up", "down"))
                and ike_n(final, "rekey") == child_n(final, "rekey") == 0
                and downs == 2 * tunnels
            )
            rows.append(
                Row(
                    f"real charon: {tunnels} tunnels down (client SIGTERM)",
                    downs,
                    _span(listener.times["down"]),
                    exact,
                    f"SIGTERM to all downs counted {counted:.1f}s (grace 1 s)",
                )
            )
            everything = listener.times["up"] + listener.times["down"]
            received = value(final, "strongswan_event_stream_events_total")
            rows.append(
                Row(
                    "real charon: all up/down events, exporter saw",
                    int(received),
                    _span(listener.times["up"]) + _span(listener.times["down"]),
                    received == len(everything),
                    "events_total vs an independent VICI listener",
                )
            )
            listener.stop = True
            listener.join(5)
        finally:
            exp.terminate()
            exp.wait(10)
    return rows


# -- main -------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = [
        "| measurement | events | seconds | events/s | exact |  |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.what} | {r.events} | {r.seconds:.3f} | {r.rate:,.0f} | "
            f"{'yes' if r.exact else 'NO'} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("mode", nargs="?", choices=["all", "playback", "charon"], default="all")
    parser.add_argument("--tunnels", type=int, default=0, help="tunnels per run")
    parser.add_argument("--grace", type=float, default=10.0, help="playback reauth grace")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    if args.mode in ("all", "playback"):
        rows += playback(args.tunnels or 2500, args.grace)
    if args.mode in ("all", "charon"):
        rows += charon(args.tunnels or 1000)
    print(table(rows))
    return 0 if all(r.exact for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
