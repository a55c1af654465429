"""The ledger on events and listings recorded from a real charon (tests/fixtures/vici-events,
made by tests/fixtures/record_events.py in the netns lab)."""

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.strongswan.charon_events import CharonEvent, decode_event
from exporter.strongswan.ledger import SaLedger, Traffic
from exporter.strongswan.parse import parse_ike_sas
from tests.hostile.fake_charon import flood_events
from tests.recordings import RECORDED_NOW, load_answers

EVENTS = Path(__file__).parent.parent / "fixtures" / "vici-events"
VICI = Path(__file__).parent.parent / "fixtures" / "vici"
GRACE = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_ledger(clock: Clock) -> SaLedger:
    return SaLedger(reauth_grace=GRACE, clock=clock, wall_clock=lambda: RECORDED_NOW)


def decoded(name: str, message: dict[str, Any]) -> CharonEvent:
    """An event as the stream hands it on."""
    event = decode_event(name, message, RECORDED_NOW)
    assert event is not None, name
    return event


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


def replay(name: str, clock: Clock, ledger: SaLedger | None = None) -> SaLedger:
    data = recorded(name)
    ledger = ledger or new_ledger(clock)
    ledger.reconcile(parse_ike_sas(data["list-sas-before"], RECORDED_NOW), clock())
    replay_events(name, clock, ledger)
    return ledger


def replay_events(name: str, clock: Clock, ledger: SaLedger) -> None:
    for event in recorded(name)["events"]:
        clock.now += 0.05
        ledger.apply(decoded(event["event"], event["message"]))


def settle(ledger: SaLedger, clock: Clock) -> None:
    clock.now += GRACE + 1
    ledger.tick()


def nonzero(counts: dict[Any, int]) -> dict[Any, int]:
    return {k: v for k, v in counts.items() if v}


def test_ups_are_counted_once_per_sa() -> None:
    clock = Clock()
    ledger = replay("up", clock)
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {("ikev2-psk", "up"): 1, ("nycmesh", "up"): 1}
    assert nonzero(ledger.child_events) == {
        ("ikev2-psk", "ikev2-psk", "up"): 1,
        ("nycmesh", "nycmesh", "up"): 1,
    }
    assert set(ledger.last_change) == {"ikev2-psk", "nycmesh"}


def test_baseline_listing_counts_nothing() -> None:
    clock = Clock()
    ledger = new_ledger(clock)
    answers = load_answers(VICI / "remote-access")
    ledger.reconcile(parse_ike_sas(answers.list_sas, RECORDED_NOW), clock())
    assert nonzero(ledger.ike_events) == {}
    assert len(ledger.ike) == 4
    assert len(ledger.children) == 4


def test_ikev2_child_and_ike_rekey_are_rekeys_and_keep_the_bytes() -> None:
    clock = Clock()
    data = recorded("rekey-ikev2")
    before = sum(
        int(child["bytes-in"])
        for event in data["list-sas-before"]
        for sa in event.values()
        for child in sa["child-sas"].values()
        if next(iter(event)) == "ikev2-psk"
    )
    old_final = next(
        int(pair["old"]["bytes-in"])
        for e in data["events"]
        if e["event"] == "child-rekey"
        for pair in e["message"]["ikev2-psk"]["child-sas"].values()
    )
    ledger = replay("rekey-ikev2", clock)
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {("ikev2-psk", "rekey"): 1}
    assert nonzero(ledger.child_events) == {("ikev2-psk", "ikev2-psk", "rekey"): 1}
    assert old_final >= before
    assert ledger.traffic_totals()[("ikev2-psk", "ikev2-psk")].bytes_in == old_final
    # The new CHILD SA is tracked under the new IKE SA, which replaced the old one.
    assert len(ledger.ike) == 2 and len(ledger.children) == 2


def test_ikev1_child_rekey() -> None:
    clock = Clock()
    ledger = replay("rekey-child-ikev1", clock)
    settle(ledger, clock)
    assert nonzero(ledger.child_events) == {("nycmesh", "nycmesh", "rekey"): 1}
    assert nonzero(ledger.ike_events) == {}


@pytest.mark.parametrize("conn", ["ikev1", "ikev2"])
def test_terminate_is_one_drop_counted_after_the_grace_time(conn: str) -> None:
    """IKEv2: once the grace time is over; IKEv1 (no break-before-make reauthentication to
    wait for): at once."""
    name = {"ikev1": "nycmesh", "ikev2": "ikev2-psk"}[conn]
    clock = Clock()
    ledger = replay(f"down-terminate-{conn}", clock)
    assert ledger.ike_events.get((name, "down"), 0) == (conn == "ikev1")
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {(name, "down"): 1}
    assert nonzero(ledger.child_events) == {(name, name, "down"): 1}
    assert (name, name) in ledger.traffic_totals()
    assert all(sa.conn != name for sa in ledger.ike.values())
    assert all(child.conn != name for child in ledger.children.values())


def test_ikev2_reauthentication_is_a_rekey_not_a_drop() -> None:
    """Break-before-make: down of #1, then up of #2 from the same peer; then a terminate."""
    clock = Clock()
    ledger = replay("reauth-then-terminate-ikev2-psk", clock)
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {("ikev2-psk", "rekey"): 1, ("ikev2-psk", "down"): 1}
    assert nonzero(ledger.child_events) == {
        ("ikev2-psk", "ikev2-psk", "rekey"): 1,
        ("ikev2-psk", "ikev2-psk", "down"): 1,
    }


def test_ikev1_reauthentication_is_a_rekey_not_a_drop() -> None:
    """Make-before-break: #2 comes up and adopts the CHILD SA; #1 lingers, then goes."""
    clock = Clock()
    ledger = replay("reauth-then-terminate-nycmesh", clock)
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {
        ("nycmesh", "up"): 1,
        ("nycmesh", "rekey"): 1,
        ("nycmesh", "down"): 1,
    }
    assert nonzero(ledger.child_events) == {("nycmesh", "nycmesh", "down"): 1}


def test_dead_clients_found_by_dpd_are_drops() -> None:
    clock = Clock()
    ledger = replay("dpd-dead-clients", clock)
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {("nycmesh", "down"): 1, ("ikev2-psk", "down"): 1}


def test_events_seen_twice_and_listings_in_between_count_once() -> None:
    """The stream and the listings both report a drop; it is one drop."""
    clock = Clock()
    data = recorded("down-terminate-ikev1")
    ledger = new_ledger(clock)
    sas = parse_ike_sas(data["list-sas-before"], RECORDED_NOW)
    ledger.reconcile(sas, clock())
    for event in data["events"] * 2:
        clock.now += 0.05
        ledger.apply(decoded(event["event"], event["message"]))
    remaining = [sa for sa in sas if sa.conn != "nycmesh"]
    ledger.reconcile(remaining, clock())
    ledger.reconcile(sas, clock() - 100)  # a stale listing taken before the drop
    settle(ledger, clock)
    assert ledger.ike_events[("nycmesh", "down")] == 1
    assert ledger.child_events[("nycmesh", "nycmesh", "down")] == 1


def test_drop_missed_by_the_stream_is_counted_by_the_next_listing() -> None:
    clock = Clock()
    data = recorded("down-terminate-ikev2")
    ledger = new_ledger(clock)
    sas = parse_ike_sas(data["list-sas-before"], RECORDED_NOW)
    ledger.reconcile(sas, clock())
    clock.now += 1
    ledger.reconcile([], clock())
    settle(ledger, clock)
    assert ledger.ike_events[("ikev2-psk", "down")] == 1


def test_charon_restart_counts_every_sa_down_once_and_totals_never_fall() -> None:
    clock = Clock()
    ledger = new_ledger(clock)
    sas = parse_ike_sas(load_answers(VICI / "remote-access").list_sas, RECORDED_NOW)
    ledger.reconcile(sas, clock(), charon_start=1.0)
    totals_before = ledger.traffic_totals()
    clock.now += 1
    # The new charon numbers its SAs from 1 again; the same listing shape comes back.
    ledger.reconcile(sas, clock(), charon_start=100.0)
    settle(ledger, clock)
    assert ledger.ike_events[("nycmesh", "down")] == 3
    assert ledger.ike_events[("nycmesh", "up")] == 3
    assert ledger.ike_events[("ikev2-psk", "down")] == 1
    after = ledger.traffic_totals()
    for key, traffic in totals_before.items():
        assert after[key].bytes_in == 2 * traffic.bytes_in
        assert after[key].packets_out == 2 * traffic.packets_out


def test_rekeyed_many_times_between_scrapes_keeps_every_byte() -> None:
    clock = Clock()
    ledger = new_ledger(clock)
    data = recorded("rekey-child-ikev1")
    sas = parse_ike_sas(data["list-sas-before"], RECORDED_NOW)
    ledger.reconcile(sas, clock())
    rekey = data["events"][0]["message"]
    pair = next(iter(rekey["nycmesh"]["child-sas"].values()))
    first = pair["old"]["uniqueid"]
    ids = [first, *(str(100 + i) for i in range(5))]  # unused uniqueids for the new ones
    for i in range(5):  # old → new, each new one carrying 100 bytes when it is rekeyed
        baseline_bytes = pair["old"]["bytes-in"]
        old = {**pair["old"], "uniqueid": ids[i], "bytes-in": str(100) if i else baseline_bytes}
        new = {**pair["new"], "uniqueid": ids[i + 1], "bytes-in": "0"}
        message = {"nycmesh": {**rekey["nycmesh"], "child-sas": {"x": {"old": old, "new": new}}}}
        ledger.apply(decoded("child-rekey", message))
    settle(ledger, clock)
    assert ledger.child_events[("nycmesh", "nycmesh", "rekey")] == 5
    baseline = sum(c.bytes_in for sa in sas if sa.conn == "nycmesh" for c in sa.children)
    assert ledger.traffic_totals()[("nycmesh", "nycmesh")].bytes_in == baseline + 400


def test_same_user_twice_sums_their_traffic_and_idle_users_are_forgotten() -> None:
    clock = Clock()
    ledger = SaLedger(reauth_grace=GRACE, user_idle_seconds=60, clock=clock)
    sas = parse_ike_sas(load_answers(VICI / "remote-access").list_sas, RECORDED_NOW)
    ledger.reconcile(sas, clock())
    nycmesh = [c for sa in sas if sa.user == "nycmesh" for c in sa.children]
    assert len(nycmesh) == 3
    users = ledger.user_totals()
    assert users[("nycmesh", "nycmesh")].bytes_in == sum(c.bytes_in for c in nycmesh)
    clock.now += 1
    ledger.reconcile([], clock())
    settle(ledger, clock)
    assert ("nycmesh", "nycmesh") in ledger.user_totals()  # ended traffic still counts
    clock.now += 61
    ledger.tick()
    assert ledger.user_totals() == {}
    assert ledger.traffic_totals()[("nycmesh", "nycmesh")] != Traffic()


def test_start_time_wobble_is_not_a_restart() -> None:
    """charon's `stats` start time moves by a second between answers (seen on 5.9.8)."""
    clock = Clock()
    ledger = new_ledger(clock)
    sas = parse_ike_sas(load_answers(VICI / "remote-access").list_sas, RECORDED_NOW)
    for start in (1000.0, 999.0, 1000.0, 1001.0):
        clock.now += 1
        ledger.reconcile(sas, clock(), charon_start=start)
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {}


def test_a_restart_within_the_start_time_wobble_is_told_by_reused_uniqueids() -> None:
    """charon restarted a second after its start (a crash loop, a quick `systemctl
    restart`): `stats` cannot tell, but its new SAs reuse the old SAs' uniqueids. Seen in
    the netns lab (test_server_restart_mid_run): the new SAs were taken for the old ones'
    tombstones, and neither their ups nor their traffic counted."""
    clock = Clock()
    ledger = replay("up", clock)  # the up events of charon's SAs 1 and 2
    ledger.reconcile(
        parse_ike_sas(recorded("up")["list-sas-before"], RECORDED_NOW), clock(), 1000.0
    )
    clock.now += 1
    ledger.reconcile([], clock(), charon_start=1001.0)  # the new charon, no SA yet
    settle(ledger, clock)
    ups = dict(nonzero(ledger.ike_events))
    assert ups == {("nycmesh", "up"): 1, ("ikev2-psk", "up"): 1} | {
        ("nycmesh", "down"): 1,
        ("ikev2-psk", "down"): 1,
    }
    # The clients come back: the new charon announces SAs 1 and 2 again.
    replay_events("up", clock, ledger)
    settle(ledger, clock)
    assert ledger.ike_events[("nycmesh", "up")] == 2
    assert ledger.ike_events[("ikev2-psk", "up")] == 2
    assert ledger.ike_events[("nycmesh", "down")] == 1
    assert set(ledger.ike) == {"1", "2"}


def test_a_listing_tells_a_reused_uniqueid_by_when_the_sa_was_established() -> None:
    clock = Clock()
    ledger = new_ledger(clock)  # its wall clock stands at RECORDED_NOW
    sas = parse_ike_sas(load_answers(VICI / "remote-access").list_sas, RECORDED_NOW)
    ledger.reconcile(sas, clock(), charon_start=1000.0)
    before = ledger.traffic_totals()
    clock.now += 1
    ledger.reconcile([], clock(), charon_start=1001.0)  # gone, restart not seen
    settle(ledger, clock)
    # A listing asked before they went still shows them (established long ago): late.
    ledger.reconcile(sas, clock() - 5, charon_start=1000.0)
    assert ledger.ike_events.get(("nycmesh", "up"), 0) == 0
    # The same uniqueids established a minute after they ended: a new charon's SAs.
    later = parse_ike_sas(load_answers(VICI / "remote-access").list_sas, RECORDED_NOW + 60)
    ledger.reconcile(later, clock(), charon_start=1000.0)
    settle(ledger, clock)
    assert ledger.ike_events[("nycmesh", "up")] == 3
    assert ledger.ike_events[("nycmesh", "down")] == 3
    after = ledger.traffic_totals()
    for key, traffic in before.items():
        assert after[key].bytes_in == 2 * traffic.bytes_in


# ---- the cap (issue 14, item 6): a flood of new SAs is counted, not kept -------------------

CAP = 100


def capped_ledger(clock: Clock) -> SaLedger:
    ledger = SaLedger(reauth_grace=GRACE, clock=clock, wall_clock=lambda: RECORDED_NOW, max_sas=CAP)
    ledger.reconcile([], clock())
    return ledger


def flood(ledger: SaLedger, clock: Clock, count: int, first: int = 1, up: bool = True) -> None:
    """Up (or down) events of `count` distinct IKEv2 SAs, replayed from a real charon's
    recording with fresh uniqueids, remote hosts and users."""
    for name, message in flood_events(count, first, up):
        clock.now += 0.001
        ledger.apply(decoded(name, message))


def test_a_flood_of_new_sas_is_counted_not_kept() -> None:
    clock = Clock()
    ledger = capped_ledger(clock)
    flood(ledger, clock, 1000)
    settle(ledger, clock)
    assert len(ledger.ike) == CAP and len(ledger.children) == CAP
    assert ledger.untracked == 1000 - CAP
    # Only what is tracked is in the up/down counts.
    assert nonzero(ledger.ike_events) == {("ikev2-psk", "up"): CAP}
    assert nonzero(ledger.child_events) == {("ikev2-psk", "ikev2-psk", "up"): CAP}


def test_downs_of_untracked_sas_count_nothing_and_tracked_ones_make_room() -> None:
    clock = Clock()
    ledger = capped_ledger(clock)
    flood(ledger, clock, CAP + 50)
    flood(ledger, clock, CAP + 50, up=False)
    settle(ledger, clock)
    assert not ledger.ike and not ledger.children
    assert nonzero(ledger.ike_events) == {("ikev2-psk", "up"): CAP, ("ikev2-psk", "down"): CAP}
    flood(ledger, clock, 10, first=10_000)
    assert len(ledger.ike) == 10 and ledger.untracked == 50


def test_what_ended_sas_leave_behind_is_bounded() -> None:
    """Tombstones and per-user totals of SAs that ended: waves of floods, each removed by a
    listing, leave at most the cap's worth (the oldest go first)."""
    clock = Clock()
    ledger = capped_ledger(clock)
    for wave in range(10):
        flood(ledger, clock, CAP, first=1 + wave * CAP)
        clock.now += 1
        ledger.reconcile([], clock())
    assert not ledger.ike and not ledger.children
    assert len(ledger._ended_ike) <= CAP
    assert len(ledger._ended_children) <= 2 * CAP
    assert len(ledger._user_active) <= 2 * CAP
    assert len(ledger._user_ended) <= 2 * CAP
    assert ledger.untracked == 0


def test_a_listing_beyond_the_cap_keeps_the_tracked_sas() -> None:
    clock = Clock()
    ledger = capped_ledger(clock)
    flood(ledger, clock, CAP)
    listing = parse_ike_sas(
        [m for n, m in flood_events(CAP + 30, first=1) if n == "child-updown"], RECORDED_NOW
    )
    ledger.reconcile(reversed(listing), clock() + 1)
    assert set(ledger.ike) == {str(i) for i in range(1, CAP + 1)}
    assert ledger.untracked == 30
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {("ikev2-psk", "up"): CAP}


def test_a_listing_gives_back_the_tables_a_flood_grew() -> None:
    """A dict keeps the table it grew to when entries go; the ledger copies the sparse ones
    at each listing."""
    clock = Clock()
    ledger = capped_ledger(clock)
    ledger.max_sas = 20_000
    flood(ledger, clock, 20_000)
    grown = sys.getsizeof(ledger.ike)
    clock.now += 1
    ledger.reconcile([], clock())
    settle(ledger, clock)
    ledger.reconcile([], clock())
    assert not ledger.ike and sys.getsizeof(ledger.ike) < grown / 100
    assert sys.getsizeof(ledger._ike_by_peer) < grown / 100
    assert sys.getsizeof(ledger._children_of) < grown / 100


def test_observed_kernel_counts_raise_the_live_totals_and_never_lower_them() -> None:
    """`observe` (the kernel's XFRM counts at a scrape) moves a live CHILD SA's counts up,
    never down, ignores CHILD SAs it does not hold, and the user's totals follow."""
    clock = Clock()
    ledger = replay("up", clock)
    child_id, live = next(iter(ledger.children.items()))
    conn_child, conn_user = (live.conn, live.child), (live.conn, live.user)
    before = ledger.traffic_totals()[conn_child].copy()
    user_before = ledger.user_totals()[conn_user].copy()
    fresh = Traffic(before.bytes_in + 1000, before.bytes_out + 2000, 10, 20)
    ledger.observe({child_id: fresh, "no-such-child": Traffic(10**9, 10**9, 1, 1)})
    after = ledger.traffic_totals()[conn_child]
    assert (after.bytes_in, after.bytes_out) == (before.bytes_in + 1000, before.bytes_out + 2000)
    assert ledger.user_totals()[conn_user].bytes_in == user_before.bytes_in + 1000
    ledger.observe({child_id: Traffic()})  # an older reading: counts of one SA only grow
    assert ledger.traffic_totals()[conn_child].bytes_in == before.bytes_in + 1000
    assert sum(t.bytes_in for t in ledger.traffic_totals().values()) == sum(
        t.bytes_in for t in ledger.user_totals().values()
    )


# ---- drops that mean drops (issue 19): IKEv1 has no break-before-make reauthentication ----


def replay_timed(name: str, clock: Clock, ledger: SaLedger | None = None) -> SaLedger:
    """A recording with event times (`at`) replayed at those times, the ledger ticking every
    half second as the exporter's refresh rounds do, with the listings taken in between."""
    data = recorded(name)
    ledger = ledger or new_ledger(clock)
    ledger.reconcile(parse_ike_sas(data["list-sas-before"], RECORDED_NOW), clock())
    start = clock.now
    steps = [(e["at"], i, e) for i, e in enumerate(data["events"])]
    steps += [(lst["at"], lst["after"] - 0.5, lst) for lst in data.get("listings", [])]
    for at, _, step in sorted(steps, key=lambda s: (s[0], s[1])):
        while clock.now + 0.5 < start + at:
            clock.now += 0.5
            ledger.tick()
        clock.now = max(clock.now, start + at)
        if "list-sas" in step:
            ledger.reconcile(parse_ike_sas(step["list-sas"], RECORDED_NOW), clock.now - 0.01)
        else:
            ledger.apply(decoded(step["event"], step["message"]))
    return ledger


def test_ikev1_polite_disconnect_and_reconnect_at_once_is_a_drop_and_an_up() -> None:
    """IKE delete, and 50 ms later a new IKE SA of the same peer: IKEv1 clients reauthenticate
    make-before-break, so this is a disconnect, counted at once (no grace time to wait)."""
    clock = Clock()
    ledger = replay_timed("flap-ikev1", clock)
    assert nonzero(ledger.ike_events) == {("nycmesh", "down"): 1, ("nycmesh", "up"): 1}
    assert nonzero(ledger.child_events) == {
        ("nycmesh", "nycmesh", "down"): 1,
        ("nycmesh", "nycmesh", "up"): 1,
    }
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {("nycmesh", "down"): 1, ("nycmesh", "up"): 1}
    assert len(ledger.ike) == 1 and len(ledger.children) == 1


def test_ikev2_disconnect_and_reconnect_at_once_is_still_a_reauthentication() -> None:
    """The same from an IKEv2 peer is what its break-before-make reauthentication looks like
    from the server (compare reauth-then-terminate-ikev2-psk): within the grace, a rekey."""
    clock = Clock()
    ledger = replay_timed("flap-ikev2", clock)
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {("ikev2-psk", "rekey"): 1}
    assert nonzero(ledger.child_events) == {("ikev2-psk", "ikev2-psk", "rekey"): 1}


@pytest.mark.parametrize("name", ["reauth-ikev1-listed", "reauth-ikev1-unlisted"])
def test_ikev1_reauthentication_make_before_break_is_one_rekey(name: str) -> None:
    """charon 5.9.8: the new IKE SA comes up and adopts the CHILD SA (no event says so; a
    listing shows it), the old one is deleted, empty, 10 s later: one rekey, no drop, the
    CHILD SA untouched; with a listing in between or without."""
    clock = Clock()
    ledger = replay_timed(name, clock)
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {("nycmesh", "up"): 1, ("nycmesh", "rekey"): 1}
    assert nonzero(ledger.child_events) == {}
    ((new_ike, _),) = ledger.ike.items()
    ((_, live),) = ledger.children.items()
    assert live.ike_uniqueid == new_ike, "the CHILD SA belongs to the new IKE SA"
    assert not ledger._held and not ledger._adopted


def renumbered(message: dict[str, Any], ike: dict[str, str], child: dict[str, str]) -> Any:
    """A recorded event with its IKE and CHILD SA uniqueids mapped (to chain recordings)."""
    out = json.loads(json.dumps(message))
    for section in out.values():
        if isinstance(section, dict):
            section["uniqueid"] = ike.get(section["uniqueid"], section["uniqueid"])
            for c in section.get("child-sas", {}).values():
                c["uniqueid"] = child.get(c["uniqueid"], c["uniqueid"])
    return out


def test_ikev1_reauthentication_then_a_flap_counts_the_flap() -> None:
    """A reauthentication, then the client disconnects and reconnects at once (the flap
    recording on the reauthenticated SAs): the first is a rekey, the second a drop and an
    up, although the flap comes within the grace time of the reauthentication's up."""
    clock = Clock()
    ledger = replay_timed("reauth-ikev1-listed", clock)
    ((ike_id, _),) = ledger.ike.items()
    ((child_id, _),) = ledger.children.items()
    for event in recorded("flap-ikev1")["events"]:
        clock.now += 0.05
        message = renumbered(event["message"], {"1": ike_id, "2": "90"}, {"1": child_id, "2": "90"})
        ledger.apply(decoded(event["event"], message))
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {
        ("nycmesh", "up"): 2,
        ("nycmesh", "rekey"): 1,
        ("nycmesh", "down"): 1,
    }
    assert nonzero(ledger.child_events) == {
        ("nycmesh", "nycmesh", "down"): 1,
        ("nycmesh", "nycmesh", "up"): 1,
    }


@pytest.mark.parametrize("state", ["ESTABLISHED", "DELETING"])
def test_ikev1_sa_gone_with_its_child_while_a_newer_sa_of_the_peer_is_up_is_a_drop(
    state: str,
) -> None:
    """An IKEv1 IKE SA that goes with its CHILD SA still under it while a newer IKE SA of the
    same peer is up. ESTABLISHED (as recorded: DPD found the peer dead): a drop at once.
    DELETING (the peer deleted it; edited): it may have been reauthenticated (its CHILD SA
    adopted, no event says so), until the down event of the CHILD SA under it says not."""
    clock = Clock()
    data = recorded("dpd-dead-clients")
    ledger = new_ledger(clock)
    ledger.reconcile(parse_ike_sas(data["list-sas-before"], RECORDED_NOW), clock())
    up = next(
        e
        for e in recorded("up")["events"]
        if e["event"] == "ike-updown" and "nycmesh" in e["message"]
    )
    clock.now += 1
    ledger.apply(decoded("ike-updown", renumbered(up["message"], {"1": "90"}, {})))
    for event in data["events"]:
        clock.now += 0.05
        message = json.loads(json.dumps(event["message"]))
        if "nycmesh" in message:
            message["nycmesh"]["state"] = state
        ledger.apply(decoded(event["event"], message))
    assert ledger.ike_events[("nycmesh", "down")] == 1  # at once
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {
        ("nycmesh", "up"): 1,
        ("nycmesh", "down"): 1,
        ("ikev2-psk", "down"): 1,
    }
    assert nonzero(ledger.child_events) == {
        ("nycmesh", "nycmesh", "down"): 1,
        ("ikev2-psk", "ikev2-psk", "down"): 1,
    }


def test_ikev2_peer_found_dead_and_back_within_the_grace_is_a_drop_and_an_up() -> None:
    """A dead IKEv2 peer (DPD: its SA goes while ESTABLISHED, no delete) that comes back
    (a restarted client) within the grace: no reauthentication deletes nothing, so a drop."""
    clock = Clock()
    ledger = replay("dpd-dead-clients", clock)
    dead = recorded("dpd-dead-clients")["events"][2]["message"]["ikev2-psk"]
    for event in recorded("flap-ikev2")["events"]:
        if event["message"].get("up") == "yes":  # the same peer back, as a new SA
            clock.now += 0.5
            message = renumbered(event["message"], {"2": "90"}, {"2": "90"})
            for key in ("remote-host", "remote-id"):
                message["ikev2-psk"][key] = dead[key]
            ledger.apply(decoded(event["event"], message))
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {
        ("nycmesh", "down"): 1,
        ("ikev2-psk", "down"): 1,
        ("ikev2-psk", "up"): 1,
    }
    assert nonzero(ledger.child_events) == {
        ("nycmesh", "nycmesh", "down"): 1,
        ("ikev2-psk", "ikev2-psk", "down"): 1,
        ("ikev2-psk", "ikev2-psk", "up"): 1,
    }


def test_an_up_that_was_rekeyed_since_replaces_nothing() -> None:
    """IKEv1: a flap (new CHILD SA up), its CHILD SA rekeyed, a second flap within the grace
    time: the first flap's up is no live replacement for the second's end (a make-before-
    break replacement is up when the old SA goes): two drops, two ups, one rekey."""
    clock = Clock()
    ledger = replay_timed("flap-ikev1", clock)
    ((ike_id, _),) = ledger.ike.items()
    ((child_id, _),) = ledger.children.items()
    rekey = recorded("rekey-child-ikev1")["events"][0]["message"]
    pair = next(iter(rekey["nycmesh"]["child-sas"].values()))
    pair["old"]["uniqueid"], pair["new"]["uniqueid"] = child_id, "91"
    rekey["nycmesh"]["uniqueid"] = ike_id
    clock.now += 1
    ledger.apply(decoded("child-rekey", rekey))
    for event in recorded("flap-ikev1")["events"]:
        clock.now += 0.05
        message = renumbered(event["message"], {"1": ike_id, "2": "92"}, {"1": "91", "2": "92"})
        ledger.apply(decoded(event["event"], message))
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == {("nycmesh", "down"): 2, ("nycmesh", "up"): 2}
    assert nonzero(ledger.child_events) == {
        ("nycmesh", "nycmesh", "down"): 2,
        ("nycmesh", "nycmesh", "up"): 2,
        ("nycmesh", "nycmesh", "rekey"): 1,
    }


def test_strongswan6_ikev1_disconnect_and_dead_peer_are_drops_at_once() -> None:
    """charon 6.0.1 (Debian 13, recorded in the vmlab guest: L2TP/IPsec IKEv1 clients): a
    client that deletes its SAs and one killed (found by DPD) send the same sequences as
    5.9.8 does; each is one IKE and one CHILD drop, counted at once (no grace)."""
    guest = EVENTS.parent / "vici-guest" / "trixie-events" / "connect-disconnect-dpd.json"
    data = json.loads(guest.read_text())
    assert data["daemons"]["strongswan-charon"].startswith("6.0.1")
    clock = Clock()
    ledger = new_ledger(clock)
    ledger.reconcile(parse_ike_sas(data["list-sas-before"], RECORDED_NOW), clock())
    for event in data["events"]:
        clock.now += 0.05
        ledger.apply(decoded(event["event"], event["message"]))
    conn = "nycmesh-l2tp-psk"
    counted = {(conn, "up"): 2, (conn, "down"): 2}
    assert nonzero(ledger.ike_events) == counted
    assert nonzero(ledger.child_events) == {(c, "l2tp", e): n for (c, e), n in counted.items()}
    settle(ledger, clock)
    assert nonzero(ledger.ike_events) == counted


def test_a_rekeyed_child_sa_still_in_the_kernel_adds_what_it_carries_after_its_rekey() -> None:
    """IKEv1 keeps the old CHILD SA (REKEYED) until the peer deletes it, and packets still
    cross it: the kernel's counts of it at a scrape add to the totals like a listing's
    late report (recorded real rekey: the old SA ended with 228 bytes each way)."""
    clock = Clock()
    ledger = replay("rekey-child-ikev1", clock)
    key = ("nycmesh", "nycmesh")
    before = ledger.traffic_totals()[key].copy()
    ledger.observe({"1": Traffic(228 + 500, 228, 3 + 5, 3)})
    after = ledger.traffic_totals()[key]
    assert after.bytes_in == before.bytes_in + 500 and after.packets_in == before.packets_in + 5
    assert after.bytes_out == before.bytes_out
    ledger.observe({"1": Traffic(228 + 500, 228, 3 + 5, 3)})  # read again: nothing new
    assert ledger.traffic_totals()[key].bytes_in == before.bytes_in + 500
