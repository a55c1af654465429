"""The SA table's peer index stays what a scan of every SA would give, through every event
charon sent in the lab recordings (tests/fixtures/vici-events/, real charon 5.9.8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exporter.strongswan.charon_events import CharonEvent, decode_event
from exporter.strongswan.parse import parse_ike_sas
from exporter.strongswan.sa_table import SaTable, _peer
from tests.recordings import RECORDED_NOW

EVENTS = Path(__file__).parent.parent / "fixtures" / "vici-events"


def scanned(model: SaTable) -> dict[tuple[str, str, str, str], list[str]]:
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for uniqueid, sa in model.sas.items():
        groups.setdefault(_peer(sa), []).append(uniqueid)
    return groups


@pytest.mark.parametrize("recording", sorted(p.stem for p in EVENTS.glob("*.json")))
def test_peer_index_matches_a_full_scan_after_every_event(recording: str) -> None:
    data = json.loads((EVENTS / f"{recording}.json").read_text())
    model = SaTable()
    model.replace(parse_ike_sas(data["list-sas-before"], RECORDED_NOW), RECORDED_NOW)
    assert {k: list(v) for k, v in model._by_peer.items()} == scanned(model)
    for event in data["events"]:
        decoded = decode_event(event["event"], event["message"], RECORDED_NOW)
        assert decoded is not None
        model.apply(decoded)
        assert {k: list(v) for k, v in model._by_peer.items()} == scanned(model), event["event"]


def _decoded(data: dict[str, Any]) -> list[CharonEvent]:
    events = [decode_event(e["event"], e["message"], RECORDED_NOW) for e in data["events"]]
    assert all(e is not None for e in events)
    return [e for e in events if e is not None]


@pytest.mark.parametrize("recording", sorted(p.stem for p in EVENTS.glob("*.json")))
def test_events_during_a_listing_are_replayed_onto_it(recording: str) -> None:
    """Events that arrive while `list-sas` runs survive the listing, whichever state of
    each SA charon listed (seen in the guest: an IKE SA that came up while charon listed it
    half-way stayed so until the next listing, and a scrape counted one established SA
    too few)."""
    data = json.loads((EVENTS / f"{recording}.json").read_text())
    before = parse_ike_sas(data["list-sas-before"], RECORDED_NOW)
    events = _decoded(data)
    reference = SaTable()
    reference.replace(before, RECORDED_NOW)
    for event in events:
        reference.apply(event)

    # Charon listed every SA before the events happened.
    early = SaTable()
    early.replace(before, RECORDED_NOW)
    early.begin_listing()
    for event in events:
        early.apply(event)
    early.replace(before, RECORDED_NOW)
    assert early.sas == reference.sas

    # Charon listed every SA after them: replaying changes nothing.
    late = SaTable()
    late.replace(before, RECORDED_NOW)
    late.begin_listing()
    for event in events:
        late.apply(event)
    late.replace(reference.ike_sas(), RECORDED_NOW)
    assert late.sas == reference.sas


def test_an_abandoned_listing_replays_nothing_later() -> None:
    data = json.loads((EVENTS / "up.json").read_text())
    events = _decoded(data)
    table = SaTable()
    table.begin_listing()
    for event in events:
        table.apply(event)
    table.abandon_listing()
    table.replace((), RECORDED_NOW)  # a later listing that shows no SA: no SA
    assert table.sas == {}


def test_the_journal_is_bounded() -> None:
    data = json.loads((EVENTS / "up.json").read_text())
    events = _decoded(data)
    table = SaTable(max_sas=2)
    table.begin_listing()
    for event in events * 3:
        table.apply(event)
    assert table._journal is None  # more events than max_sas: no replay, no growth
    table.replace((), RECORDED_NOW)
    assert table.sas == {}
