"""The event stream and the ledger against real charon daemons (issue 3).

Every test starts its own lab and exporter with a reauthentication grace of 1 s, so a drop
is counted 1 s (plus at most one 1 s tick) after charon reports it. Waits are wall-clock
deadlines with generous margins: other jobs share the 2 cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from exporter.demo.lab.base import NamespaceLab
from exporter.demo.lab.configs import XAUTH_USER
from exporter.demo.lab.netns import NetnsError
from tests.conftest import ExporterProcess, Scrape, StartExporter
from tests.lab.rekey import ClientLedger, SaCounts, short_rekey_client_conf

pytestmark = pytest.mark.lab

GRACE = 1.0
#: A drop is counted GRACE after the event, by a tick that runs every second.
DROP_LATENCY = GRACE + 1.0

IKE_EVENTS = "strongswan_ike_sa_events_total"
CHILD_EVENTS = "strongswan_child_sa_events_total"
LAST_CHANGE = "strongswan_connection_last_change_timestamp_seconds"
MONOTONIC = (
    IKE_EVENTS,
    CHILD_EVENTS,
    "strongswan_child_sa_bytes_total",
    "strongswan_child_sa_packets_total",
    "strongswan_user_bytes_total",
    "strongswan_user_packets_total",
    "strongswan_event_stream_reconnects_total",
    "strongswan_event_stream_events_total",
)


# -- helpers -------------------------------------------------------------------------------------


def start(start_exporter: StartExporter, lab: NamespaceLab) -> ExporterProcess:
    # Exact totals at each check: the live CHILD SAs' counts come from a listing every
    # second instead of the default 60 s (ended SAs' counts come from events anyway).
    return start_exporter(
        lab.server_uri,
        "--collector.strongswan.reauth-grace", str(GRACE),
        "--collector.strongswan.sa-refresh-interval", "1",
    )  # fmt: skip


def ike(s: Scrape, conn: str, event: str) -> float:
    return s.value(IKE_EVENTS, conn=conn, event=event) or 0.0


def child(s: Scrape, conn: str, event: str) -> float:
    return s.value(CHILD_EVENTS, conn=conn, child=conn, event=event) or 0.0


def established(s: Scrape, conn: str) -> float:
    return s.value("strongswan_connection_established", conn=conn) or 0.0


def streaming(s: Scrape) -> bool:
    return s.value("strongswan_up") == 1 and s.value("strongswan_event_stream_up") == 1


def traffic(s: Scrape, conn: str, kind: str = "bytes", direction: str = "in") -> float:
    return (
        s.value(f"strongswan_child_sa_{kind}_total", conn=conn, child=conn, direction=direction)
        or 0.0
    )


def user_traffic(s: Scrape, conn: str, user: str, kind: str, direction: str) -> float:
    return (
        s.value(f"strongswan_user_{kind}_total", conn=conn, user=user, direction=direction) or 0.0
    )


def matches(s: Scrape, conn: str, sent: SaCounts) -> bool:
    """The server's rekey-proof totals equal what the client counted: what the client sent
    came in, what it received went out."""
    return (
        traffic(s, conn, "bytes", "in") == sent.bytes_out
        and traffic(s, conn, "packets", "in") == sent.packets_out
        and traffic(s, conn, "bytes", "out") == sent.bytes_in
        and traffic(s, conn, "packets", "out") == sent.packets_in
    )


def totals_text(s: Scrape, conn: str, sent: SaCounts) -> str:
    got = {(k, d): traffic(s, conn, k, d) for k in ("bytes", "packets") for d in ("in", "out")}
    return f"server {got}; client {sent}"


class Recorder:
    """Every scrape a test takes, so monotonicity can be checked over all of them."""

    def __init__(self, exp: ExporterProcess) -> None:
        self.exp = exp
        self.scrapes: list[Scrape] = []

    def scrape(self) -> Scrape:
        s = self.exp.scrape()
        self.scrapes.append(s)
        return s

    def wait_for(self, check: Callable[[Scrape], bool], timeout: float = 20.0) -> Scrape:
        def keep(s: Scrape) -> bool:
            self.scrapes.append(s)
            return check(s)

        return self.exp.wait_for(keep, timeout=timeout)

    def hold(self, seconds: float) -> list[Scrape]:
        """Scrape for ``seconds`` (a drop counted late would show up in this window)."""
        deadline = time.monotonic() + seconds
        taken = []
        while time.monotonic() < deadline:
            taken.append(self.scrape())
            time.sleep(0.3)
        taken.append(self.scrape())
        return taken

    def assert_monotonic(self, names: Iterable[str] = MONOTONIC) -> None:
        last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        wanted = set(names)
        for i, s in enumerate(self.scrapes):
            for fam in s.families.values():
                for sample in fam.samples:
                    if sample.name not in wanted:
                        continue
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if key in last:
                        assert sample.value >= last[key], (
                            f"{key} fell from {last[key]} to {sample.value} at scrape {i}"
                        )
                    last[key] = sample.value
        assert last, "no counter samples recorded"


def wait_matching(
    rec: Recorder, conn: str, sent: Callable[[], SaCounts], timeout: float = 20.0
) -> Any:
    """Scrape until the server's totals for ``conn`` equal the client's counts."""
    deadline = time.monotonic() + timeout
    while True:
        counts = sent()
        s = rec.scrape()
        if matches(s, conn, counts):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"totals differ after {timeout}s: {totals_text(s, conn, counts)}")
        time.sleep(0.3)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def child_ids(client: Any) -> set[str]:
    """Uniqueids of the client's installed CHILD SAs."""
    return {
        c["uniqueid"]
        for section in client.charon.list_sas()
        for sa in section.values()
        for c in sa.get("child-sas", {}).values()
        if c.get("state") == "INSTALLED"
    }


def ike_ids(client: Any) -> set[str]:
    """Uniqueid of the client's IKE SA that holds the installed CHILD SA (an IKEv1 client
    keeps the old, empty IKE SA around for a while after a reauthentication)."""
    return {
        sa["uniqueid"]
        for section in client.charon.list_sas()
        for sa in section.values()
        if sa.get("state") == "ESTABLISHED"
        and any(c.get("state") == "INSTALLED" for c in sa.get("child-sas", {}).values())
    }


def tunnel_works(client: Any) -> bool:
    try:
        return bool(client.ping(1) == 1)
    except NetnsError:
        return False


def only_new(client: Any, before: set[str], ids: Callable[[Any], set[str]]) -> bool:
    now = ids(client)
    return len(now) == 1 and not now & before


def rekey(client: Any, kind: str) -> None:
    """``swanctl --rekey`` of exactly the client's live SA of that kind, by its uniqueid
    (by name, an IKEv1 client would also reauthenticate its lingering old IKE SA)."""
    (uid,) = (child_ids if kind == "child" else ike_ids)(client)
    client.charon.swanctl("--rekey", f"--{kind}-id", uid)
    ids = child_ids if kind == "child" else ike_ids
    wait_until(lambda: only_new(client, {uid}, ids), 20, f"{kind} rekey of {client.conn}")


# -- drops ---------------------------------------------------------------------------------------


def test_terminated_clients_are_counted_down_exactly_once(
    make_lab: Any, start_exporter: Any
) -> None:
    lab = make_lab(["nycmesh"] * 3 + ["ikev2-psk"] * 2)
    rec = Recorder(start(start_exporter, lab))
    before = rec.wait_for(
        lambda s: (
            streaming(s) and established(s, "nycmesh") == 3 and established(s, "ikev2-psk") == 2
        )
    )
    assert before.value(LAST_CHANGE, conn="nycmesh") is None  # nothing happened yet
    events_before = before.required_value("strongswan_event_stream_events_total")
    dropped = {"nycmesh": 2, "ikev2-psk": 1}

    t0 = time.time()
    for client in (lab.clients[0], lab.clients[1], lab.clients[3]):
        client.disconnect()
    t1 = time.monotonic()

    def all_counted(s: Any) -> bool:
        return all(
            ike(s, conn, "down") == ike(before, conn, "down") + n
            and child(s, conn, "down") == child(before, conn, "down") + n
            for conn, n in dropped.items()
        )

    s = rec.wait_for(all_counted, timeout=20)
    latency = time.monotonic() - t1
    assert latency < 15, f"drops counted only after {latency:.1f}s"
    # Nothing more arrives once the grace time is long over: exactly once.
    for later in rec.hold(DROP_LATENCY + 1.5):
        assert all_counted(later), later.text
    for conn, n in dropped.items():
        assert established(s, conn) == {"nycmesh": 3, "ikev2-psk": 2}[conn] - n
        for event in ("up", "rekey"):
            assert ike(s, conn, event) == ike(before, conn, event), (conn, event)
            assert child(s, conn, event) == child(before, conn, event), (conn, event)
        changed = s.value(LAST_CHANGE, conn=conn)
        assert changed is not None and t0 - 1 <= changed <= time.time() + 1, (conn, changed, t0)
    assert s.required_value("strongswan_event_stream_events_total") >= events_before + 2 * 3
    rec.assert_monotonic()


def test_sigkilled_clients_are_found_by_dpd_and_counted_once(
    make_lab: Any, start_exporter: Any
) -> None:
    lab = make_lab(["nycmesh", "nycmesh", "ikev2-psk"])
    rec = Recorder(start(start_exporter, lab))
    before = rec.wait_for(
        lambda s: (
            streaming(s) and established(s, "nycmesh") == 2 and established(s, "ikev2-psk") == 1
        )
    )
    lab.clients[0].charon.kill()  # one of the two nycmesh clients; the other stays up
    lab.clients[2].charon.kill()

    def counted(s: Any) -> bool:
        return all(
            ike(s, conn, "down") == ike(before, conn, "down") + 1
            and child(s, conn, "down") == child(before, conn, "down") + 1
            for conn in ("nycmesh", "ikev2-psk")
        )

    s = rec.wait_for(counted, timeout=30)
    for later in rec.hold(DROP_LATENCY + 1.5):
        assert counted(later), later.text
    assert established(s, "nycmesh") == 1
    assert established(s, "ikev2-psk") == 0
    assert lab.clients[1].ping(2) == 2  # the survivor's tunnel still works
    rec.assert_monotonic()


def test_sa_up_and_down_between_two_scrapes(make_lab: Any, start_exporter: Any) -> None:
    """A tunnel that lives a few seconds, between two scrapes: a gauge never sees it, the
    counters do, and its traffic (reported only by the down event) is in the totals."""
    lab = make_lab(["nycmesh", "ikev2-psk"], connect=False)
    rec = Recorder(start(start_exporter, lab))
    first = rec.wait_for(streaming)
    sent = {}
    for client in lab.clients:
        client.connect()
        assert client.ping(2) == 2
        sent[client.conn] = ClientLedger(client.charon).read()
        # Longer than the reauthentication grace: this is one tunnel, not a reauth.
        time.sleep(GRACE + 0.5)
        client.disconnect()
    second = rec.wait_for(
        lambda s: all(ike(s, c, "down") == 1 and child(s, c, "down") == 1 for c in sent),
        timeout=20,
    )
    for conn, counts in sent.items():
        assert ike(first, conn, "up") == 0 and ike(first, conn, "down") == 0
        assert ike(second, conn, "up") == 1, conn
        assert child(second, conn, "up") == 1, conn
        assert ike(second, conn, "rekey") == 0 and child(second, conn, "rekey") == 0
        assert established(second, conn) == 0
        assert matches(second, conn, counts), totals_text(second, conn, counts)
    for later in rec.hold(DROP_LATENCY + 1):
        for conn in sent:
            assert ike(later, conn, "down") == 1 and ike(later, conn, "up") == 1
    rec.assert_monotonic()


def test_sa_shorter_than_the_grace_is_still_an_up_and_a_down(
    make_lab: Any, start_exporter: Any
) -> None:
    """Up, then terminated at once: no other SA replaced it, so it is no reauthentication
    (ledger docstring: a rekey needs *another* SA of the same peer)."""
    lab = make_lab(["ikev2-psk"], connect=False)
    rec = Recorder(start(start_exporter, lab))
    rec.wait_for(streaming)
    client = lab.clients[0]
    client.connect()
    client.disconnect()
    s = rec.wait_for(lambda s: ike(s, "ikev2-psk", "up") == 1, timeout=10)
    s = rec.wait_for(
        lambda s: ike(s, "ikev2-psk", "down") + ike(s, "ikev2-psk", "rekey") >= 1, timeout=20
    )
    rec.hold(DROP_LATENCY)
    s = rec.scrape()
    assert (
        ike(s, "ikev2-psk", "up"),
        ike(s, "ikev2-psk", "down"),
        ike(s, "ikev2-psk", "rekey"),
    ) == (
        1,
        1,
        0,
    ), "IKE up/down/rekey"
    assert (
        child(s, "ikev2-psk", "up"),
        child(s, "ikev2-psk", "down"),
        child(s, "ikev2-psk", "rekey"),
    ) == (1, 1, 0), "CHILD up/down/rekey"


# -- traffic across rekeys -------------------------------------------------------------------------


@pytest.mark.parametrize("conn", ["nycmesh", "ikev2-psk"])
def test_traffic_totals_survive_forced_rekeys(
    conn: str, make_lab: Any, start_exporter: Any
) -> None:
    lab = make_lab([conn])
    client = lab.clients[0]
    rec = Recorder(start(start_exporter, lab))
    before = rec.wait_for(lambda s: streaming(s) and established(s, conn) == 1)
    assert traffic(before, conn) == 0  # ESP carries only the test's pings
    mine = ClientLedger(client.charon)
    # Several rekeys between most scrapes; IKE rekeys (IKEv1: reauthentications) too.
    plan = [["child", "child", "child"], ["ike", "child"], ["child", "ike", "child", "child"]]
    rekeys = {"child": 0, "ike": 0}
    for batch in plan:
        for kind in batch:
            assert client.ping(3) == 3
            mine.read()  # just before the rekey: the old CHILD SA's last count
            rekey(client, kind)
            # After an IKEv1 reauthentication the virtual IP's route comes back a moment
            # later ("Network is unreachable": nothing sent, so nothing to count).
            wait_until(lambda: tunnel_works(client), 20, f"tunnel after {kind} rekey")
            mine.read()
            rekeys[kind] += 1
        rec.scrape()
    assert client.ping(4) == 4
    sent = mine.read()
    assert sent.packets_out >= 3 * sum(len(b) for b in plan) + 4
    s = wait_matching(rec, conn, lambda: sent)
    assert child(s, conn, "down") == 0 and ike(s, conn, "down") == 0, s.text
    assert child(s, conn, "rekey") == rekeys["child"], s.text
    assert child(s, conn, "up") == 0, s.text
    if conn == "ikev2-psk":
        assert ike(s, conn, "rekey") == rekeys["ike"], s.text
        assert ike(s, conn, "up") == 0, s.text
    else:
        # IKEv1 has no IKE rekey: swanctl reauthenticates, make-before-break. The ledger
        # counts the new IKE SA as an up; the old one lingers (empty) and counts as a rekey
        # only when charon deletes it, later.
        assert ike(s, conn, "up") == rekeys["ike"], s.text
        assert ike(s, conn, "rekey") <= rekeys["ike"], s.text
    # The exactness holds on: the ended SAs' counts are not counted twice later.
    for later in rec.hold(DROP_LATENCY + 1):
        assert matches(later, conn, sent), totals_text(later, conn, sent)
        assert child(later, conn, "down") == 0 and ike(later, conn, "down") == 0
    rec.assert_monotonic()


@pytest.mark.parametrize("conn", ["nycmesh", "ikev2-psk"])
def test_traffic_totals_survive_charons_own_timed_rekeys(
    conn: str, make_lab: Any, start_exporter: Any
) -> None:
    """A client whose CHILD SA charon rekeys every 4 s by itself (and, for IKEv2, its IKE SA
    every 7 s): the client's own events tell what each ended CHILD SA carried.

    Pings go out only in the middle of a CHILD SA's life (just after a rekey): a packet sent
    while charon swaps SAs would land on the old SA after the client's event reported its
    counts, and the client side of the comparison would miss it."""
    lab = make_lab([conn], connect=False)
    client = lab.clients[0]
    ike_rekey = 7 if conn == "ikev2-psk" else None
    client.charon.load(short_rekey_client_conf(client.shape, child_rekey=4, ike_rekey=ike_rekey))
    rec = Recorder(start(start_exporter, lab))
    rec.wait_for(streaming)
    mine = ClientLedger(client.charon, listen=True)
    try:
        client.connect()
        wait_until(lambda: mine.events >= 1, 10, "the client's child-updown event")
        wanted_rekeys = 3
        for _ in range(wanted_rekeys):
            seen = mine.events
            wait_until(lambda: mine.events > seen, 20, "a timed CHILD SA rekey")  # noqa: B023
            time.sleep(0.3)  # the old SA is deleted by now
            assert client.ping(2, timeout=0.5) == 2
            mine.read()
            rec.scrape()
        s = wait_matching(rec, conn, mine.read)
        sent = mine.read()
        assert sent.packets_out == 2 * wanted_rekeys
        assert child(s, conn, "rekey") >= wanted_rekeys, s.text
        assert child(s, conn, "down") == 0 and ike(s, conn, "down") == 0, s.text
        assert child(s, conn, "up") == 1
    finally:
        mine.close()
    rec.assert_monotonic()


# -- charon restart ------------------------------------------------------------------------------


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_server_restart_mid_run(hard: bool, make_lab: Any, start_exporter: Any) -> None:
    lab = make_lab(["nycmesh", "ikev2-psk"])
    conns = ("nycmesh", "ikev2-psk")
    rec = Recorder(start(start_exporter, lab))
    rec.wait_for(lambda s: streaming(s) and all(established(s, c) == 1 for c in conns))
    old: dict[str, SaCounts] = {}
    for client in lab.clients:
        assert client.ping(3) == 3
        old[client.conn] = ClientLedger(client.charon).read()
    before = rec.wait_for(lambda s: all(matches(s, c, old[c]) for c in conns))
    reconnects = before.required_value("strongswan_event_stream_reconnects_total")

    if hard:
        lab.server.kill()
    else:
        lab.server.stop()
    rec.wait_for(
        lambda s: s.value("strongswan_event_stream_up") == 0 and s.value("strongswan_up") == 0,
        timeout=15,
    )
    lab.server.restart(hard=hard)  # nothing left to stop: starts and loads the config again
    s = rec.wait_for(
        lambda s: (
            streaming(s)
            and s.required_value("strongswan_event_stream_reconnects_total") >= reconnects + 1
            and all(ike(s, c, "down") == 1 and child(s, c, "down") == 1 for c in conns)
        ),
        timeout=30,
    )
    for later in rec.hold(DROP_LATENCY + 1):
        for c in conns:
            assert ike(later, c, "down") == 1 and child(later, c, "down") == 1, later.text
            assert matches(later, c, old[c]), totals_text(later, c, old[c])  # nothing lost

    # The clients come back (their stale SAs would take minutes to notice on their own).
    new: dict[str, ClientLedger] = {}
    for client in lab.clients:
        client.charon.restart(hard=True)
        client.connect()
        assert client.ping(2) == 2
        new[client.conn] = ClientLedger(client.charon)

    def merged(c: str) -> SaCounts:
        now = new[c].read()
        return SaCounts(
            old[c].bytes_in + now.bytes_in,
            old[c].bytes_out + now.bytes_out,
            old[c].packets_in + now.packets_in,
            old[c].packets_out + now.packets_out,
        )

    s = rec.wait_for(
        lambda s: all(
            ike(s, c, "up") == 1 and child(s, c, "up") == 1 and matches(s, c, merged(c))
            for c in conns
        ),
        timeout=30,
    )
    for c in conns:
        assert ike(s, c, "down") == 1 and child(s, c, "down") == 1
        assert established(s, c) == 1
    rec.assert_monotonic()


# -- users ---------------------------------------------------------------------------------------


def test_same_user_twice_sums_both_tunnels(make_lab: Any, start_exporter: Any) -> None:
    """Two nycmesh clients share the XAuth user: its totals are the sum of both, and stay
    so when one of them reconnects."""
    lab = make_lab(["nycmesh", "nycmesh"])
    rec = Recorder(start(start_exporter, lab))
    rec.wait_for(lambda s: streaming(s) and established(s, "nycmesh") == 2)
    a, b = lab.clients
    mine = {id(a): ClientLedger(a.charon), id(b): ClientLedger(b.charon)}
    assert a.ping(3) == 3
    assert b.ping(5) == 5

    def both() -> SaCounts:
        x, y = mine[id(a)].read(), mine[id(b)].read()
        return SaCounts(
            x.bytes_in + y.bytes_in,
            x.bytes_out + y.bytes_out,
            x.packets_in + y.packets_in,
            x.packets_out + y.packets_out,
        )

    def user_matches(s: Any, sent: SaCounts) -> bool:
        return (
            user_traffic(s, "nycmesh", XAUTH_USER, "bytes", "in") == sent.bytes_out
            and user_traffic(s, "nycmesh", XAUTH_USER, "packets", "in") == sent.packets_out
            and user_traffic(s, "nycmesh", XAUTH_USER, "bytes", "out") == sent.bytes_in
            and user_traffic(s, "nycmesh", XAUTH_USER, "packets", "out") == sent.packets_in
        )

    sent = both()
    assert mine[id(a)].read().bytes_out and mine[id(b)].read().bytes_out
    s = rec.wait_for(lambda s: user_matches(s, sent), timeout=20)
    assert s.value("strongswan_user_sessions", conn="nycmesh", user=XAUTH_USER) == 2

    # One of them leaves and comes back: its ended tunnel still counts for the user.
    mine[id(a)].read()
    a.disconnect()
    a.connect()
    assert a.ping(2) == 2
    sent = both()
    s = rec.wait_for(lambda s: user_matches(s, sent), timeout=20)
    assert matches(s, "nycmesh", sent), totals_text(s, "nycmesh", sent)
    rec.assert_monotonic()
