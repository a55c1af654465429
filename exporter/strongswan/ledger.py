"""Event counts and rekey-proof traffic totals, kept from charon's events and listings.

charon's per-CHILD-SA byte counters restart with every CHILD SA (each rekey), and a gauge
sampled every scrape misses a tunnel that drops and comes back in between. The ledger keeps
what Prometheus needs instead: monotonic counts of up/down/rekey events and traffic totals
that are "bytes of every CHILD SA that ended" plus "bytes of the live ones".

It is fed from two sides: charon's events, decoded (`apply`, immediate) and every `list-sas`
(`reconcile`, which catches what the stream missed while it was down). Both may report the
same change; uniqueids make the second report a no-op. Methods are synchronous and do no
I/O, so the edge cases are unit-tested with recorded events of a real charon.

What counts as what (README, "What counts as a drop, a rekey, an up"; checked against
charon 5.9.8's events, tests/fixtures/vici-events):
- `rekey`: charon's ike-rekey/child-rekey, and reauthentications:
  - make-before-break (either IKE version): an SA that went away while another SA of the
    same peer (connection, user, remote host, child name) that had come up within
    `reauth_grace` seconds before is still up;
  - IKEv1 (always make-before-break): an IKE SA whose CHILD SAs a newer IKE SA of the same
    peer adopted. charon shows the adoption only in a listing or in a later event of the
    CHILD SA; the old IKE SA lingers, empty, until the client deletes it (10 s later on
    5.9.8). An old IKE SA that goes while charon still holds CHILD SAs under it in the
    ledger's view, with a newer one of the same peer up, is held `ADOPTION_WAIT` seconds:
    down events of those CHILD SAs under it make it a drop, otherwise they were adopted;
  - IKEv2 break-before-make: an SA the peer deleted that was replaced by another SA of
    the same peer within `reauth_grace` seconds after (the old IKE SA is deleted, then
    the new one set up: from the server, a polite disconnect and a reconnect look the
    same).
- `down`: an SA that went away and was not replaced like that. An IKEv2 drop is counted
  once the grace time has passed (at most `reauth_grace` seconds late); an IKEv1 one at
  once, as it cannot be a break-before-make reauthentication: an IKEv1 peer that deletes
  its SA and comes back a second later dropped and came up. An IKE SA that goes while
  still ESTABLISHED (no delete from the peer: found dead by DPD, a timeout) and its CHILD
  SAs are drops at once, whichever version, as are all SAs of a restarted charon.
- `up`: an SA that came up and did not replace one that had just gone down (IKEv2 only; an
  IKEv1 reauthentication's new IKE SA is an up, the old one's end the rekey).

What it holds is bounded, whatever charon (or something posing as charon) announces: at
most `max_sas` live IKE SAs and `CHILDREN_PER_SA * max_sas` live CHILD SAs (an SA
announced beyond that is counted in `untracked` and left out of every count and total),
as many tombstones, and `CHILDREN_PER_SA * max_sas` users' ended traffic (the longest
idle go first). Time alone bounded them before: a flood of 130,000 new SAs held ~270 MB.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from exporter.strongswan.charon_events import (
    CharonEvent,
    ChildDown,
    ChildRekey,
    ChildUp,
    IkeDown,
    IkeRekey,
    IkeUp,
)
from exporter.strongswan.parse import RekeyedChild
from exporter.strongswan.snapshot import ChildSA, IkeSA

#: States in which an SA counts as up once seen in a listing.
IKE_UP_STATES = frozenset({"ESTABLISHED", "REKEYING", "REKEYED"})
CHILD_UP_STATES = frozenset({"INSTALLED", "REKEYING", "REKEYED", "UPDATING"})

#: charon derives its start time from a monotonic clock at every `stats`: it wobbles by a
#: second between answers without any restart.
START_TIME_JITTER_SECONDS = 2.0

#: CHILD SAs (and users) held per IKE SA the ledger may hold: IKEv1 keeps a rekeyed CHILD SA
#: next to its successor until it expires.
CHILDREN_PER_SA = 2

#: (connection, child name or "" for the IKE SA, user, remote host): what a reauthentication
#: keeps and a different peer would not have.
PeerKey = tuple[str, str, str, str]

#: Seconds an IKEv1 IKE SA that went away with CHILD SAs still under it (as far as the
#: ledger knows) while a newer IKE SA of the same peer is up waits for their down events
#: (charon sends them right after the IKE SA's, a dead peer's) before it is taken for a
#: reauthentication whose new IKE SA adopted them (no event says so).
ADOPTION_WAIT = 2.0

IKEV1 = "1"


@dataclass(slots=True)
class Traffic:
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0

    def add(self, other: Traffic) -> None:
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.packets_in += other.packets_in
        self.packets_out += other.packets_out

    def raise_to(self, other: Traffic) -> Traffic:
        """Take the larger of each count (counts of one SA only grow); return the growth."""
        growth = Traffic(
            max(0, other.bytes_in - self.bytes_in),
            max(0, other.bytes_out - self.bytes_out),
            max(0, other.packets_in - self.packets_in),
            max(0, other.packets_out - self.packets_out),
        )
        self.add(growth)
        return growth

    def copy(self) -> Traffic:
        return Traffic(self.bytes_in, self.bytes_out, self.packets_in, self.packets_out)

    @property
    def zero(self) -> bool:
        return not (self.bytes_in or self.bytes_out or self.packets_in or self.packets_out)

    @classmethod
    def of(cls, child: ChildSA) -> Traffic:
        return cls(child.bytes_in, child.bytes_out, child.packets_in, child.packets_out)


@dataclass(slots=True)
class LiveIke:
    conn: str
    user: str
    remote_host: str
    seen_at: float
    version: str = ""

    @property
    def key(self) -> PeerKey:
        return (self.conn, "", self.user, self.remote_host)


@dataclass(slots=True)
class LiveChild:
    conn: str
    child: str
    ike_uniqueid: str
    user: str
    remote_host: str
    seen_at: float
    traffic: Traffic = field(default_factory=Traffic)
    #: Already replaced by a rekey: when it goes, that is no event of its own.
    replaced: bool = False
    #: The IKE version of its IKE SA ("1", "2"), which decides how its end is classified.
    version: str = ""

    @property
    def key(self) -> PeerKey:
        return (self.conn, self.child, self.user, self.remote_host)


@dataclass(slots=True)
class EndedChild:
    """A CHILD SA that is over, kept a while so late reports of it are recognised."""

    conn: str
    child: str
    user: str
    ended_at: float
    traffic: Traffic


@dataclass(slots=True)
class EndedIke:
    """An IKE SA that is over (a tombstone): late reports of it are recognised, and an SA
    established after it under the same uniqueid is a restarted charon's."""

    at: float
    wall: float


@dataclass(slots=True)
class PendingDown:
    key: PeerKey
    at: float
    wall: float


@dataclass(slots=True)
class HeldIke:
    """An IKEv1 IKE SA that went away with CHILD SAs under it while a newer IKE SA of the
    same peer was up: adopted (a reauthentication) or dropped, decided by what follows."""

    live: LiveIke
    at: float
    wall: float


class LedgerReadings(Protocol):
    """What a scrape reads of the ledger: counts and totals, nothing that changes it (the
    owner of charon's live view, `view.CharonView`, is the one that drives the ledger)."""

    @property
    def ike_events(self) -> Mapping[tuple[str, str], int]: ...
    @property
    def child_events(self) -> Mapping[tuple[str, str, str], int]: ...
    @property
    def last_change(self) -> Mapping[str, float]: ...
    @property
    def untracked(self) -> int: ...
    def traffic_totals(self) -> dict[tuple[str, str], Traffic]: ...
    def user_totals(self) -> dict[tuple[str, str], Traffic]: ...


class SaLedger:
    def __init__(
        self,
        reauth_grace: float = 10.0,
        user_idle_seconds: float = 3600.0,
        tombstone_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_sas: int = 10000,
    ) -> None:
        self.reauth_grace = reauth_grace
        #: The most live IKE SAs tracked (a reload may change it; what is tracked stays).
        self.max_sas = max_sas
        #: IKE SAs announced (ike-updown, ike-rekey, a listing) while `max_sas` were
        #: tracked, so left out; a listing counts each such SA again.
        self.untracked = 0
        self.user_idle_seconds = user_idle_seconds
        self.tombstone_seconds = tombstone_seconds
        self.clock = clock
        self._wall = wall_clock
        self.ike: dict[str, LiveIke] = {}
        self.children: dict[str, LiveChild] = {}
        # Indexes, so that no event costs a scan of every SA (thousands of users).
        self._ike_by_peer: dict[PeerKey, set[str]] = defaultdict(set)
        self._children_of: dict[str, set[str]] = defaultdict(set)
        # Tombstones in the order they were made, so expiry pops from the front.
        self._ended_ike: OrderedDict[str, EndedIke] = OrderedDict()
        self._ended_children: OrderedDict[str, EndedChild] = OrderedDict()
        self._pending: dict[PeerKey, list[PendingDown]] = defaultdict(list)
        #: IKEv1 IKE SAs gone with CHILD SAs under them, by uniqueid (see ADOPTION_WAIT).
        self._held: dict[str, HeldIke] = {}
        #: Live IKEv1 IKE SAs whose CHILD SAs a newer IKE SA took over (listing or event).
        self._adopted: set[str] = set()
        #: (when, uniqueid) of recent ups per peer: a replacement is another SA's up.
        self._recent_ups: dict[PeerKey, list[tuple[float, str]]] = defaultdict(list)
        self._last_tick = float("-inf")
        self._baseline = False
        self._charon_start: float | None = None
        self.ike_events: dict[tuple[str, str], int] = {}
        self.child_events: dict[tuple[str, str, str], int] = {}
        self.last_change: dict[str, float] = {}
        #: Traffic of CHILD SAs that ended, per (conn, child) and per (conn, user).
        self._ended_traffic: dict[tuple[str, str], Traffic] = {}
        self._user_ended: dict[tuple[str, str], Traffic] = {}
        # When each user last moved traffic or ended a CHILD SA, least recent first.
        self._user_active: OrderedDict[tuple[str, str], float] = OrderedDict()

    # ---- classification -------------------------------------------------------------

    def _count(self, key: PeerKey, event: str, wall: float | None = None) -> None:
        conn, child = key[0], key[1]
        if child:
            ckey = (conn, child, event)
            self.child_events[ckey] = self.child_events.get(ckey, 0) + 1
            return
        self.ike_events[(conn, event)] = self.ike_events.get((conn, event), 0) + 1
        if event != "rekey":
            self.last_change[conn] = self._wall() if wall is None else wall

    def _went_up(self, key: PeerKey, uniqueid: str) -> None:
        pending = self._pending.get(key)
        if pending:
            pending.pop(0)
            self._count(key, "rekey")  # it came back: a reauthentication
            return
        self._recent_ups[key].append((self.clock(), uniqueid))
        self._count(key, "up")

    def _went_down(
        self,
        key: PeerKey,
        uniqueid: str,
        replaced: bool = False,
        certain: bool = False,
        version: str = "",
        wall: float | None = None,
    ) -> None:
        """`certain`: a drop no reauthentication can explain (charon restarted, the peer
        died).
        `version`: the SA's IKE version; an IKEv1 SA is never replaced after it went."""
        now = self.clock()
        if replaced:
            self._count(key, "rekey")
            return
        if certain:
            self._count(key, "down", wall)
            return
        ups = self._recent_ups.get(key, [])
        live = self.children if key[1] else self.ike
        for i, (at, up_id) in enumerate(ups):
            # A replacement is up still: one that came up and went (or was rekeyed into
            # another) since replaces nothing.
            if up_id != uniqueid and now - at <= self.reauth_grace and up_id in live:
                del ups[i]
                self._count(key, "rekey")  # a replacement came up just before
                return
        if self.reauth_grace <= 0 or version == IKEV1:
            self._count(key, "down", wall)
        else:
            self._pending[key].append(PendingDown(key, now, self._wall()))

    def _forget_recent_up(self, key: PeerKey, uniqueid: str) -> None:
        """`uniqueid`'s up replaced an SA: it cannot replace another one too."""
        ups = self._recent_ups.get(key)
        if ups:
            ups[:] = [u for u in ups if u[1] != uniqueid]

    def _maybe_tick(self) -> None:
        # Once a second is enough: ticking after every event made a storm quadratic.
        if self.clock() - self._last_tick >= 1.0:
            self.tick()

    def tick(self) -> None:
        """Count the drops whose grace time is over; forget what is too old to matter."""
        now = self._last_tick = self.clock()
        for uniqueid in [u for u, held in self._held.items() if now - held.at >= ADOPTION_WAIT]:
            self._resolve_held(uniqueid, adopted=True)  # no down event of its CHILD SAs came
        for key in list(self._pending):
            entries = self._pending[key]
            while entries and now - entries[0].at >= self.reauth_grace:
                due = entries.pop(0)
                self._count(key, "down", wall=due.wall)
            if not entries:
                del self._pending[key]
        for key in list(self._recent_ups):
            fresh = [u for u in self._recent_ups[key] if now - u[0] <= self.reauth_grace]
            if fresh:
                self._recent_ups[key] = fresh
            else:
                del self._recent_ups[key]
        horizon = now - self.tombstone_seconds
        while self._ended_ike and next(iter(self._ended_ike.values())).at < horizon:
            self._ended_ike.popitem(last=False)
        while self._ended_children and next(iter(self._ended_children.values())).ended_at < horizon:
            self._ended_children.popitem(last=False)
        self._forget_users(now - self.user_idle_seconds)

    def _forget_users(self, idle: float) -> None:
        """Forget users idle since before `idle`, and beyond the cap the longest idle, as
        long as no live CHILD SA of theirs is left."""
        users = self._user_active
        cap = CHILDREN_PER_SA * self.max_sas
        if not users or (next(iter(users.values())) >= idle and len(users) <= cap):
            return  # the usual case; no need to gather thousands of live users
        live_users = {(c.conn, c.user) for c in self.children.values()}
        for user, last in list(users.items()):
            if last >= idle and len(users) <= cap:
                break
            if user in live_users:
                # Still connected: not idle whatever the clock (its CHILD SA's end
                # touches it again); to the back, so the front stays the longest idle.
                self._touch(user)
            else:
                del users[user]
                self._user_ended.pop(user, None)

    # ---- IKE SAs --------------------------------------------------------------------

    def _full(self, ike_uniqueid: str) -> bool:
        """An IKE SA the ledger does not know of, and has no room for."""
        return (
            ike_uniqueid not in self.ike
            and ike_uniqueid not in self._ended_ike
            and len(self.ike) >= self.max_sas
        )

    def _ike_up(self, sa: IkeSA, count: bool, announced: bool = True) -> None:
        """`announced`: the SA's own announcement (not a CHILD SA's event naming it), the
        one that counts it as untracked when there is no room."""
        if sa.uniqueid in self.ike or sa.uniqueid in self._ended_ike:
            return
        if len(self.ike) >= self.max_sas:
            self.untracked += announced
            return
        live = LiveIke(sa.conn, sa.user, sa.remote_host, self.clock(), sa.version)
        self.ike[sa.uniqueid] = live
        self._ike_by_peer[live.key].add(sa.uniqueid)
        if count:
            self._went_up(live.key, sa.uniqueid)

    def _ike_down(self, uniqueid: str, certain: bool = False) -> None:
        adopted = uniqueid in self._adopted
        live = self._pop_ike(uniqueid)
        if uniqueid in self._ended_ike:
            return
        self._tombstone_ike(uniqueid)
        children = sorted(self._children_of.get(uniqueid, ()))
        if live is not None and not certain:
            successor = self._successor(uniqueid, live)
            if live.version == IKEV1:
                if adopted:
                    # Reauthenticated: a newer IKE SA took its CHILD SAs (a listing or an
                    # event of theirs said so); any still under it in our view go too.
                    self._adopt(uniqueid, live, successor)
                    return
                if successor is not None and children:
                    self._held[uniqueid] = HeldIke(live, self.clock(), self._wall())
                    return
            elif successor is not None and not children:
                # IKEv2 make-before-break reauthentication: the new IKE SA and CHILD SAs
                # came up first, the old CHILD SAs went before their IKE SA.
                self._went_down(live.key, uniqueid, replaced=True)
                return
        for child_id in children:
            self._child_end(child_id, None, "down", certain)
        if live is not None:
            self._went_down(live.key, uniqueid, certain=certain, version=live.version)

    def _adopt(self, uniqueid: str, live: LiveIke, successor: str | None) -> None:
        """An IKEv1 IKE SA that went away reauthenticated: one rekey; CHILD SAs the ledger
        still holds under it move to the successor (or, without one, end as drops)."""
        for child_id in sorted(self._children_of.get(uniqueid, ())):
            if successor is not None:
                self._move_child(child_id, successor)
            else:
                self._child_end(child_id, None, "down")
        if successor is not None:
            self._forget_recent_up(live.key, successor)
        self._went_down(live.key, uniqueid, replaced=True)

    def _resolve_held(self, uniqueid: str, adopted: bool) -> None:
        """Decide a held IKEv1 IKE SA: its CHILD SAs were adopted, or it dropped."""
        held = self._held.pop(uniqueid, None)
        if held is None:
            return
        successor = self._successor(uniqueid, held.live) if adopted else None
        if successor is not None:
            self._adopt(uniqueid, held.live, successor)
            return
        # It died with its CHILD SAs (a dead peer, charon's own delete): drops, even if
        # another SA of the same peer came up just before (a restarted client, a second
        # device behind the same NAT address).
        for child_id in sorted(self._children_of.get(uniqueid, ())):
            self._child_end(child_id, None, "down", certain=True)
        self._went_down(held.live.key, uniqueid, certain=True, wall=held.wall)

    def _tombstone_ike(self, uniqueid: str) -> None:
        self._ended_ike[uniqueid] = EndedIke(self.clock(), self._wall())
        if len(self._ended_ike) > self.max_sas:
            self._ended_ike.popitem(last=False)

    def _successor(self, uniqueid: str, old: LiveIke) -> str | None:
        """A newer IKE SA of the same peer that is up, if any: with IKEv1, charon moves the
        CHILD SAs of a reauthenticated IKE SA to the new one and lets the old one linger."""
        for other_id in self._ike_by_peer.get(old.key, ()):
            other = self.ike[other_id]
            if other_id != uniqueid and other.seen_at > old.seen_at:
                return other_id
        return None

    def _pop_ike(self, uniqueid: str) -> LiveIke | None:
        self._adopted.discard(uniqueid)
        live = self.ike.pop(uniqueid, None)
        if live is not None:
            peers = self._ike_by_peer[live.key]
            peers.discard(uniqueid)
            if not peers:
                del self._ike_by_peer[live.key]
        return live

    def _move_child(self, child_id: str, ike_uniqueid: str) -> None:
        live = self.children[child_id]
        old = live.ike_uniqueid
        if old == ike_uniqueid:
            return
        self._unindex_child(child_id, live)
        live.ike_uniqueid = ike_uniqueid
        self._children_of[ike_uniqueid].add(child_id)
        if old in self.ike and self.ike[old].version == IKEV1:
            self._adopted.add(old)  # a reauthentication: counted when the old one goes
        elif old in self._held:
            self._resolve_held(old, adopted=True)

    def _unindex_child(self, child_id: str, live: LiveChild) -> None:
        siblings = self._children_of.get(live.ike_uniqueid)
        if siblings is not None:
            siblings.discard(child_id)
            if not siblings:
                del self._children_of[live.ike_uniqueid]

    # ---- CHILD SAs ------------------------------------------------------------------

    def _child_up(self, sa: IkeSA, child: ChildSA, count: bool) -> None:
        replaced = child.state == "REKEYED"
        live = self.children.get(child.uniqueid)
        if live is not None:
            self._move_child(child.uniqueid, sa.uniqueid)  # adopted by a reauthenticated SA
            self._child_traffic(live, Traffic.of(child))
            if replaced and not live.replaced:
                live.replaced = True  # its rekey event was missed
                self._count(live.key, "rekey")
            return
        if child.uniqueid in self._ended_children:
            self._late_report(child.uniqueid, Traffic.of(child))
            return
        if self._full(sa.uniqueid):
            return  # the CHILD SA of an untracked IKE SA
        if len(self.children) >= CHILDREN_PER_SA * self.max_sas:
            self.untracked += 1
            return
        live = LiveChild(sa.conn, child.name, sa.uniqueid, sa.user, sa.remote_host, self.clock())
        live.replaced = replaced
        live.version = sa.version
        self.children[child.uniqueid] = live
        self._children_of[sa.uniqueid].add(child.uniqueid)
        self._child_traffic(live, Traffic.of(child))
        if count and not replaced:
            self._went_up(live.key, child.uniqueid)

    def _child_traffic(self, live: LiveChild, seen: Traffic) -> None:
        if not live.traffic.raise_to(seen).zero:
            self._touch((live.conn, live.user))

    def _child_end(
        self, uniqueid: str, final: Traffic | None, event: str, certain: bool = False
    ) -> None:
        """Move a live CHILD SA's counts to the ended totals; classify it once."""
        held = self.children.get(uniqueid)
        if held is not None and held.ike_uniqueid in self._held and event != "rekey":
            # A CHILD SA of a held IKEv1 IKE SA ended under it: not adopted, a drop.
            self._resolve_held(held.ike_uniqueid, adopted=False)
        if uniqueid in self._ended_children:
            if final is not None:
                self._late_report(uniqueid, final)
            return
        live = self.children.pop(uniqueid, None)
        if live is None:
            return
        self._unindex_child(uniqueid, live)
        if final is not None:
            live.traffic.raise_to(final)
        self._ended_children[uniqueid] = EndedChild(
            live.conn, live.child, live.user, self.clock(), live.traffic.copy()
        )
        if len(self._ended_children) > CHILDREN_PER_SA * self.max_sas:
            self._ended_children.popitem(last=False)
        self._add_ended(live.conn, live.child, live.user, live.traffic)
        if live.replaced:
            return
        if event == "rekey":
            self._count(live.key, "rekey")
        else:
            self._went_down(live.key, uniqueid, certain=certain, version=live.version)

    def _late_report(self, uniqueid: str, seen: Traffic) -> None:
        """Counts of an SA that already ended (a rekeyed SA lingers until deleted)."""
        ended = self._ended_children[uniqueid]
        self._add_ended(ended.conn, ended.child, ended.user, ended.traffic.raise_to(seen))

    def _add_ended(self, conn: str, child: str, user: str, traffic: Traffic) -> None:
        self._ended_traffic.setdefault((conn, child), Traffic()).add(traffic)
        self._user_ended.setdefault((conn, user), Traffic()).add(traffic)
        self._touch((conn, user))

    def _touch(self, user: tuple[str, str]) -> None:
        self._user_active[user] = self.clock()
        self._user_active.move_to_end(user)

    # ---- inputs ---------------------------------------------------------------------

    def apply(self, event: CharonEvent) -> None:
        """One event of charon's stream, decoded (`charon_events.decode_event`)."""
        match event:
            case IkeUp(sas):
                if any(self._reused(sa, announced=True) for sa in sas):
                    # Its start time comes with the next listing.
                    self._charon_restarted(start=None)
                for sa in sas:
                    self._ike_up(sa, count=True)
            case IkeDown(sas):
                for sa in sas:
                    # Gone while ESTABLISHED: no delete from the peer (a dead peer found by
                    # DPD, a timeout), so no reauthentication either.
                    died = sa.state == "ESTABLISHED"
                    for child in sa.children:
                        self._child_end(child.uniqueid, Traffic.of(child), "down", died)
                    self._ike_down(sa.uniqueid, certain=died)
            case ChildUp(sas):
                for sa in sas:
                    self._ike_up(sa, count=False, announced=False)  # its ike-updown counts it
                    for child in sa.children:
                        self._child_up(sa, child, count=True)
            case ChildDown(sas):
                for sa in sas:
                    self._ike_up(sa, count=False, announced=False)
                    for child in sa.children:
                        self._child_moved(child.uniqueid, sa.uniqueid)
                        self._child_end(child.uniqueid, Traffic.of(child), "down")
            case IkeRekey(pairs):
                self._apply_ike_rekey(pairs)
            case ChildRekey(pairs):
                self._apply_child_rekey(pairs)
        self._maybe_tick()

    def _child_moved(self, child_id: str, ike_uniqueid: str) -> None:
        """An event names a CHILD SA under another IKE SA than the ledger had: with IKEv1,
        charon moved it to a reauthenticated IKE SA."""
        live = self.children.get(child_id)
        if live is not None and live.ike_uniqueid != ike_uniqueid and ike_uniqueid in self.ike:
            self._move_child(child_id, ike_uniqueid)

    def _apply_ike_rekey(self, pairs: Iterable[tuple[IkeSA, IkeSA]]) -> None:
        for old, new_sa in pairs:
            old_id = old.uniqueid
            previous = self._pop_ike(old_id)
            self._tombstone_ike(old_id)
            self._ike_up(new_sa, count=False)
            if previous is not None and new_sa.uniqueid in self.ike:
                self.ike[new_sa.uniqueid].seen_at = previous.seen_at
            for child_id in sorted(self._children_of.get(old_id, ())):
                self._move_child(child_id, new_sa.uniqueid)
            self._count((new_sa.conn, "", new_sa.user, new_sa.remote_host), "rekey")

    def _apply_child_rekey(self, pairs: Iterable[tuple[RekeyedChild, RekeyedChild]]) -> None:
        for old, new in pairs:
            if old is None or new is None:
                continue
            sa, old_child = old
            self._ike_up(sa, count=False, announced=False)
            if old_child.uniqueid not in self.children:
                # Rekey of a CHILD SA we had not seen yet: track it to account its bytes.
                self._child_up(sa, old_child, count=False)
            self._child_end(old_child.uniqueid, Traffic.of(old_child), "rekey")
            self._child_up(new[0], new[1], count=False)

    def reconcile(
        self, sas: Iterable[IkeSA], listed_after: float, charon_start: float | None = None
    ) -> None:
        """Bring the ledger in line with a `list-sas` answer.

        `listed_after` is the ledger clock just before the listing was asked for: an SA
        the ledger learned of later may legitimately be missing from it. `charon_start`
        (from `stats`) tells a restarted charon, whose uniqueids start again from 1.
        The first listing is the baseline: what it shows was up before we looked.
        """
        if charon_start is not None:
            if self._charon_start is None:
                self._charon_start = charon_start
            elif abs(charon_start - self._charon_start) > START_TIME_JITTER_SECONDS:
                self._charon_restarted(charon_start)
        sas = list(sas)
        if any(self._reused(sa, announced=False) for sa in sas):
            self._charon_restarted(charon_start)
        count = self._baseline
        seen_ike: set[str] = set()
        seen_children: set[str] = set()
        for sa in sas:
            if sa.state in IKE_UP_STATES or sa.uniqueid in self.ike:
                seen_ike.add(sa.uniqueid)
                self._ike_up(sa, count=count)
            for child in sa.children:
                if child.state in CHILD_UP_STATES or child.uniqueid in self.children:
                    seen_children.add(child.uniqueid)
                    self._child_up(sa, child, count=count)
                elif child.uniqueid in self._ended_children:
                    self._late_report(child.uniqueid, Traffic.of(child))
        for child_id, live in list(self.children.items()):
            if child_id not in seen_children and live.seen_at < listed_after:
                self._child_end(child_id, None, "down")
        for ike_id, ike in list(self.ike.items()):
            if ike_id not in seen_ike and ike.seen_at < listed_after:
                self._ike_down(ike_id)
        self._baseline = True
        self.tick()
        self._compact()

    def _compact(self) -> None:
        """A dict keeps the table it grew to when its entries go (after a flood of SAs that
        a listing removed, hundreds of bytes per SA that was): once per listing, copy the
        per-SA dicts that are far larger than what they hold."""
        self.ike = _compacted(self.ike)
        self.children = _compacted(self.children)
        self._ike_by_peer = _compacted(self._ike_by_peer)
        self._children_of = _compacted(self._children_of)
        self._ended_ike = _compacted(self._ended_ike)
        self._ended_children = _compacted(self._ended_children)
        self._pending = _compacted(self._pending)
        self._recent_ups = _compacted(self._recent_ups)
        self._user_active = _compacted(self._user_active)
        self._user_ended = _compacted(self._user_ended)

    def _reused(self, sa: IkeSA, announced: bool) -> bool:
        """Whether `sa` is another IKE SA than the one the ledger knew by its uniqueid:
        charon counts uniqueids from 1 again after a restart, and a restart within
        START_TIME_JITTER_SECONDS of the last start does not show in `stats`.

        `announced`: `sa` comes from its own ike-updown up event, which charon sends once
        per IKE SA, so one for an SA that already ended is a new SA; a listing may still
        show an ended SA (it was asked for before the SA went), so there only an SA
        established clearly after the old one ended is a new one."""
        live = self.ike.get(sa.uniqueid)
        if live is not None:
            return live.conn != sa.conn  # an SA never changes its connection
        ended = self._ended_ike.get(sa.uniqueid)
        if ended is None:
            return False
        if announced:
            return True
        return (
            sa.state in IKE_UP_STATES
            and sa.established_at is not None
            and sa.established_at > ended.wall + START_TIME_JITTER_SECONDS
        )

    def _charon_restarted(self, start: float | None) -> None:
        """Every SA of the old charon is gone (each a drop, counted once), and uniqueids
        start again from 1: old tombstones must not hide the new charon's SAs. `start`:
        the new charon's start time, the baseline for the next listings (None: unknown
        yet, the next listing's is taken)."""
        self._charon_start = start
        for child_id in list(self.children):
            self._child_end(child_id, None, "down", certain=True)
        for ike_id in list(self.ike):
            self._ike_down(ike_id, certain=True)
        for ike_id in list(self._held):
            self._resolve_held(ike_id, adopted=False)
        self._ended_ike.clear()
        self._ended_children.clear()

    def observe(self, seen: Mapping[str, Traffic]) -> None:
        """Fresher counts of live CHILD SAs, by CHILD SA uniqueid (the kernel's XFRM
        states read at a scrape: the numbers charon itself would list); counts only grow,
        and uniqueids the ledger does not hold are ignored; an ended (rekeyed) CHILD SA's
        counts are taken like a listing's late report of it."""
        for uniqueid, traffic in seen.items():
            live = self.children.get(uniqueid)
            if live is not None:
                self._child_traffic(live, traffic)
            elif uniqueid in self._ended_children:
                # Rekeyed, still in the kernel (IKEv1 keeps the old CHILD SA until the
                # peer deletes it): what it carried since its rekey event counts too.
                self._late_report(uniqueid, traffic)

    # ---- outputs --------------------------------------------------------------------

    def traffic_totals(self) -> dict[tuple[str, str], Traffic]:
        """Per (conn, child): traffic of ended CHILD SAs plus the live ones' counts."""
        totals = {key: t.copy() for key, t in self._ended_traffic.items()}
        for child in self.children.values():
            _add_to(totals, (child.conn, child.child), child.traffic)
        return totals

    def user_totals(self) -> dict[tuple[str, str], Traffic]:
        """Per (conn, user), the same sum; users idle for `user_idle_seconds` are gone."""
        totals = {key: t.copy() for key, t in self._user_ended.items()}
        for child in self.children.values():
            _add_to(totals, (child.conn, child.user), child.traffic)
        return totals


#: Bytes per entry above which `_compacted` copies a dict (a fresh one takes 30-100).
_SPARSE_BYTES_PER_ENTRY = 400


_Dict = TypeVar("_Dict", bound=dict[Any, Any])


def _compacted(d: _Dict) -> _Dict:
    """`d`, or a copy sized for its entries when `d` is mostly empty table."""
    if sys.getsizeof(d) <= 4096 + _SPARSE_BYTES_PER_ENTRY * len(d):
        return d
    if isinstance(d, defaultdict):
        return defaultdict(d.default_factory, d)  # type: ignore[return-value]
    return type(d)(d)


def _add_to(totals: dict[tuple[str, str], Traffic], key: tuple[str, str], t: Traffic) -> None:
    # Called once per live CHILD SA per scrape: no throw-away Traffic for the usual
    # first (and only) SA of a key.
    total = totals.get(key)
    if total is None:
        totals[key] = t.copy()
    else:
        total.add(t)
