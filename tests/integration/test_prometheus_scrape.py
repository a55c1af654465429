"""The scrape path end to end: real charon → exporter → a real Prometheus server.

Prometheus negotiates OpenMetrics and gzip, applies its own parser and rejects what it
cannot read, so this catches what a text-only parser in the test would let through.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from exporter.demo.lab.prometheus import PrometheusServer, scrape_config

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed"),
]


def by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in result}


def test_prometheus_scrapes_the_exporter(ra_lab: Any, start_exporter: Any) -> None:
    exporter = start_exporter(ra_lab.server_uri)
    target = exporter.url.removeprefix("http://")
    with PrometheusServer(scrape_config([target])) as prom:
        up = prom.wait_for('up{job="l2tp-ipsec"} == 1')
        assert len(up) == 1
        health = prom.api("targets")["activeTargets"][0]
        assert health["health"] == "up", health["lastError"]
        established = prom.wait_for("strongswan_connection_established")
        assert by_label(established, "conn") == {"nycmesh": 3, "ikev2-psk": 1, "site-b": 0}
        assert float(prom.wait_for("strongswan_up")[0]["value"][1]) == 1
        # Counters arrive as counters (OpenMetrics _total), usable with rate().
        rate = prom.wait_for('rate(strongswan_ike_sa_events_total{event="down"}[10s])', 20)
        assert all(float(r["value"][1]) == 0 for r in rate)
        meta = prom.api("metadata", metric="strongswan_child_sa_bytes")  # family name
        assert meta, "Prometheus has no metadata for strongswan_child_sa_bytes"
        assert next(iter(meta.values()))[0]["type"] == "counter"
