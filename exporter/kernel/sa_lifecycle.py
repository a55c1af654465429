"""A ledger of IPsec SAs from the kernel's XFRM notifications: which are live, how each
one ended (rekey or drop, counted once), and traffic totals that never go backwards.

Daemon-neutral and pure: `SaLedger` has no sockets and no clocks; it is fed the events of
`exporter.kernel.xfrm_events` (`apply`) and, when the source asks for it, a dump of the
SA table (`resync`); `xfrm_events.ResyncingFeed` does both for a live source, and
`python3 -m exporter.kernel.sa_lifecycle` runs the three together, printing what ends.
Rules:

**One IPsec SA is a pair of kernel states.** An SA negotiated by IKE is two XFRM states,
one per direction: the same protocol (ESP or AH; others are ignored) and reqid, the
addresses swapped. A new state joins the newest live, not yet ended IPsec SA of its *key*
that holds exactly one state, the reverse of it (so the in/out order of installation does
not matter); otherwise it starts a new IPsec SA. The key is (protocol, reqid, the two
endpoints), an endpoint being an address and its NAT-T UDP port (None without UDP
encapsulation): a replacement must share it.

**Ended once, when its first state goes.** An IPsec SA ends when the first of its states
is deleted (XFRM_MSG_DELSA), hard-expires (XFRM_MSG_EXPIRE with hard set: the kernel
deletes it without a DELSA), is flushed (XFRM_MSG_FLUSHSA), or is missing from a resync
dump. It is then classified once, whatever happens to its other state:

- **rekey**: another live IPsec SA of the same key (protocol, reqid, endpoints) was
  already installed. Kernel-level rekeys by pluto (Libreswan) and charon (strongSwan) are
  make-before-break: the new pair is in before the old one is deleted.
- **drop**: nothing of that key is left. A client that disconnects, or is killed and
  removed by DPD, and one that reconnects break-before-make (its old SA gone before the new
  one is in: a drop, then a new SA) all count here.

What the kernel cannot tell: a client that crashes and connects again *before* the
daemon deleted its old SA (DPD not yet fired) gets a new SA of the same key while the old
one lives, so the old one's end counts as a rekey; the IKE daemon's state (a new IKE SA,
not a rekeyed one) is needed to call that a drop. SAs ended by one flush or one resync
are classified against what survives it and against the newer ones ending with them: of
one key, only the newest counts as a drop.

States with an unspecified address (0.0.0.0, ::) are not IPsec SAs of a peer: a starting
pluto adds and deletes such a probe SA. They are ignored, as are protocols other than
`protocols` (IPComp, the IPIP states that carry it).

**Two clients behind one NAT address.** strongSwan gives their CHILD SAs one reqid (same
selectors: the server's UDP/1701 and the NAT address), so the reqid alone would make one
client's drop look like a rekey while the other is connected. Their NAT-T source ports
differ (the NAT maps each client to its own port), and the port is part of the key, so
they are two keys: each drop counts. (Libreswan, as setup-ipsec-vpn configures it, gives
the second device no IPsec SA at all; see docs/vmlab.md.)

**Traffic.** Each state's byte and packet counts are the kernel's lifetime counters; a
deleted or expired state's are its final ones (the notification carries them), at least
the last ones seen. Totals = finals of ended states + current counts of live ones, so they
only grow while the ledger lives. A DELSA that arrives after a resync already ended its
state (with the last counts seen) raises the finals by the difference (`late_finals`).

**Exactly once, to the consumer.** Each IPsec SA whose states are all gone is queued as an
`EndedIpsecSa` (its key, SPIs, final counts per state, rekey or drop) and handed over once
by `drain`; a consumer maps SPI and reqid to connection and user with the IKE daemon's
polled state, captured while the SA was live.

**Resync.** After `ResyncNeeded` the consumer dumps the SA table and calls `resync`:
states not seen before are added (counted as `added`, except at a first resync before any
notification, which sets the baseline), states gone are ended with their last counts,
current counts are refreshed. A resync at every scrape is cheap and keeps the live counts
fresh.

**Bounded.** At most `max_states` live kernel states are tracked (beyond, new ones are
counted in `untracked` and ignored, and their ends in `unknown_ends`); at most
`max_ended` ended IPsec SAs wait for `drain` (beyond, the oldest is dropped and counted in
`ended_evicted`; the totals keep its traffic), and as many recent finals are remembered
for late DELSAs.

Seen on genuine Libreswan (4.10 on Linux 6.1, 5.2 on 6.12; tests/fixtures/xfrm-events/):
the inbound state of each pair first appears as an UPDSA, the outbound as a NEWSA (4.10
installs the outbound first, 5.2 the inbound); pluto deletes the outbound state first;
every DELSA carries the final counts; a client's Quick Mode rekey is make-before-break;
5.2's pluto flushes the table when it starts, 4.10's does not; neither leaves lifetimes to
the kernel (no EXPIRE in normal operation).

Not handled: strongSwan 6's per-CPU SAs (kernels >= 6.13) share an SPI; a state is
identified here by (protocol, SPI, destination, install time). An SA whose NAT-T ports
change while it lives (an UPDSA) keeps the key it was installed with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from exporter.kernel.model import XfrmState
from exporter.kernel.xfrm_events import (
    ResyncingFeed,
    ResyncNeeded,
    SaAdded,
    SaDeleted,
    SaExpired,
    SasFlushed,
    XfrmEvent,
    XfrmEventSource,
    event_json,
    run_cli,
)

How = Literal["rekey", "drop"]
#: What ended an IPsec SA's first state.
Cause = Literal["delete", "expire", "flush", "resync"]
Endpoint = tuple[str, int | None]
#: A kernel state: (protocol, SPI, destination address).
StateId = tuple[str, int, str]


@dataclass(frozen=True)
class Traffic:
    bytes: int = 0
    packets: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.bytes + other.bytes, self.packets + other.packets)

    def __sub__(self, other: Traffic) -> Traffic:
        return Traffic(self.bytes - other.bytes, self.packets - other.packets)


@dataclass(frozen=True)
class SaKey:
    """What a replacement shares with the IPsec SA it replaces."""

    proto: str
    reqid: int
    #: The two endpoints, (address, NAT-T port or None), sorted.
    endpoints: tuple[Endpoint, Endpoint]

    @classmethod
    def of(cls, state: XfrmState) -> SaKey:
        a: Endpoint = (state.src, state.encap_sport)
        b: Endpoint = (state.dst, state.encap_dport)
        pair = (a, b) if (a[0], a[1] or 0) <= (b[0], b[1] or 0) else (b, a)
        return cls(state.proto, state.reqid, pair)


@dataclass(frozen=True)
class IpsecSa:
    """A live IPsec SA (`ended`: one of its states is gone already)."""

    #: The ledger's own number, in installation order.
    serial: int
    key: SaKey
    mode: str
    #: Its states (one or two), current counts; gone ones with their final counts.
    states: tuple[XfrmState, ...]
    #: When its first state was installed (the kernel's add time, epoch seconds).
    installed_at: float
    ended: bool

    @property
    def traffic(self) -> Traffic:
        return sum((Traffic(s.bytes, s.packets) for s in self.states), Traffic())


@dataclass(frozen=True)
class EndedIpsecSa:
    """An IPsec SA whose states are all gone."""

    serial: int
    key: SaKey
    mode: str
    how: How
    cause: Cause
    #: Its states with their final counts, in installation order.
    states: tuple[XfrmState, ...]
    installed_at: float
    #: When its first state went (the notification's receive time, or the resync's).
    ended_at: float
    #: For a rekey: the serial of the newest live IPsec SA of the same key then.
    replaced_by: int | None

    @property
    def traffic(self) -> Traffic:
        return sum((Traffic(s.bytes, s.packets) for s in self.states), Traffic())

    @property
    def spis(self) -> tuple[int, ...]:
        return tuple(s.spi for s in self.states)


@dataclass(frozen=True)
class LedgerCounts:
    """Counts since the ledger was made."""

    #: IPsec SAs installed (the first resync's baseline not included).
    added: int
    #: Of those, the ones installed with no live IPsec SA of their key (a client came up).
    ups: int
    rekeys: int
    drops: int
    #: Soft lifetime expiries (the daemon is told to rekey).
    soft_expires: int
    resyncs: int
    #: Ends of states never tracked (before the ledger, untracked, other protocols' not
    #: counted).
    unknown_ends: int
    #: New states not tracked because `max_states` was reached.
    untracked: int
    #: Ended IPsec SAs dropped from the drain queue because `max_ended` was reached.
    ended_evicted: int
    #: Deletions that raised an already ended state's final counts.
    late_finals: int
    #: Notifications about states not tracked by rule: other protocols than
    #: `protocols`, and unspecified addresses (pluto's start-up probe SA, 0.0.0.0).
    ignored: int


_UNSPECIFIED = frozenset({"0.0.0.0", "::"})


def _id(state: XfrmState) -> StateId:
    return (state.proto, state.spi, state.dst)


def _reverse(a: XfrmState, b: XfrmState) -> bool:
    return a.src == b.dst and a.dst == b.src


def _at_least(final: XfrmState | None, last: XfrmState) -> XfrmState:
    """The final counts, never below the last ones seen."""
    if final is None:
        return last
    if final.bytes >= last.bytes and final.packets >= last.packets:
        return final
    return XfrmState(
        **{
            **final.__dict__,
            "bytes": max(final.bytes, last.bytes),
            "packets": max(final.packets, last.packets),
        }
    )


@dataclass(eq=False)
class _Sa:
    serial: int
    key: SaKey
    mode: str
    installed_at: float
    #: Live states and gone ones (with final counts), in installation order.
    states: dict[StateId, XfrmState] = field(default_factory=dict)
    live: set[StateId] = field(default_factory=set)
    ended: tuple[How, Cause, float, int | None] | None = None


@dataclass
class SaLedger:
    """Fed XFRM events (`apply`) and dumps (`resync`); read with `live`, `traffic`,
    `counts` and `drain`. The rules are in the module docstring."""

    max_states: int = 20000
    max_ended: int = 10000
    protocols: frozenset[str] = frozenset({"esp", "ah"})
    #: Set by `ResyncNeeded`, cleared by `resync`.
    needs_resync: bool = True
    _states: dict[StateId, _Sa] = field(default_factory=dict)
    _by_key: dict[SaKey, list[_Sa]] = field(default_factory=dict)
    _serial: int = 0
    _synced: bool = False
    _ended_traffic: Traffic = Traffic()
    _queue: deque[EndedIpsecSa] = field(default_factory=deque)
    #: (state id, add time) → final counts, for DELSAs that come after a resync ended it.
    _finals: OrderedDict[tuple[StateId, float], XfrmState] = field(default_factory=OrderedDict)
    _counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(LedgerCounts.__dataclass_fields__, 0)
    )

    # --- reading ----------------------------------------------------------------------

    def live(self) -> tuple[IpsecSa, ...]:
        sas = {id(sa): sa for sa in self._states.values()}
        return tuple(
            IpsecSa(
                serial=sa.serial,
                key=sa.key,
                mode=sa.mode,
                states=tuple(sa.states.values()),
                installed_at=sa.installed_at,
                ended=sa.ended is not None,
            )
            for sa in sorted(sas.values(), key=lambda s: s.serial)
        )

    def traffic(self) -> Traffic:
        """Finals of ended states plus current counts of live ones: never decreases."""
        total = self._ended_traffic
        for sid, sa in self._states.items():
            s = sa.states[sid]
            total += Traffic(s.bytes, s.packets)
        return total

    def counts(self) -> LedgerCounts:
        return LedgerCounts(**self._counts)

    def drain(self) -> tuple[EndedIpsecSa, ...]:
        """The IPsec SAs that ended since the last drain, each handed over once."""
        out = tuple(self._queue)
        self._queue.clear()
        return out

    # --- feeding ----------------------------------------------------------------------

    def apply(self, event: XfrmEvent) -> None:
        if isinstance(event, SaAdded | SaDeleted | SaExpired) and self._ignored(event.state):
            self._counts["ignored"] += 1
            return
        if isinstance(event, SaAdded):
            self._add(event.state, count=True)
            self._synced = True  # what a resync finds from now on is news
        elif isinstance(event, SaDeleted):
            self._end(
                [(_id(event.state), event.state if event.final else None)], "delete", event.at
            )
        elif isinstance(event, SaExpired):
            if event.hard:
                self._end([(_id(event.state), event.state)], "expire", event.at)
            else:
                self._counts["soft_expires"] += 1
                self._refresh(event.state)
        elif isinstance(event, SasFlushed):
            gone = [
                (sid, None) for sid in self._states if event.proto is None or sid[0] == event.proto
            ]
            self._end(gone, "flush", event.at)
        elif isinstance(event, ResyncNeeded):
            self.needs_resync = True

    def resync(self, states: Iterable[XfrmState], at: float) -> None:
        """Make the ledger agree with a dump of the SA table taken at `at`."""
        dump = {_id(s): s for s in states if not self._ignored(s)}
        gone: list[tuple[StateId, XfrmState | None]] = []
        for sid, sa in self._states.items():
            now = dump.get(sid)
            if now is None or now.added_at != sa.states[sid].added_at:
                gone.append((sid, None))
        fresh = sorted(
            (s for sid, s in dump.items() if sid not in self._states),
            key=lambda s: (s.added_at, s.spi),
        )
        reused = [
            s
            for sid, s in dump.items()
            if sid in self._states and self._states[sid].states[sid].added_at != s.added_at
        ]
        # New states first, so that a gone SA's replacement is seen as one; a reused SPI
        # (same id, new install time) can only be added once its old state is gone.
        for s in fresh:
            self._add(s, count=self._synced)
        self._end(gone, "resync", at)
        for s in reused:
            self._add(s, count=self._synced)
        for s in dump.values():
            self._refresh(s)
        self._counts["resyncs"] += 1
        self._synced = True
        self.needs_resync = False

    # --- internals --------------------------------------------------------------------

    def _ignored(self, state: XfrmState) -> bool:
        return (
            state.proto not in self.protocols
            or state.src in _UNSPECIFIED
            or (state.dst in _UNSPECIFIED)
        )

    def _refresh(self, state: XfrmState) -> None:
        sid = _id(state)
        sa = self._states.get(sid)
        if sa is None:
            return
        old = sa.states[sid]
        if old.added_at != state.added_at and state.added_at:
            return
        sa.states[sid] = _at_least(state, old)

    def _add(self, state: XfrmState, count: bool) -> None:
        if state.proto not in self.protocols:
            return
        sid = _id(state)
        sa = self._states.get(sid)
        if sa is not None:
            if state.added_at == sa.states[sid].added_at or not state.added_at:
                self._refresh(state)  # an update, or a notification already dumped
                return
            # The same SPI again, installed anew: the old one's end was missed.
            self._end([(sid, None)], "resync", state.added_at)
        if len(self._states) >= self.max_states:
            self._counts["untracked"] += 1
            return
        key = SaKey.of(state)
        peers = self._by_key.setdefault(key, [])
        partner = None
        for candidate in reversed(peers):
            if candidate.ended is None and len(candidate.states) == 1:
                (other,) = candidate.states.values()
                if _reverse(other, state) and candidate.live:
                    partner = candidate
                    break
        if partner is None:
            self._serial += 1
            partner = _Sa(self._serial, key, state.mode, state.added_at)
            if count:
                self._counts["added"] += 1
                if not any(sa.ended is None and sa.live for sa in peers):
                    self._counts["ups"] += 1
            peers.append(partner)
        partner.states[sid] = state
        partner.live.add(sid)
        self._states[sid] = partner

    def _end(
        self, gone: Sequence[tuple[StateId, XfrmState | None]], cause: Cause, at: float
    ) -> None:
        """End these states together: the IPsec SAs they belong to are classified against
        the live ones not ending with them."""
        ending: dict[int, _Sa] = {}
        for sid, final in gone:
            sa = self._states.get(sid)
            if sa is None or (
                final is not None and final.added_at and final.added_at != sa.states[sid].added_at
            ):
                self._late_final(sid, final)
                continue
            ending[id(sa)] = sa
        decisions = []
        for sa in ending.values():
            if sa.ended is not None:
                continue
            # A survivor replaces it; so does a newer one ending with it (an older SA
            # flushed together with its replacement was rekeyed, the newest dropped).
            others = [
                o
                for o in self._by_key.get(sa.key, ())
                if o is not sa
                and o.ended is None
                and o.live
                and (id(o) not in ending or o.serial > sa.serial)
            ]
            decisions.append((sa, others))
        for sa, others in decisions:
            how: How = "rekey" if others else "drop"
            self._counts["rekeys" if how == "rekey" else "drops"] += 1
            sa.ended = (how, cause, at, max(o.serial for o in others) if others else None)
        for sid, final in gone:
            sa = self._states.get(sid)
            if sa is None or id(sa) not in ending:
                continue
            if final is not None and final.added_at and final.added_at != sa.states[sid].added_at:
                continue
            last = sa.states[sid]
            ended = _at_least(final, last)
            sa.states[sid] = ended
            sa.live.discard(sid)
            del self._states[sid]
            self._ended_traffic += Traffic(ended.bytes, ended.packets)
            self._remember_final(sid, ended)
            if not sa.live:
                self._finish(sa)

    def _late_final(self, sid: StateId, final: XfrmState | None) -> None:
        if final is None:
            self._counts["unknown_ends"] += 1
            return
        seen = self._finals.get((sid, final.added_at))
        if seen is None:
            self._counts["unknown_ends"] += 1
            return
        better = _at_least(final, seen)
        if better != seen:
            self._ended_traffic += Traffic(better.bytes, better.packets) - Traffic(
                seen.bytes, seen.packets
            )
            self._finals[(sid, final.added_at)] = better
            self._counts["late_finals"] += 1

    def _remember_final(self, sid: StateId, state: XfrmState) -> None:
        self._finals[(sid, state.added_at)] = state
        while len(self._finals) > self.max_ended:
            self._finals.popitem(last=False)

    def _finish(self, sa: _Sa) -> None:
        peers = self._by_key.get(sa.key)
        if peers is not None:
            peers.remove(sa)
            if not peers:
                del self._by_key[sa.key]
        assert sa.ended is not None
        how, cause, at, replaced_by = sa.ended
        self._queue.append(
            EndedIpsecSa(
                serial=sa.serial,
                key=sa.key,
                mode=sa.mode,
                how=how,
                cause=cause,
                states=tuple(sa.states.values()),
                installed_at=sa.installed_at,
                ended_at=at,
                replaced_by=replaced_by,
            )
        )
        while len(self._queue) > self.max_ended:
            self._queue.popleft()
            self._counts["ended_evicted"] += 1


# --- command line: the live ledger -----------------------------------------------------


async def _main(args: argparse.Namespace) -> int:
    """The source, a ResyncingFeed (dumps on ResyncNeeded) and a ledger, live; prints each
    event and each ended IPsec SA as a JSON line, and the counts at the end."""
    ledger = SaLedger()
    index: list[tuple[int, int, float]] = []
    blob = bytearray()

    def record(data: bytes, at: float) -> None:
        index.append((len(blob), len(data), at))
        blob.extend(data)

    feed = ResyncingFeed(ledger, netns=args.netns)

    def handle(event: XfrmEvent) -> None:
        print(json.dumps(event_json(event)), flush=True)
        feed(event)
        for sa in ledger.drain():
            print(json.dumps({"ended": asdict(sa)}), flush=True)

    source = XfrmEventSource(
        handle, netns=args.netns, rcvbuf=args.rcvbuf, recorder=record if args.record else None
    )
    ok = await source.start()
    print(json.dumps({"subscribed": ok, "error": source.stats.last_error}), flush=True)
    try:
        if args.seconds:
            await asyncio.sleep(args.seconds)
        else:
            await asyncio.Event().wait()
    finally:
        await source.stop()
        await feed.idle()
        if args.record:
            Path(args.record).write_bytes(bytes(blob))
            Path(args.record + ".index.json").write_text(json.dumps(index))
        summary: dict[str, Any] = {
            "counts": asdict(ledger.counts()),
            "traffic": asdict(ledger.traffic()),
            "live": [asdict(sa) for sa in ledger.live()],
            "resyncs": feed.resyncs,
            "stats": asdict(source.stats),
        }
        print(json.dumps(summary), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """python3 -m exporter.kernel.sa_lifecycle [--netns NAME] [--record FILE] [--seconds N]
    [--rcvbuf BYTES]"""
    return run_cli("Follow the kernel's IPsec SAs: rekeys and drops.", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
