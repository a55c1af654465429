"""The daemon's picture of charon's SAs, kept current by events between listings.

A full `list-sas` costs charon seconds at thousands of SAs, so the daemon asks for one
only now and then (`--collector.strongswan.refresh-interval`); in between, the event
stream's up/down/rekey events, which carry the SA's fields, keep this model current. A
listing replaces the model wholesale, which also repairs anything an event missed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from exporter.strongswan.model import ChildSA, IkeSA
from exporter.strongswan.parse import parse_child_rekeys, parse_ike_rekeys, parse_ike_sas

#: What an IKEv1 reauthentication keeps: (connection, remote host, remote id, user).
Peer = tuple[str, str, str, str]


def _peer(sa: IkeSA) -> Peer:
    return (sa.conn, sa.remote_host, sa.remote_id, sa.user)


class SaModel:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.sas: dict[str, IkeSA] = {}
        # The uniqueids of each peer's IKE SAs (a dict as an ordered set, in the order of
        # `sas`), so an IKEv1 up does not scan thousands of SAs for the one it replaces.
        self._by_peer: dict[Peer, dict[str, None]] = {}
        #: When the last listing replaced the model (None: never).
        self.listed_at: float | None = None

    def replace(self, sas: Iterable[IkeSA], listed_at: float) -> None:
        self.sas, self._by_peer = {}, {}
        for sa in sas:
            self._set(sa)
        self.listed_at = listed_at

    def _set(self, sa: IkeSA) -> None:
        """The one way into `sas`, keeping `_by_peer` in step."""
        known = self.sas.get(sa.uniqueid)
        if known is not None and _peer(known) != _peer(sa):
            self._unindex(known)
        self.sas[sa.uniqueid] = sa
        self._by_peer.setdefault(_peer(sa), {})[sa.uniqueid] = None

    def _remove(self, uniqueid: str) -> IkeSA | None:
        """The one way out of `sas`."""
        sa = self.sas.pop(uniqueid, None)
        if sa is not None:
            self._unindex(sa)
        return sa

    def _unindex(self, sa: IkeSA) -> None:
        peers = self._by_peer.get(_peer(sa), {})
        peers.pop(sa.uniqueid, None)
        if not peers:
            self._by_peer.pop(_peer(sa), None)

    def ike_sas(self) -> tuple[IkeSA, ...]:
        return tuple(self.sas.values())

    def apply_event(self, name: str, message: Mapping[str, Any]) -> None:
        now = self._clock()
        up = message.get("up") == "yes"
        body = {k: v for k, v in message.items() if isinstance(v, Mapping)}
        if name == "ike-updown":
            for sa in parse_ike_sas([body], now):
                if up:
                    self._put(self._adopt(sa))
                else:
                    self._remove(sa.uniqueid)
        elif name == "child-updown":
            for sa in parse_ike_sas([body], now):
                for child in sa.children:
                    if up:
                        self._put_child(sa, child)
                    else:
                        self._drop_child(sa.uniqueid, child.uniqueid)
        elif name == "ike-rekey":
            for old, new in parse_ike_rekeys(body, now):
                previous = self._remove(old.uniqueid)
                children = new.children or (previous.children if previous else ())
                self._put(dataclasses.replace(new, children=children))
        elif name == "child-rekey":
            for old_half, new_half in parse_child_rekeys(body, now):
                if old_half is not None:
                    sa, old_child = old_half
                    if sa.version == "1":
                        # IKEv1 keeps the old CHILD SA listed as REKEYED until it expires
                        # (charon's delete_rekeyed = no).
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
        known = self.sas.get(sa.uniqueid, dataclasses.replace(sa, children=()))
        others = tuple(c for c in known.children if c.uniqueid != child.uniqueid)
        # The event's IKE fields are the freshest (state, identities).
        self._set(dataclasses.replace(sa, children=(*others, child)))

    def _drop_child(self, ike_uniqueid: str, child_uniqueid: str) -> None:
        known = self.sas.get(ike_uniqueid)
        if known is not None:
            children = tuple(c for c in known.children if c.uniqueid != child_uniqueid)
            self._set(dataclasses.replace(known, children=children))
