"""The login ledger's rules (exporter/logins/ledger.py), one test per rule, plus a
property test: random sessions, refreshes, ends with and without records, late records,
interfaces outliving ip-down; no counter ever goes backwards, and once every session has
ended with its record each login's totals are exactly the sum of its sessions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.collectors.join import join_sessions
from exporter.kernel.model import LinkStats, PppHookRecord, PppInterface
from exporter.logins.ledger import LoginLedger
from exporter.logins.model import EndedRecord, LoginsView, LoginTotals
from exporter.logins.options import LoginOptions

START = 1_800_000_000.0
COUNTERS = ("receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets")


@dataclass
class Link:
    """One PPP session as the kernel and the hooks show it."""

    name: str
    index: int
    login: str
    pid: int
    up: float
    rx: int = 0
    tx: int = 0
    rxp: int = 0
    txp: int = 0
    hooked: bool = True

    def iface(self) -> PppInterface:
        stats = LinkStats(
            rx_bytes=self.rx, tx_bytes=self.tx, rx_packets=self.rxp, tx_packets=self.txp
        )
        return PppInterface(self.name, self.index, "10.0.0.1", "10.0.0.2", self.up, stats)

    def hook(self) -> PppHookRecord:
        return PppHookRecord(
            self.name, self.index, self.login, "10.0.0.1", "10.0.0.2", "", self.pid, self.up
        )

    def send(self, rx: int, tx: int = 0) -> None:
        self.rx += rx
        self.tx += tx
        self.rxp += 1 if rx else 0
        self.txp += 1 if tx else 0

    def record(self, down: float, name: str = "", **changes: object) -> EndedRecord:
        rec = EndedRecord(
            name=name or f"{int(down)}.{self.name}.{self.pid}",
            interface=self.name,
            ifindex=self.index,
            login=self.login,
            inner_address="10.0.0.2",
            ipparam="198.51.100.7",
            pppd_pid=self.pid,
            started_at=self.up,
            ended_at=down,
            connect_seconds=down - self.up,
            receive_bytes=self.rx,
            transmit_bytes=self.tx,
            receive_packets=self.rxp,
            transmit_packets=self.txp,
        )
        return replace(rec, **changes)  # type: ignore[arg-type]


@dataclass
class World:
    links: list[Link] = field(default_factory=list)
    records: list[EndedRecord] = field(default_factory=list)
    #: ended records readable (None: the directory could not be read this time)
    readable: bool = True

    def refresh(self, ledger: LoginLedger, now: float) -> LoginsView:
        interfaces = [link.iface() for link in self.links]
        hooks = {link.name: link.hook() for link in self.links if link.hooked}
        sessions = join_sessions(interfaces, None, hooks, None)
        ended = list(self.records) if self.readable else None
        return ledger.update(sessions, interfaces, hooks, ended, now=now)

    def end(self, link: Link, down: float, record: bool = True, linger: bool = False) -> None:
        if record:
            self.records.append(link.record(down))
        if not linger:
            self.links.remove(link)


_made: list[LoginLedger] = []


def ledger(**options: object) -> LoginLedger:
    made = LoginLedger(LoginOptions(**options), clock=lambda: START, started_at=START)  # type: ignore[arg-type]
    _made.append(made)
    return made


@pytest.fixture(autouse=True)
def _never_held_back() -> Iterator[None]:
    """Totals never go down by the rules themselves, not by the ledger's safety net."""
    _made.clear()
    yield
    assert [led.held_back for led in _made] == [0] * len(_made)


def totals(view: LoginsView) -> dict[str, LoginTotals]:
    return {t.login: t for t in view.totals}


def traffic(t: LoginTotals) -> tuple[int, int, int, int]:
    return (t.receive_bytes, t.transmit_bytes, t.receive_packets, t.transmit_packets)


# -- exactness ------------------------------------------------------------------------------


def test_totals_are_exact_across_reconnects() -> None:
    led, world = ledger(), World()
    a1 = Link("ppp0", 10, "alice", 100, START + 1)
    world.links.append(a1)
    a1.send(1000, 200)
    world.refresh(led, START + 10)
    a1.send(500, 50)  # after the last refresh: only the record knows it
    world.end(a1, START + 20)
    a2 = Link("ppp0", 11, "alice", 101, START + 21)  # the same name again, a new interface
    world.links.append(a2)
    a2.send(70, 7)
    view = world.refresh(led, START + 30)
    alice = totals(view)["alice"]
    assert traffic(alice) == (1570, 257, 3, 3)
    assert (alice.sessions, alice.logins, alice.logouts) == (1, 2, 1)
    assert alice.connected_seconds == 19 + 9  # CONNECT_TIME + the live one since up
    assert (alice.last_login, alice.last_logout) == (START + 21, START + 20)


def test_a_session_that_started_and_ended_between_two_refreshes_counts_whole() -> None:
    led, world = ledger(), World()
    world.refresh(led, START + 10)
    b = Link("ppp3", 20, "bob", 300, START + 11)
    b.send(4000, 3000)
    world.records.append(b.record(START + 15))
    view = world.refresh(led, START + 20)
    bob = totals(view)["bob"]
    assert traffic(bob) == (4000, 3000, 1, 1)
    assert (bob.sessions, bob.logins, bob.logouts, bob.connected_seconds) == (0, 1, 1, 4)
    assert [e.how for e in view.ended] == ["hook"]
    # The record stays in the directory: counted once, not at every refresh.
    assert totals(world.refresh(led, START + 30))["bob"] == bob


def test_an_ended_record_of_a_session_seen_live_replaces_its_live_counts() -> None:
    led, world = ledger(), World()
    a = Link("ppp0", 10, "alice", 100, START + 1)
    world.links.append(a)
    a.send(1000, 100)
    world.refresh(led, START + 5)
    a.send(10, 1)
    # ip-down runs before pppd takes the interface down: both are seen at once.
    world.end(a, START + 8, linger=True)
    view = world.refresh(led, START + 9)
    assert traffic(totals(view)["alice"]) == (1010, 101, 2, 2)
    assert totals(view)["alice"].logouts == 1
    assert view.live == ()
    a.send(5, 5)  # the lingering interface is the same session, ended: not counted again
    view = world.refresh(led, START + 10)
    world.links.remove(a)
    view = world.refresh(led, START + 20)
    alice = totals(view)["alice"]
    assert traffic(alice) == (1010, 101, 2, 2)
    assert (alice.logins, alice.logouts) == (1, 1)


def test_the_larger_of_record_and_live_count_is_banked() -> None:
    """pppd's counts may be smaller than the interface's (e.g. pppd 2.4's 32-bit counts
    wrapped): the last live count is kept, per counter."""
    led, world = ledger(), World()
    a = Link("ppp0", 10, "alice", 100, START + 1)
    world.links.append(a)
    a.send(5_000_000_000, 10)
    world.refresh(led, START + 5)
    world.links.remove(a)
    world.records.append(
        a.record(START + 6, receive_bytes=5_000_000_000 % 2**32, transmit_bytes=20)
    )
    alice = totals(world.refresh(led, START + 7))["alice"]
    assert (alice.receive_bytes, alice.transmit_bytes) == (5_000_000_000, 20)


def test_two_clients_of_one_login_add_up() -> None:
    led, world = ledger(), World()
    one = Link("ppp0", 10, "alice", 100, START + 1, rx=100, tx=10)
    two = Link("ppp1", 11, "alice", 101, START + 2, rx=200, tx=20)
    world.links += [one, two]
    view = world.refresh(led, START + 5)
    assert traffic(totals(view)["alice"])[:2] == (300, 30)
    assert totals(view)["alice"].sessions == 2
    assert [s.interface for s in view.live] == ["ppp0", "ppp1"]


# -- vanished interfaces ---------------------------------------------------------------------


def test_a_vanished_interface_waits_for_its_record_then_counts_its_last_seen() -> None:
    led, world = ledger(), World()
    a = Link("ppp0", 10, "alice", 100, START + 1)
    world.links.append(a)
    a.send(700, 70)
    world.refresh(led, START + 10)
    world.end(a, START + 11, record=False)  # pppd SIGKILLed: no ip-down
    view = world.refresh(led, START + 30)  # within the grace: still counted, not listed
    alice = totals(view)["alice"]
    assert traffic(alice) == (700, 70, 1, 1) and alice.sessions == 0 and alice.logouts == 0
    assert view.live == ()
    view = world.refresh(led, START + 60)
    alice = totals(view)["alice"]
    assert traffic(alice) == (700, 70, 1, 1) and alice.logouts == 1
    assert alice.connected_seconds == 9  # up to when it was last seen
    assert [(e.how, e.receive_bytes) for e in view.ended] == [("vanished", 700)]


def test_a_record_within_the_grace_ends_the_session_from_the_record() -> None:
    led, world = ledger(), World()
    a = Link("ppp0", 10, "alice", 100, START + 1)
    world.links.append(a)
    a.send(700, 70)
    world.refresh(led, START + 10)
    world.links.remove(a)
    world.refresh(led, START + 11)
    a.send(300, 30)
    world.records.append(a.record(START + 11))
    view = world.refresh(led, START + 13)
    assert traffic(totals(view)["alice"]) == (1000, 100, 2, 2)
    assert [e.how for e in view.ended] == ["hook"]


def test_a_late_record_tops_up_a_vanished_session_without_a_second_logout() -> None:
    led, world = ledger(), World()
    a = Link("ppp0", 10, "alice", 100, START + 1)
    world.links.append(a)
    a.send(700, 70)
    world.refresh(led, START + 10)
    world.links.remove(a)
    world.refresh(led, START + 11)
    view = world.refresh(led, START + 45)  # banked as vanished
    assert [e.how for e in view.ended] == ["vanished"]
    assert totals(view)["alice"].connected_seconds == 9
    a.send(300, 30)
    world.records.append(a.record(START + 14))
    view = world.refresh(led, START + 46)
    alice = totals(view)["alice"]
    assert traffic(alice) == (1000, 100, 2, 2)
    assert (alice.logins, alice.logouts, alice.last_logout) == (1, 1, START + 14)
    assert alice.connected_seconds == 13
    assert [(e.how, e.receive_bytes, e.ended_at) for e in view.ended] == [
        ("hook", 1000, START + 14)
    ]


def test_an_unreadable_record_directory_does_not_recount_records() -> None:
    led, world = ledger(), World()
    b = Link("ppp3", 20, "bob", 300, START + 1, rx=10)
    world.records.append(b.record(START + 2))
    world.refresh(led, START + 5)
    world.readable = False
    world.refresh(led, START + 6)
    world.readable = True
    assert totals(world.refresh(led, START + 7))["bob"].receive_bytes == 10


# -- restart ---------------------------------------------------------------------------------


def test_after_a_restart_sessions_already_up_count_from_first_sight() -> None:
    led, world = ledger(), World()
    old = Link("ppp0", 10, "alice", 100, START - 3600, rx=9_000, tx=900, rxp=90, txp=9)
    world.links.append(old)
    view = world.refresh(led, START + 5)
    alice = totals(view)["alice"]
    assert traffic(alice) == (0, 0, 0, 0)
    assert (alice.sessions, alice.logins, alice.connected_seconds) == (1, 0, 5)
    assert alice.last_login == START - 3600
    old.send(100, 10)
    world.end(old, START + 9)
    alice = totals(world.refresh(led, START + 10))["alice"]
    assert traffic(alice) == (100, 10, 1, 1)
    assert (alice.logins, alice.logouts, alice.connected_seconds) == (0, 1, 9)


def test_a_session_up_in_the_exporters_first_second_is_not_a_preexisting_one() -> None:
    """The hook's UP_SINCE is whole seconds (`date +%s`)."""
    led = LoginLedger(LoginOptions(), clock=lambda: START, started_at=START + 0.6)
    _made.append(led)
    world = World([Link("ppp0", 10, "alice", 100, START, rx=10)])
    world.records.append(Link("ppp1", 11, "bob", 101, START, rx=20).record(START + 1))
    view = world.refresh(led, START + 2)
    assert {t.login: (t.logins, t.receive_bytes) for t in view.totals} == {
        "alice": (1, 10),
        "bob": (1, 20),
    }


def test_records_from_before_the_start_are_listed_not_counted() -> None:
    led, world = ledger(), World()
    gone = Link("ppp0", 10, "carol", 100, START - 100, rx=50)
    world.records.append(gone.record(START - 50))
    # Up before the start, ended before the first refresh: its bytes since the start are
    # unknown (no baseline); its logout and connected time since the start count.
    early = Link("ppp1", 11, "dave", 101, START - 100, rx=80)
    world.records.append(early.record(START + 3))
    view = world.refresh(led, START + 5)
    assert "carol" not in totals(view)
    dave = totals(view)["dave"]
    assert traffic(dave) == (0, 0, 0, 0)
    assert (dave.logins, dave.logouts, dave.connected_seconds) == (0, 1, 3)
    assert [e.login for e in view.ended] == ["dave", "carol"]


def test_an_interface_without_any_start_time_at_first_refresh_is_a_preexisting_one() -> None:
    led, world = ledger(), World()
    old = Link("ppp0", 10, "alice", 100, START - 10, rx=500, hooked=False)
    world.links.append(old)
    iface = replace(old.iface(), up_since=None)
    led.update(join_sessions([iface], None, {}, None), [iface], {}, [], now=START + 1)
    later = replace(iface, name="ppp1", index=11, stats=LinkStats(rx_bytes=7))
    led.update([], [iface, later], {}, [], now=START + 2)
    live = {s.key[0]: s for s in led._live.values()}
    assert live["ppp0"].preexisting and not live["ppp1"].preexisting


# -- logins ----------------------------------------------------------------------------------


def test_without_a_hook_record_the_ike_user_is_the_login_after_the_grace() -> None:
    led, world = ledger(), World()
    a = Link("ppp0", 10, "", 100, START + 1, rx=10, hooked=False)
    world.links.append(a)
    iface = a.iface()
    session = replace(
        join_sessions([iface], None, {}, None)[0], user="CN=alice", ike_user="CN=alice"
    )
    view = led.update([session], [iface], {}, [], now=START + 2)
    assert view.totals == () and view.without_login == 1
    view = led.update([session], [iface], {}, [], now=START + 8)
    assert totals(view)["CN=alice"].receive_bytes == 10 and view.without_login == 0


def test_a_session_without_a_login_is_only_counted_as_such() -> None:
    led, world = ledger(), World()
    a = Link("ppp0", 10, "", 100, START + 1, rx=10)
    world.links.append(a)
    view = world.refresh(led, START + 20)
    assert view.totals == () and view.without_login == 1
    assert [s.login for s in view.live] == [""]


def test_ipcp_renegotiated_on_the_same_interface_is_a_new_session() -> None:
    """pppd runs ip-down and ip-up again on the same interface when IPCP renegotiates."""
    led, world = ledger(), World()
    a = Link("ppp0", 10, "alice", 100, START + 1, rx=100)
    world.links.append(a)
    world.refresh(led, START + 5)
    world.end(a, START + 6, linger=True)
    world.refresh(led, START + 7)
    a.up = START + 8
    a.send(50)
    view = world.refresh(led, START + 9)
    alice = totals(view)["alice"]
    assert (alice.receive_bytes, alice.sessions, alice.logins, alice.logouts) == (150, 1, 2, 1)


def test_a_stale_up_record_on_a_reused_name_is_not_this_sessions_login() -> None:
    led = ledger()
    iface = Link("ppp0", 12, "bob", 200, START + 1, rx=10).iface()
    stale = Link("ppp0", 10, "alice", 100, START - 9).hook()
    view = led.update([], [iface], {"ppp0": stale}, [], now=START + 2)
    assert view.totals == () and view.without_login == 1


def test_an_older_record_without_index_does_not_end_a_session_on_the_same_name() -> None:
    """No up record (hooks installed mid-session, or none at ip-up): the record names
    only the interface; a session first seen long after that record ended is not it."""
    led = ledger()
    old = Link("ppp0", 10, "bob", 5, START + 1, rx=40).record(START + 10, ifindex=None)
    now_up = replace(Link("ppp0", 12, "", 6, START + 50, rx=7).iface(), up_since=None)
    view = led.update([], [now_up], {}, [], now=START + 100)
    view = led.update([], [now_up], {}, [old], now=START + 101)
    assert [s.interface for s in view.live] == ["ppp0"] and view.without_login == 1
    assert totals(view)["bob"].receive_bytes == 40


# -- bounds ----------------------------------------------------------------------------------


def test_a_login_without_a_session_is_forgotten_after_the_idle_expiry() -> None:
    led, world = ledger(idle_expiry=100.0), World()
    a = Link("ppp0", 10, "alice", 100, START + 1, rx=10)
    world.links.append(a)
    world.refresh(led, START + 5)
    world.end(a, START + 10)
    assert "alice" in totals(world.refresh(led, START + 50))
    view = world.refresh(led, START + 111)
    assert "alice" not in totals(view)
    assert dict(view.forgotten) == {"idle": 1, "limit": 0}
    b = Link("ppp0", 11, "alice", 101, START + 200, rx=3)
    world.links.append(b)
    alice = totals(world.refresh(led, START + 201))["alice"]
    assert (alice.receive_bytes, alice.logins, alice.created) == (3, 1, START + 201)


def test_a_connected_login_is_never_idle() -> None:
    led, world = ledger(idle_expiry=100.0), World()
    world.links.append(Link("ppp0", 10, "alice", 100, START + 1))
    world.refresh(led, START + 5)
    assert "alice" in totals(world.refresh(led, START + 1000))


def test_beyond_max_users_the_longest_idle_login_goes_and_connected_ones_stay() -> None:
    led, world = ledger(max_users=2), World()
    for i, (login, down) in enumerate((("alice", 10), ("bob", 20))):
        link = Link(f"ppp{i}", 10 + i, login, 100 + i, START + 1)
        world.links.append(link)
        world.refresh(led, START + 2 + i)
        world.end(link, START + down)
        world.refresh(led, START + down + 1)
    carol = Link("ppp2", 12, "carol", 102, START + 30)
    world.links.append(carol)
    view = world.refresh(led, START + 31)
    assert sorted(totals(view)) == ["bob", "carol"]
    assert dict(view.forgotten)["limit"] == 1
    dave = Link("ppp3", 13, "dave", 103, START + 40)
    erin = Link("ppp4", 14, "erin", 104, START + 40)
    world.links += [dave, erin]
    view = world.refresh(led, START + 41)
    # bob goes for one of them; then all tracked logins are connected: the other waits.
    assert len(totals(view)) == 2 and "carol" in totals(view)
    assert dict(view.forgotten)["limit"] == 2


def test_the_history_keeps_the_newest_n_newest_first() -> None:
    led, world = ledger(history=3), World()
    for i in range(5):
        link = Link("ppp0", 10 + i, f"u{i}", 100 + i, START + 10 * i + 1, rx=i)
        world.records.append(link.record(START + 10 * i + 5))
    view = world.refresh(led, START + 100)
    assert [e.login for e in view.ended] == ["u4", "u3", "u2"]
    assert ledger(history=0).update([], [], {}, world.records, now=START + 100).ended == ()


def test_a_reload_changes_the_bounds_and_cuts_the_history() -> None:
    led, world = ledger(history=5), World()
    for i in range(5):
        link = Link("ppp0", 10 + i, f"u{i}", 100 + i, START + 10 * i + 1)
        world.records.append(link.record(START + 10 * i + 5))
    world.refresh(led, START + 100)
    led.reconfigure(LoginOptions(history=2, required=("u1",)))
    view = world.refresh(led, START + 101)
    assert [e.login for e in view.ended] == ["u4", "u3"]
    assert view.required == (("u1", False),)


def test_required_logins_by_name_and_pattern() -> None:
    led, world = ledger(required=("peer-*", "sn1", "sn2")), World()
    world.links += [
        Link("ppp0", 10, "peer-a", 100, START + 1),
        Link("ppp1", 11, "sn1", 101, START + 1),
        Link("ppp2", 12, "alice", 102, START + 1),
    ]
    peer_b = Link("ppp3", 13, "peer-b", 103, START + 1)
    world.records.append(peer_b.record(START + 3))
    view = world.refresh(led, START + 5)
    assert view.required == (("peer-a", True), ("peer-b", False), ("sn1", True), ("sn2", False))


# -- rates -----------------------------------------------------------------------------------


def test_rates_use_the_last_two_readings_at_least_a_second_apart() -> None:
    led, world = ledger(), World()
    a = Link("ppp0", 10, "alice", 100, START + 1)
    world.links.append(a)
    view = world.refresh(led, START + 10)
    assert (view.live[0].receive_rate, view.live[0].transmit_rate) == (None, None)
    a.send(1000, 500)
    view = world.refresh(led, START + 20)
    assert (view.live[0].receive_rate, view.live[0].transmit_rate) == (100.0, 50.0)
    a.send(100, 0)
    view = world.refresh(led, START + 20.5)  # too close to the last: against the one before
    assert view.live[0].receive_rate == 1100 / 10.5
    assert view.live[0].receive_bytes == 1100


# -- never backwards: a property -------------------------------------------------------------

LOGINS = ("alice", "bob", "carol")

step = st.one_of(
    st.tuples(st.just("up"), st.sampled_from(LOGINS)),
    st.tuples(st.just("send"), st.integers(0, 9), st.integers(0, 5000), st.integers(0, 5000)),
    st.tuples(st.just("end"), st.integers(0, 9), st.sampled_from(("record", "kill", "linger"))),
    st.tuples(st.just("refresh"), st.floats(0.1, 30.0)),
    st.tuples(st.just("unreadable"), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60))
def test_no_counter_goes_backwards_and_ended_sessions_add_up_exactly(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    led, world = ledger(), World()
    now = START + 1
    index = 10
    expected: dict[str, list[int]] = {}
    lingering: list[Link] = []
    last: dict[str, LoginTotals] = {}

    def check(view: LoginsView) -> None:
        for t in view.totals:
            before = last.get(t.login)
            if before is not None:
                for name in (*COUNTERS, "connected_seconds", "logins", "logouts"):
                    assert getattr(t, name) >= getattr(before, name), (t.login, name)
            last[t.login] = t

    for op, *args in steps:
        now += 0.5
        if op == "up":
            index += 1
            # pppd takes the lowest free unit: names are reused, interface indexes not.
            taken = {link.name for link in world.links}
            name = next(f"ppp{n}" for n in range(99) if f"ppp{n}" not in taken)
            world.links.append(Link(name, index, args[0], index, now))
        elif op == "send" and world.links:
            link = world.links[args[0] % len(world.links)]
            if link not in lingering:
                link.send(args[1], args[2])
        elif op == "end" and world.links:
            link = world.links[args[0] % len(world.links)]
            if link in lingering:
                continue
            how = args[1]
            if how == "kill":
                # The ledger can only know what it saw: count the last refresh's bytes.
                seen = next(
                    (s for s in led._live.values() if s.key == (link.name, link.index)), None
                )
                world.links.remove(link)
                if seen is not None:
                    final = [seen.last.receive_bytes, seen.last.transmit_bytes]
                else:
                    final = [0, 0]
            else:
                world.end(link, now, linger=how == "linger")
                if how == "linger":
                    lingering.append(link)
                final = [link.rx, link.tx]
            sums = expected.setdefault(link.login, [0, 0])
            sums[0] += final[0]
            sums[1] += final[1]
        elif op == "refresh":
            now += args[0]
            check(world.refresh(led, now))
        elif op == "unreadable":
            world.readable = not args[0]
    # Everything ends with a record; the ledger settles after the grace.
    world.readable = True
    for link in list(world.links):
        if link not in lingering:
            expected.setdefault(link.login, [0, 0])
            expected[link.login][0] += link.rx
            expected[link.login][1] += link.tx
            world.end(link, now)
        else:
            world.links.remove(link)
    now += 1
    check(world.refresh(led, now))
    now += 31
    view = world.refresh(led, now)
    check(view)
    got = {t.login: [t.receive_bytes, t.transmit_bytes] for t in view.totals}
    assert got == {login: sums for login, sums in expected.items() if login in got}
    # A login missing had only sessions killed before any refresh saw them.
    assert all(sums == [0, 0] for login, sums in expected.items() if login not in got)
    assert all(t.sessions == 0 and t.logins == t.logouts for t in view.totals)
    assert led.held_back == 0  # the safety net never had to catch a count going down
