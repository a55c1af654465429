"""The SA table tracks at most `max_sas` IKE SAs, whatever the events announce (issue 14,
item 6): a flood of up events of new SAs, replayed from a real charon's recorded events
with fresh uniqueids, fills it to the cap and no further."""

from __future__ import annotations

import dataclasses
from typing import Any

from exporter.strongswan.charon_events import decode_event
from exporter.strongswan.parse import parse_ike_sas
from exporter.strongswan.sa_table import SaTable
from tests.hostile.fake_charon import flood_events
from tests.recordings import RECORDED_NOW

CAP = 100


def flooded(count: int, first: int = 1, up: bool = True, model: SaTable | None = None) -> SaTable:
    model = model or SaTable(max_sas=CAP)
    for name, message in flood_events(count, first, up):
        apply(model, name, message)
    return model


def apply(model: SaTable, name: str, message: dict[str, Any]) -> None:
    """An event as the stream hands it on: decoded."""
    event = decode_event(name, message, RECORDED_NOW)
    assert event is not None, name
    model.apply(event)


def test_a_flood_of_new_sas_stops_at_the_cap() -> None:
    model = flooded(1000)
    assert len(model.sas) == CAP
    # The first ones came first; their CHILD SAs are tracked with them.
    assert set(model.sas) == {str(i) for i in range(1, CAP + 1)}
    assert all(len(sa.children) == 1 for sa in model.sas.values())
    assert model.untracked == 1000 - CAP
    assert model.children == CAP


def test_sas_that_go_make_room_for_new_ones() -> None:
    model = flooded(CAP + 10)
    flooded(10, first=1, up=False, model=model)
    assert len(model.sas) == CAP - 10
    flooded(20, first=5000, model=model)
    assert len(model.sas) == CAP
    assert {str(i) for i in range(5000, 5010)} <= set(model.sas)
    assert model.untracked == 10 + 10


def test_events_of_tracked_sas_still_apply_at_the_cap() -> None:
    model = flooded(CAP)
    flooded(1, first=7, up=False, model=model)
    assert "7" not in model.sas and model.children == CAP - 1
    flooded(1, first=7, model=model)  # the room it left
    assert model.sas["7"].children and model.untracked == 0


def test_a_listing_beyond_the_cap_keeps_the_tracked_sas_first() -> None:
    model = flooded(CAP)
    template = next(iter(model.sas.values()))
    listed = [
        dataclasses.replace(template, uniqueid=str(i)) for i in range(CAP + 50, 0, -1)
    ]  # the new ones first
    model.replace(listed, RECORDED_NOW)
    assert len(model.sas) == CAP
    assert set(model.sas) == {str(i) for i in range(1, CAP + 1)}
    assert model.untracked == 50


def test_children_of_one_sa_are_bounded_too() -> None:
    """A peer announcing CHILD SA after CHILD SA for one IKE SA."""
    model = flooded(1)
    (name, message), *_ = [e for e in flood_events(1) if e[0] == "child-updown"]
    for i in range(3 * CAP):
        child = dict(message["ikev2-psk"]["child-sas"]["ikev2-psk-1"], uniqueid=str(100 + i))
        body = dict(message["ikev2-psk"], **{"child-sas": {f"c{i}": child}})
        apply(model, name, {"up": "yes", "ikev2-psk": body})
    assert model.children <= 2 * CAP
    assert len(model.sas["1"].children) <= 2 * CAP


def test_lowering_the_cap_keeps_what_is_tracked() -> None:
    model = flooded(CAP)
    model.max_sas = 10
    flooded(5, first=9000, model=model)
    assert len(model.sas) == CAP and model.untracked == 5
    # A listing applies the new cap.
    model.replace(parse_ike_sas([], RECORDED_NOW), RECORDED_NOW)
    assert not model.sas and model.children == 0
