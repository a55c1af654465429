"""The SA table's peer index stays what a scan of every SA would give, through every event
charon sent in the lab recordings (tests/fixtures/vici-events/, real charon 5.9.8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.strongswan.charon_events import decode_event
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
