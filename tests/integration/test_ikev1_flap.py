"""Drops that mean drops (issue 19), on real charon 5.9.8 servers and clients in network
namespaces (kernel-libipsec), with the exporter's default reauthentication grace (10 s):

- an IKEv1 client that disconnects politely (IKE delete) and connects again within a second
  is one drop and one up, not a reauthentication (IKEv1 clients reauthenticate
  make-before-break, so break-before-make from one is a real disconnect);
- a real IKEv1 reauthentication (the client's own short `reauth_time`: the new IKE SA comes
  up and adopts the CHILD SA, the old one is deleted 10 s later) is one rekey, no drop.

The labs (namespaces, charons) and the exporter are torn down by the fixtures, also when a
test fails.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from exporter.demo.lab.charon import Charon, decode
from tests.conftest import ExporterProcess, Scrape, StartExporter
from tests.lab.rekey import short_rekey_client_conf

pytestmark = pytest.mark.lab

IKE_EVENTS = "strongswan_ike_sa_events_total"
CHILD_EVENTS = "strongswan_child_sa_events_total"
#: The exporter's default: what the issue's churn ran with.
GRACE = 10.0


def ike(s: Scrape, conn: str, event: str) -> float:
    return s.value(IKE_EVENTS, conn=conn, event=event) or 0.0


def child(s: Scrape, conn: str, event: str) -> float:
    return s.value(CHILD_EVENTS, conn=conn, child=conn, event=event) or 0.0


def counts(s: Scrape, conn: str) -> dict[str, float]:
    """Every event count of ``conn``: ``ike-up``, ..., ``child-rekey``."""
    out = {}
    for event in ("up", "down", "rekey"):
        out[f"ike-{event}"] = ike(s, conn, event)
        out[f"child-{event}"] = child(s, conn, event)
    return out


def grown(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def streaming(s: Scrape) -> bool:
    return s.value("strongswan_up") == 1 and s.value("strongswan_event_stream_up") == 1


def established(s: Scrape, conn: str) -> float:
    return s.value("strongswan_connection_established", conn=conn) or 0.0


def start(start_exporter: StartExporter, uri: str) -> ExporterProcess:
    """The exporter with its defaults, but for a listing every second (so that a listing
    may see an IKEv1 reauthentication's adoption: the ledger must count right with and
    without one)."""
    return start_exporter(uri, "--collector.strongswan.sa-refresh-interval", "1")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


@dataclass
class ClientEvent:
    at: float
    name: str
    up: bool
    ike_id: str
    state: str


@dataclass
class ClientLog:
    """What one client charon itself did, from its own event stream: the reference the
    exporter's counts are checked against."""

    charon: Charon
    events: list[ClientEvent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ClientLog:
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"no event subscription on {self.charon.name}")
        return self

    def _listen(self) -> None:
        import vici

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stream: Any = None
        try:
            sock.connect(str(self.charon.socket_path))
            stream = vici.Session(sock).listen(["ike-updown", "ike-rekey"], timeout=0.2)
            for name, message in stream:
                self._ready.set()
                if self._stop.is_set():
                    return
                if name is None:
                    continue
                msg = decode(message)
                for sa in msg.values():
                    if isinstance(sa, dict) and "uniqueid" in sa:
                        self.events.append(
                            ClientEvent(
                                time.monotonic(),
                                name.decode(),
                                msg.get("up") == "yes",
                                sa["uniqueid"],
                                sa.get("state", ""),
                            )
                        )
        except OSError:
            return  # the client's charon is gone (killed by the test)
        finally:
            self._ready.set()
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            sock.close()

    def ike_ups(self) -> int:
        return sum(1 for e in self.events if e.name == "ike-updown" and e.up)

    def ike_downs(self) -> int:
        return sum(1 for e in self.events if e.name == "ike-updown" and not e.up)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def client_logs() -> Any:
    """``client_logs(charon)`` -> a started ClientLog, closed after the test."""
    made: list[ClientLog] = []

    def make(charon: Charon) -> ClientLog:
        log = ClientLog(charon).start()
        made.append(log)
        return log

    yield make
    for log in made:
        log.close()


def test_ikev1_polite_disconnect_and_reconnect_within_a_second_is_a_down_and_an_up(
    make_lab: Any, start_exporter: StartExporter
) -> None:
    lab = make_lab(["nycmesh", "nycmesh"])
    flapper, bystander = lab.clients
    exp = start(start_exporter, lab.server_uri)
    before = exp.wait_for(lambda s: streaming(s) and established(s, "nycmesh") == 2)
    assert flapper.ping(2) == 2

    t0 = time.monotonic()
    flapper.disconnect()  # swanctl --terminate: the client deletes its SAs (IKE delete)
    flapper.connect()
    took = time.monotonic() - t0
    assert took < 1.0, f"disconnect + reconnect took {took:.2f}s"
    assert flapper.ping(2) == 2

    wanted = {"ike-down": 1, "ike-up": 1, "child-down": 1, "child-up": 1}
    start_ = counts(before, "nycmesh")
    s = exp.wait_for(lambda s: grown(counts(s, "nycmesh"), start_) == wanted, timeout=20)
    counted_after = time.monotonic() - t0
    # IKEv1 drops are counted at once, not after the 10 s grace.
    assert counted_after < GRACE, f"the drop was counted only after {counted_after:.1f}s"
    # Nothing else comes once the grace time is long over: no late rekey, no second drop.
    time.sleep(GRACE + 2.5 - (time.monotonic() - t0))
    s = exp.scrape()
    assert grown(counts(s, "nycmesh"), start_) == wanted, s.text
    assert established(s, "nycmesh") == 2
    assert bystander.ping(1) == 1


def test_ikev1_reauthentication_is_a_rekey_not_a_drop(
    make_lab: Any, start_exporter: StartExporter, client_logs: Any
) -> None:
    """The client reauthenticates by itself every 12 s (make-before-break): the new IKE SA
    comes up, the server moves the CHILD SA to it, the client deletes the old one 10 s
    later. Two reauthentications: two rekeys, no drop, the CHILD SA untouched."""
    lab = make_lab(["nycmesh"], connect=False)
    client = lab.clients[0]
    client.charon.load(short_rekey_client_conf(client.shape, child_rekey=600, ike_rekey=12))
    exp = start(start_exporter, lab.server_uri)
    before = exp.wait_for(streaming)
    log = client_logs(client.charon)
    client.connect()
    reauths = 2
    # Each reauthentication: one more IKE SA up on the client, the old one deleted later.
    wait_until(lambda: log.ike_ups() >= 1 + reauths, 40, "the client's reauthentications")
    wait_until(lambda: log.ike_downs() >= reauths, 20, "the old IKE SAs' deletion")
    ups, downs = log.ike_ups(), log.ike_downs()
    assert (ups, downs) == (1 + reauths, reauths), log.events
    assert client.ping(2) == 2

    start_ = counts(before, "nycmesh")

    def as_the_client_did(s: Scrape) -> bool:
        """Each IKE SA the client set up is an up, each old one it deleted a rekey."""
        wanted = {"ike-up": log.ike_ups(), "ike-rekey": log.ike_downs(), "child-up": 1}
        return grown(counts(s, "nycmesh"), start_) == wanted

    s = exp.wait_for(as_the_client_did, timeout=15)
    assert established(s, "nycmesh") == 1
    # No drop shows up later (the grace time): the client reauthenticates on meanwhile.
    t0 = time.monotonic()
    while time.monotonic() - t0 < GRACE + 2:
        s = exp.scrape()
        assert ike(s, "nycmesh", "down") == ike(before, "nycmesh", "down"), s.text
        assert child(s, "nycmesh", "down") == child(before, "nycmesh", "down"), s.text
        time.sleep(0.5)
    s = exp.wait_for(as_the_client_did, timeout=15)
    assert grown(counts(s, "nycmesh"), start_)["ike-rekey"] >= reauths
