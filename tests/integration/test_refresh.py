"""Background refresh against real charon: the cheap questions often, list-sas rarely,
SAs in between from events; both ages are exported."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.lab


def test_listing_is_rare_and_events_keep_sas_current(make_lab: Any, start_exporter: Any) -> None:
    lab = make_lab(["nycmesh", "nycmesh"], connect=False)
    exp = start_exporter(
        lab.server_uri,
        "--collector.strongswan.refresh-interval", "1",
        "--collector.strongswan.sa-refresh-interval", "3600",
    )  # fmt: skip
    exp.wait_for(lambda s: s.value("strongswan_event_stream_up") == 1)
    for client in lab.clients:
        client.connect()
    # No listing since the start: only events can have told the exporter.
    scrape = exp.wait_for(
        lambda s: s.value("strongswan_connection_established", conn="nycmesh") == 2, timeout=15
    )
    time.sleep(2.5)
    scrape = exp.scrape()
    listing_age = scrape.value("strongswan_sa_listing_age_seconds")
    snapshot_age = scrape.value("strongswan_snapshot_age_seconds")
    assert listing_age is not None and snapshot_age is not None
    assert snapshot_age < 2 <= listing_age  # cheap parts refreshed, the listing not
    lab.clients[0].disconnect()
    exp.wait_for(
        lambda s: s.value("strongswan_connection_established", conn="nycmesh") == 1, timeout=15
    )
