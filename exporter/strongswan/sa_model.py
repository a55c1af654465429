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


class SaModel:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.sas: dict[str, IkeSA] = {}
        #: When the last listing replaced the model (None: never).
        self.listed_at: float | None = None

    def replace(self, sas: Iterable[IkeSA], listed_at: float) -> None:
        self.sas = {sa.uniqueid: sa for sa in sas}
        self.listed_at = listed_at

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
                    self.sas.pop(sa.uniqueid, None)
        elif name == "child-updown":
            for sa in parse_ike_sas([body], now):
                for child in sa.children:
                    if up:
                        self._put_child(sa, child)
                    else:
                        self._drop_child(sa.uniqueid, child.uniqueid)
        elif name == "ike-rekey":
            for old, new in parse_ike_rekeys(body, now):
                previous = self.sas.pop(old.uniqueid, None)
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
        for other in list(self.sas.values()):
            if (
                other.uniqueid != sa.uniqueid
                and other.version == "1"
                and (other.conn, other.remote_host, other.remote_id, other.user)
                == (sa.conn, sa.remote_host, sa.remote_id, sa.user)
                and other.children
            ):
                adopted += other.children
                self.sas[other.uniqueid] = dataclasses.replace(other, children=())
        return dataclasses.replace(sa, children=tuple(adopted)) if adopted else sa

    def _put(self, sa: IkeSA) -> None:
        known = self.sas.get(sa.uniqueid)
        if known is not None and not sa.children:
            sa = dataclasses.replace(sa, children=known.children)
        self.sas[sa.uniqueid] = sa

    def _put_child(self, sa: IkeSA, child: ChildSA) -> None:
        known = self.sas.get(sa.uniqueid, dataclasses.replace(sa, children=()))
        others = tuple(c for c in known.children if c.uniqueid != child.uniqueid)
        # The event's IKE fields are the freshest (state, identities).
        self.sas[sa.uniqueid] = dataclasses.replace(sa, children=(*others, child))

    def _drop_child(self, ike_uniqueid: str, child_uniqueid: str) -> None:
        known = self.sas.get(ike_uniqueid)
        if known is not None:
            children = tuple(c for c in known.children if c.uniqueid != child_uniqueid)
            self.sas[ike_uniqueid] = dataclasses.replace(known, children=children)
