"""charon's events, decoded once into what the SA table and the ledger consume.

The event stream decodes each event frame (a name and its message) into one of these
typed events with the pure parsers of `parse`, and hands the same object to every
consumer: nothing after it dispatches on event names or reads a raw message. A frame
whose name is none of `EVENTS` decodes to None.

Times in the SAs (established, installed) are absolute: the decoder's `now` minus the
ages charon reports, as in a listing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.strongswan.parse import (
    RekeyedChild,
    parse_child_rekeys,
    parse_ike_rekeys,
    parse_ike_sas,
)
from exporter.strongswan.snapshot import IkeSA

#: The events the stream registers for.
EVENTS = ("ike-updown", "child-updown", "ike-rekey", "child-rekey")


@dataclass(frozen=True, slots=True)
class IkeUp:
    """`ike-updown`, up: IKE SAs established (with the CHILD SAs charon names)."""

    sas: tuple[IkeSA, ...]


@dataclass(frozen=True, slots=True)
class IkeDown:
    """`ike-updown`, down: IKE SAs gone, with their CHILD SAs' final counts."""

    sas: tuple[IkeSA, ...]


@dataclass(frozen=True, slots=True)
class ChildUp:
    """`child-updown`, up: each IKE SA with the CHILD SAs that were installed."""

    sas: tuple[IkeSA, ...]


@dataclass(frozen=True, slots=True)
class ChildDown:
    """`child-updown`, down: each IKE SA with the CHILD SAs that went, final counts."""

    sas: tuple[IkeSA, ...]


@dataclass(frozen=True, slots=True)
class IkeRekey:
    """`ike-rekey`: (old, new) IKE SAs; unreadable pairs are left out."""

    pairs: tuple[tuple[IkeSA, IkeSA], ...]


@dataclass(frozen=True, slots=True)
class ChildRekey:
    """`child-rekey`: (old, new) CHILD SAs, each with its IKE SA, or None when that half
    could not be read."""

    pairs: tuple[tuple[RekeyedChild, RekeyedChild], ...]


CharonEvent = IkeUp | IkeDown | ChildUp | ChildDown | IkeRekey | ChildRekey


def decode_event(name: str, message: Mapping[str, Any], now: float) -> CharonEvent | None:
    """One event frame as a typed event (None: not an event the exporter reads)."""
    up = message.get("up") == "yes"
    body = {k: v for k, v in message.items() if isinstance(v, Mapping)}
    if name == "ike-updown":
        sas = parse_ike_sas([body], now)
        return IkeUp(sas) if up else IkeDown(sas)
    if name == "child-updown":
        sas = parse_ike_sas([body], now)
        return ChildUp(sas) if up else ChildDown(sas)
    if name == "ike-rekey":
        return IkeRekey(tuple(parse_ike_rekeys(body, now)))
    if name == "child-rekey":
        return ChildRekey(tuple(parse_child_rekeys(body, now)))
    return None
