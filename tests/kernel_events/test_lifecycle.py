"""SaLedger's rules on hand-built events (the recorded real-kernel sequences are in
test_recorded.py): rekey vs drop, once per IPsec SA, traffic that never goes backwards,
resync after lost notifications, caps."""

from __future__ import annotations

import random
from dataclasses import replace

from exporter.kernel.model import XfrmState
from exporter.kernel.sa_lifecycle import SaKey, SaLedger, Traffic
from exporter.kernel.xfrm_events import (
    ResyncNeeded,
    SaAdded,
    SaDeleted,
    SaExpired,
    SasFlushed,
)

SERVER = "192.0.2.1"


def st(
    spi: int,
    src: str,
    dst: str,
    reqid: int = 1,
    nbytes: int = 0,
    packets: int = 0,
    added_at: float = 1000.0,
    sport: int | None = None,
    dport: int | None = None,
    proto: str = "esp",
) -> XfrmState:
    return XfrmState(
        src=src,
        dst=dst,
        spi=spi,
        proto=proto,
        mode="transport",
        reqid=reqid,
        bytes=nbytes,
        packets=packets,
        added_at=added_at,
        replay_window_errors=0,
        replay_errors=0,
        integrity_errors=0,
        encap_sport=sport,
        encap_dport=dport,
    )


def pair(
    spi: int, peer: str, reqid: int = 1, added_at: float = 1000.0, port: int | None = None
) -> tuple[XfrmState, XfrmState]:
    """(inbound, outbound) of one IPsec SA between SERVER and `peer`."""
    sp = 4500 if port is not None else None
    return (
        st(spi, peer, SERVER, reqid, added_at=added_at, sport=port, dport=sp),
        st(spi + 1, SERVER, peer, reqid, added_at=added_at, sport=sp, dport=port),
    )


def add(ledger: SaLedger, *states: XfrmState, at: float = 1000.0) -> None:
    for s in states:
        ledger.apply(SaAdded(s, at))


def delete(ledger: SaLedger, *states: XfrmState, at: float = 2000.0) -> None:
    for s in states:
        ledger.apply(SaDeleted(s, at))


def with_counts(s: XfrmState, nbytes: int, packets: int) -> XfrmState:
    return replace(s, bytes=nbytes, packets=packets)


def test_make_before_break_rekey_counted_once_as_rekey() -> None:
    """New pair installed, then the old one deleted (pluto's and charon's order): one
    rekey, no drop, the old SA's finals kept, the new one live."""
    ledger = SaLedger()
    old_in, old_out = pair(0x100, "198.51.100.7")
    new_in, new_out = pair(0x200, "198.51.100.7", added_at=1500.0)
    add(ledger, old_in, old_out)
    add(ledger, new_in, new_out, at=1500.0)
    delete(ledger, with_counts(old_out, 700, 7), with_counts(old_in, 300, 3))
    c = ledger.counts()
    assert (c.added, c.ups, c.rekeys, c.drops) == (2, 1, 1, 0)
    (ended,) = ledger.drain()
    assert (ended.how, ended.cause) == ("rekey", "delete")
    assert ended.spis == (0x100, 0x101)
    assert ended.traffic == Traffic(1000, 10)
    (live,) = ledger.live()
    assert ended.replaced_by == live.serial and {s.spi for s in live.states} == {0x200, 0x201}
    assert ledger.traffic() == Traffic(1000, 10)
    assert ledger.drain() == ()


def test_drop_when_nothing_replaces_it() -> None:
    ledger = SaLedger()
    a_in, a_out = pair(0x100, "198.51.100.7")
    add(ledger, a_in, a_out)
    delete(ledger, a_out, a_in)
    c = ledger.counts()
    assert (c.added, c.ups, c.rekeys, c.drops) == (1, 1, 0, 1)
    (ended,) = ledger.drain()
    assert ended.how == "drop" and ended.replaced_by is None
    assert not ledger.live()


def test_break_before_make_reconnect_is_a_drop_and_a_new_sa() -> None:
    """The old pair deleted before the new one is in (a client that hangs up and dials
    again): one drop, then a new SA (an up), never a rekey."""
    ledger = SaLedger()
    a = pair(0x100, "198.51.100.7")
    b = pair(0x200, "198.51.100.7", added_at=1001.0)
    add(ledger, *a)
    delete(ledger, *a, at=1000.5)
    add(ledger, *b, at=1001.0)
    c = ledger.counts()
    assert (c.added, c.ups, c.rekeys, c.drops) == (2, 2, 0, 1)


def test_out_of_order_install_and_delete_make_one_sa_counted_once() -> None:
    """Outbound installed first, inbound deleted first, a hard expiry of the already
    deleted state afterwards: one IPsec SA, one end."""
    ledger = SaLedger()
    a_in, a_out = pair(0x100, "198.51.100.7")
    add(ledger, a_out, a_in)
    assert len(ledger.live()) == 1
    delete(ledger, a_in)
    (half,) = ledger.live()
    assert half.ended
    delete(ledger, a_out)
    ledger.apply(SaExpired(a_out, hard=True, at=2001.0))
    c = ledger.counts()
    assert (c.added, c.drops, c.rekeys) == (1, 1, 0)
    assert len(ledger.drain()) == 1


def test_interleaved_installs_of_two_peers_pair_by_reversed_addresses() -> None:
    ledger = SaLedger()
    a_in, a_out = pair(0x100, "198.51.100.7", reqid=5)
    b_in, b_out = pair(0x200, "198.51.100.8", reqid=6)
    add(ledger, a_in, b_in, b_out, a_out)
    sas = ledger.live()
    assert sorted(tuple(sorted(s.spi for s in sa.states)) for sa in sas) == [
        (0x100, 0x101),
        (0x200, 0x201),
    ]


def test_hard_expiry_ends_an_sa_soft_does_not() -> None:
    ledger = SaLedger()
    a_in, a_out = pair(0x100, "198.51.100.7")
    add(ledger, a_in, a_out)
    ledger.apply(SaExpired(with_counts(a_in, 50, 1), hard=False, at=1500.0))
    assert ledger.counts().soft_expires == 1 and ledger.counts().drops == 0
    assert ledger.traffic() == Traffic(50, 1)
    ledger.apply(SaExpired(with_counts(a_in, 80, 2), hard=True, at=1600.0))
    assert ledger.counts().drops == 1
    ledger.apply(SaExpired(with_counts(a_out, 20, 1), hard=True, at=1600.0))
    (ended,) = ledger.drain()
    assert ended.cause == "expire" and ended.traffic == Traffic(100, 3)


def test_two_clients_behind_one_nat_address_share_a_reqid_but_not_a_key() -> None:
    """strongSwan gives both one reqid; their NAT-T ports differ, so one client's
    disconnect is a drop while the other is connected."""
    ledger = SaLedger()
    nat = "203.0.113.20"
    a = pair(0x100, nat, reqid=9, port=1024)
    b = pair(0x200, nat, reqid=9, port=1025, added_at=1100.0)
    add(ledger, *a)
    add(ledger, *b, at=1100.0)
    assert SaKey.of(a[0]) != SaKey.of(b[0])
    assert SaKey.of(a[0]) == SaKey.of(a[1])
    delete(ledger, *a)
    c = ledger.counts()
    assert (c.ups, c.rekeys, c.drops) == (2, 0, 1)


def test_flush_drops_each_key_once_and_an_older_sa_counts_as_rekeyed() -> None:
    """pluto's start flushes the table: client 1 mid-rekey (old and new pair) and client
    2. Per client one drop; the old pair was already replaced: a rekey."""
    ledger = SaLedger()
    old = pair(0x100, "198.51.100.7")
    new = pair(0x200, "198.51.100.7", added_at=1500.0)
    other = pair(0x300, "198.51.100.8", reqid=2)
    add(ledger, *old, *other)
    add(ledger, *new, at=1500.0)
    ledger.apply(SasFlushed(proto=None, at=3000.0))
    c = ledger.counts()
    assert (c.rekeys, c.drops) == (1, 2)
    ended = {sa.spis: sa for sa in ledger.drain()}
    assert ended[(0x100, 0x101)].how == "rekey"
    assert ended[(0x200, 0x201)].how == "drop" and ended[(0x200, 0x201)].cause == "flush"
    assert not ledger.live()


def test_flush_of_another_protocol_leaves_esp_alone() -> None:
    ledger = SaLedger()
    add(ledger, *pair(0x100, "198.51.100.7"))
    ledger.apply(SasFlushed(proto="ah", at=3000.0))
    assert len(ledger.live()) == 1 and ledger.counts().drops == 0


def test_enobufs_resync_ends_missing_states_and_adds_new_ones() -> None:
    """Notifications lost: the ledger had pair A (100 bytes seen); the dump has B (same
    key, A gone) and C (a new client). A is a rekey (B replaces it), C is added, and the
    DELSA of A that arrives after the resync raises its finals; the totals never went
    backwards."""
    ledger = SaLedger()
    ledger.resync([], at=900.0)
    a_in, a_out = pair(0x100, "198.51.100.7")
    add(ledger, a_in, a_out)
    ledger.resync([with_counts(a_in, 100, 1), a_out], at=1200.0)
    assert ledger.traffic() == Traffic(100, 1)
    ledger.apply(ResyncNeeded("overflow", 1300.0))
    assert ledger.needs_resync
    b = pair(0x200, "198.51.100.7", added_at=1250.0)
    c = pair(0x300, "198.51.100.8", reqid=2, added_at=1260.0)
    ledger.resync([*b, *c], at=1300.0)
    assert not ledger.needs_resync
    counts = ledger.counts()
    assert (counts.added, counts.ups, counts.rekeys, counts.drops) == (3, 2, 1, 0)
    (ended,) = ledger.drain()
    assert (ended.how, ended.cause) == ("rekey", "resync")
    assert ledger.traffic() == Traffic(100, 1)
    delete(ledger, with_counts(a_in, 150, 2), at=1301.0)
    assert ledger.counts().late_finals == 1
    assert ledger.traffic() == Traffic(150, 2)
    # The same final again changes nothing.
    delete(ledger, with_counts(a_in, 150, 2), at=1302.0)
    assert ledger.counts().late_finals == 1 and ledger.traffic() == Traffic(150, 2)


def test_resync_drop_and_first_resync_is_the_baseline() -> None:
    ledger = SaLedger()
    a = pair(0x100, "198.51.100.7")
    ledger.resync(a, at=1000.0)
    counts = ledger.counts()
    assert (counts.added, counts.ups) == (0, 0) and len(ledger.live()) == 1
    # Notifications of what the dump already had are no news.
    add(ledger, *a)
    assert ledger.counts().added == 0 and len(ledger.live()) == 1
    ledger.resync([], at=2000.0)
    assert ledger.counts().drops == 1
    (ended,) = ledger.drain()
    assert ended.cause == "resync" and ended.ended_at == 2000.0


def test_reused_spi_with_a_new_install_time_is_a_new_sa() -> None:
    ledger = SaLedger()
    a = pair(0x100, "198.51.100.7")
    add(ledger, *a)
    again = pair(0x100, "198.51.100.7", added_at=5000.0)
    ledger.resync(again, at=5001.0)
    counts = ledger.counts()
    assert (counts.drops, counts.rekeys) == (1, 0)
    assert counts.added == 2
    (live,) = ledger.live()
    assert live.installed_at == 5000.0


def test_probe_sa_and_other_protocols_are_ignored() -> None:
    """A starting pluto adds and deletes an SA 0.0.0.0 → 0.0.0.0 (SPI 0x01000000)."""
    ledger = SaLedger()
    probe = st(0x01000000, "0.0.0.0", "0.0.0.0")
    add(ledger, probe)
    delete(ledger, probe)
    comp = st(0x5, "198.51.100.7", SERVER, proto="comp")
    add(ledger, comp)
    c = ledger.counts()
    assert (c.added, c.drops, c.unknown_ends, c.ignored) == (0, 0, 0, 3)


def test_unknown_end_is_counted_not_classified() -> None:
    ledger = SaLedger()
    delete(ledger, *pair(0x100, "198.51.100.7"))
    c = ledger.counts()
    assert (c.drops, c.rekeys, c.unknown_ends) == (0, 0, 2)


def test_caps_on_tracked_states_and_on_ended_sas() -> None:
    ledger = SaLedger(max_states=2, max_ended=1)
    a = pair(0x100, "198.51.100.7")
    b = pair(0x200, "198.51.100.8", reqid=2)
    add(ledger, *a)
    add(ledger, *b)
    assert ledger.counts().untracked == 2 and len(ledger.live()) == 1
    delete(ledger, *b)
    assert ledger.counts().unknown_ends == 2
    c_ = pair(0x300, "198.51.100.9", reqid=3)
    delete(ledger, with_counts(a[0], 10, 1), with_counts(a[1], 20, 1))
    add(ledger, *c_)
    delete(ledger, with_counts(c_[0], 5, 1), c_[1])
    assert ledger.counts().ended_evicted == 1
    (kept,) = ledger.drain()
    assert kept.spis == (0x300, 0x301)
    # The evicted SA's traffic is still in the totals.
    assert ledger.traffic() == Traffic(35, 3)


def test_traffic_never_goes_backwards_over_random_sequences() -> None:
    """Random installs, updates, deletes (with finals at least the last count seen, as
    the kernel's are), flushes and resyncs: the totals only grow, and each IPsec SA ends
    exactly once."""
    rng = random.Random(17)
    for _ in range(50):
        ledger = SaLedger()
        live: dict[int, list[XfrmState]] = {}
        spi = 0x1000
        last = Traffic()
        for step in range(80):
            op = rng.random()
            if op < 0.3 or not live:
                peer = f"198.51.100.{rng.randint(1, 4)}"
                spi += 2
                live[spi] = list(pair(spi, peer, reqid=rng.randint(1, 3), added_at=step))
                add(ledger, *live[spi], at=step)
            elif op < 0.65:
                k = rng.choice(list(live))
                live[k] = [
                    with_counts(s, s.bytes + rng.randint(0, 500), s.packets + 1) for s in live[k]
                ]
                ledger.apply(SaAdded(live[k][rng.randint(0, 1)], step, updated=True))
            elif op < 0.9:
                k = rng.choice(list(live))
                states = live.pop(k)
                rng.shuffle(states)
                delete(ledger, *states, at=step)
            elif op < 0.95:
                ledger.resync([s for v in live.values() for s in v], at=step)
            else:
                ledger.apply(SasFlushed(None, step))
                live.clear()
            now = ledger.traffic()
            assert now.bytes >= last.bytes and now.packets >= last.packets
            last = now
        c = ledger.counts()
        assert c.rekeys + c.drops == c.added - len({sa.serial for sa in ledger.live()})


def test_resync_beyond_the_cap_counts_each_untracked_state_once() -> None:
    ledger = SaLedger(max_states=2)
    ledger.resync([*pair(0x100, "198.51.100.7"), *pair(0x200, "198.51.100.8", reqid=2)], 1.0)
    assert ledger.counts().untracked == 2 and len(ledger.live()) == 1
