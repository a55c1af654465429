"""The daemon's picture of charon's SAs, kept current by events between listings.

A full `list-sas` costs charon seconds at thousands of SAs, so the daemon asks for one
only now and then (`--collector.strongswan.refresh-interval`); in between, the event
stream's up/down/rekey events, which carry the SA's fields, keep this table current. A
listing replaces the table wholesale, which also repairs anything an event missed.

Events can announce new SAs without end (a flood of `ike-updown` ups of 130,000 SAs grew
the exporter by 270 MB in a minute), so the table holds at most `max_sas` IKE SAs and
`2 * max_sas` CHILD SAs: an SA announced beyond that is counted in `untracked` and left
out until SAs go and make room.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from exporter.strongswan.charon_events import (
    CharonEvent,
    ChildDown,
    ChildRekey,
    ChildUp,
    IkeDown,
    IkeRekey,
    IkeUp,
)
from exporter.strongswan.snapshot import ChildSA, IkeSA

#: What an IKEv1 reauthentication keeps: (connection, remote host, remote id, user).
Peer = tuple[str, str, str, str]


def _peer(sa: IkeSA) -> Peer:
    return (sa.conn, sa.remote_host, sa.remote_id, sa.user)


#: CHILD SAs the table holds per IKE SA it may hold: IKEv1 keeps a rekeyed CHILD SA listed
#: (REKEYED) next to its successor until it expires.
CHILDREN_PER_SA = 2


class SaTable:
    def __init__(self, max_sas: int = 10000) -> None:
        #: The most IKE SAs held (a reload may change it; what is held stays).
        self.max_sas = max_sas
        #: IKE SAs (and CHILD SAs beyond their own cap) left out because the table was full.
        self.untracked = 0
        #: CHILD SAs held, over every IKE SA.
        self.children = 0
        self.sas: dict[str, IkeSA] = {}
        # The uniqueids of each peer's IKE SAs (a dict as an ordered set, in the order of
        # `sas`), so an IKEv1 up does not scan thousands of SAs for the one it replaces.
        self._by_peer: dict[Peer, dict[str, None]] = {}
        #: When the last listing replaced the table (None: never).
        self.listed_at: float | None = None
        #: Events applied since a listing was asked for, replayed onto its answer (None:
        #: no listing under way, or more events came than the journal holds).
        self._journal: list[CharonEvent] | None = None

    def begin_listing(self) -> None:
        """A `list-sas` is being asked for: charon may list an SA before or after an event
        that arrives meanwhile, so `replace` replays those events onto the listing. (Without
        this, an IKE SA that came up while charon listed it as CONNECTING stayed CONNECTING
        until the next listing, minutes later.)"""
        self._journal = []

    def abandon_listing(self) -> None:
        """The listing failed: nothing to replay onto."""
        self._journal = None

    def replace(self, sas: Iterable[IkeSA], listed_at: float) -> None:
        """The table becomes the listing, with the events since `begin_listing` replayed
        onto it (each is idempotent for an SA the listing already shows in its later
        state); beyond `max_sas`, the SAs it held come first (so a full table does not
        swap one set of SAs for another at every listing)."""
        held, self.sas, self._by_peer, self.children = self.sas, {}, {}, 0
        listed = list(sas)
        listed.sort(key=lambda sa: sa.uniqueid not in held)  # stable: charon's order
        for sa in listed:
            self._set(sa)
        self.listed_at = listed_at
        journal, self._journal = self._journal, None
        for event in journal or ():
            self._apply(event)

    def _set(self, sa: IkeSA) -> bool:
        """The one way into `sas`, keeping `_by_peer` and the counts in step; False (and
        counted as untracked) when the table is full."""
        known = self.sas.get(sa.uniqueid)
        if known is None and len(self.sas) >= self.max_sas:
            self.untracked += 1
            return False
        held = len(known.children) if known is not None else 0
        room = CHILDREN_PER_SA * self.max_sas - (self.children - held)
        if len(sa.children) > room:
            self.untracked += len(sa.children) - max(room, 0)
            sa = dataclasses.replace(sa, children=sa.children[: max(room, 0)])
        if known is not None and _peer(known) != _peer(sa):
            self._unindex(known)
        self.sas[sa.uniqueid] = sa
        self.children += len(sa.children) - held
        self._by_peer.setdefault(_peer(sa), {})[sa.uniqueid] = None
        return True

    def _remove(self, uniqueid: str) -> IkeSA | None:
        """The one way out of `sas`."""
        sa = self.sas.pop(uniqueid, None)
        if sa is not None:
            self.children -= len(sa.children)
            self._unindex(sa)
        return sa

    def _unindex(self, sa: IkeSA) -> None:
        peers = self._by_peer.get(_peer(sa), {})
        peers.pop(sa.uniqueid, None)
        if not peers:
            self._by_peer.pop(_peer(sa), None)

    def ike_sas(self) -> tuple[IkeSA, ...]:
        return tuple(self.sas.values())

    def apply(self, event: CharonEvent) -> None:
        """One event of charon's stream, decoded (`charon_events.decode_event`)."""
        journal = self._journal
        if journal is not None:
            # A flood during a slow listing must not grow the journal without end: past
            # `max_sas` events the listing is taken as it comes (the next one repairs).
            if len(journal) < max(self.max_sas, 1):
                journal.append(event)
            else:
                self._journal = None
        self._apply(event)

    def _apply(self, event: CharonEvent) -> None:
        match event:
            case IkeUp(sas):
                for sa in sas:
                    self._put(self._adopt(sa))
            case IkeDown(sas):
                for sa in sas:
                    self._remove(sa.uniqueid)
            case ChildUp(sas):
                for sa in sas:
                    for child in sa.children:
                        self._put_child(sa, child)
            case ChildDown(sas):
                for sa in sas:
                    for child in sa.children:
                        self._drop_child(sa.uniqueid, child.uniqueid)
            case IkeRekey(pairs):
                for old, new in pairs:
                    previous = self._remove(old.uniqueid)
                    children = new.children or (previous.children if previous else ())
                    self._put(dataclasses.replace(new, children=children))
            case ChildRekey(pairs):
                for old_half, new_half in pairs:
                    if old_half is not None:
                        sa, old_child = old_half
                        if sa.version == "1":
                            # IKEv1 keeps the old CHILD SA listed as REKEYED until it
                            # expires (charon's delete_rekeyed = no).
                            self._put_child(sa, dataclasses.replace(old_child, state="REKEYED"))
                        else:
                            self._drop_child(sa.uniqueid, old_child.uniqueid)
                    if new_half is not None:
                        self._put_child(*new_half)

    def _adopt(self, sa: IkeSA) -> IkeSA:
        """An IKEv1 reauthentication: charon moves the CHILD SAs of the peer's older IKE SA
        to the new one without any event ("detected reauth of existing IKE_SA, adopting")
        and leaves the old one listed, empty."""
        if sa.version != "1" or sa.children:
            return sa
        adopted: list[ChildSA] = []
        for other_id in list(self._by_peer.get(_peer(sa), ())):
            other = self.sas[other_id]
            if other_id != sa.uniqueid and other.version == "1" and other.children:
                adopted += other.children
                self._set(dataclasses.replace(other, children=()))
        return dataclasses.replace(sa, children=tuple(adopted)) if adopted else sa

    def _put(self, sa: IkeSA) -> None:
        known = self.sas.get(sa.uniqueid)
        if known is not None and not sa.children:
            sa = dataclasses.replace(sa, children=known.children)
        self._set(sa)

    def _put_child(self, sa: IkeSA, child: ChildSA) -> None:
        if sa.uniqueid not in self.sas and len(self.sas) >= self.max_sas:
            return  # an untracked IKE SA's CHILD SA: its ike-updown counted it
        known = self.sas.get(sa.uniqueid, dataclasses.replace(sa, children=()))
        others = tuple(c for c in known.children if c.uniqueid != child.uniqueid)
        # The event's IKE fields are the freshest (state, identities).
        self._set(dataclasses.replace(sa, children=(*others, child)))

    def forget_rekeyed(self, gone: Iterable[tuple[str, str]]) -> None:
        """(IKE SA, CHILD SA) uniqueids of REKEYED CHILD SAs the kernel no longer holds:
        charon deleted them without an event (it sends none when a rekeyed CHILD SA goes),
        so only a listing would tell; a CHILD SA in any other state stays."""
        for ike_uniqueid, child_uniqueid in gone:
            known = self.sas.get(ike_uniqueid)
            if known is None:
                continue
            if any(c.uniqueid == child_uniqueid and c.state == "REKEYED" for c in known.children):
                self._drop_child(ike_uniqueid, child_uniqueid)

    def _drop_child(self, ike_uniqueid: str, child_uniqueid: str) -> None:
        known = self.sas.get(ike_uniqueid)
        if known is not None:
            children = tuple(c for c in known.children if c.uniqueid != child_uniqueid)
            self._set(dataclasses.replace(known, children=children))
