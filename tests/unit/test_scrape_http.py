"""The scrape orchestration and HTTP layer, with collectors whose behaviour the test sets.

The collectors here stand in for sources only; the real strongSwan collector is tested
against real charon in tests/integration.
"""

import asyncio
import gzip

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.collectors.base import Collection
from exporter.http import build_app
from exporter.scrape import Scraper


class SlowCollector:
    name = "slow"

    def __init__(self) -> None:
        self.calls = 0

    async def collect(self) -> Collection:
        self.calls += 1
        await asyncio.sleep(0.2)
        return Collection([GaugeMetricFamily("demo_value", "A value.", value=self.calls)])


class BrokenCollector:
    name = "broken"

    async def collect(self) -> Collection:
        raise RuntimeError("source exploded")


def samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + (
                "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
                if s.labels
                else ""
            )
            out[key] = s.value
    return out


async def test_concurrent_scrapes_share_one_collection() -> None:
    slow = SlowCollector()
    scraper = Scraper([slow])
    results = await asyncio.gather(*(scraper.scrape() for _ in range(10)))
    assert slow.calls == 1
    assert all(r is results[0] for r in results)
    await scraper.scrape()
    assert slow.calls == 2


async def test_a_crashing_collector_does_not_break_the_scrape() -> None:
    scraper = Scraper([SlowCollector(), BrokenCollector()])
    async with TestClient(TestServer(build_app(scraper, "/metrics"))) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        values = samples(await response.text())
    assert values["demo_value"] == 1
    assert values["l2tp_ipsec_exporter_collector_success{collector=slow}"] == 1
    assert values["l2tp_ipsec_exporter_collector_success{collector=broken}"] == 0
    assert "l2tp_ipsec_exporter_collector_duration_seconds{collector=broken}" in values
    assert any(k.startswith("l2tp_ipsec_exporter_build_info") for k in values)
    assert "process_resident_memory_bytes" in values


async def test_content_negotiation_and_gzip() -> None:
    app = build_app(Scraper([SlowCollector()]), "/custom")
    async with TestClient(TestServer(app)) as client:
        plain = await client.get("/custom")
        assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        om = await client.get(
            "/custom", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert om.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await om.text()).endswith("# EOF\n")
        zipped = await client.get(
            "/custom", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        )
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert b"demo_value" in gzip.decompress(await zipped.read())
        assert (await client.get("/metrics")).status == 404


async def test_health_ready_and_landing_page() -> None:
    app = build_app(Scraper([]), "/metrics")
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/-/healthy")).status == 200
        assert (await client.get("/-/ready")).status == 200
        landing = await client.get("/")
        assert landing.headers["Content-Type"].startswith("text/html")
        assert 'href="/metrics"' in await landing.text()


def test_render_cache_renders_each_collection_once_per_format() -> None:
    from exporter.http import RenderCache

    cache = RenderCache()
    families: list[Metric] = [GaugeMetricFamily("demo_value", "A value.", value=1)]
    om = "application/openmetrics-text; version=1.0.0"
    first = cache.get(families, None, None)
    assert cache.get(families, None, None) is first  # shared, not rendered again
    assert cache.get(families, om, None) is not first
    assert cache.get(families, None, "gzip")[1]["Content-Encoding"] == "gzip"
    fresh: list[Metric] = [GaugeMetricFamily("demo_value", "A value.", value=2)]
    assert b"demo_value 2.0" in cache.get(fresh, None, None)[0]


async def test_lifecycle_endpoints_follow_the_flag() -> None:
    """POST and PUT /-/reload as Prometheus: 403 naming the flag while it is off; the
    landing page says which."""
    from exporter.http import RELOAD_KEY

    enabled = False

    async def reload() -> str:
        return "configuration reloaded"

    app = build_app(Scraper([]), "/metrics", lifecycle=lambda: enabled)
    app[RELOAD_KEY] = reload
    async with TestClient(TestServer(app)) as client:
        for method in ("POST", "PUT"):
            off = await client.request(method, "/-/reload")
            assert off.status == 403
            assert "--web.enable-lifecycle" in await off.text()
        assert "off (start with --web.enable-lifecycle)" in await (await client.get("/")).text()
        enabled = True
        for method in ("POST", "PUT"):
            on = await client.request(method, "/-/reload")
            assert (on.status, await on.text()) == (200, "configuration reloaded\n")
        assert (await client.get("/-/reload")).status == 405
        landing = await (await client.get("/")).text()
        assert "POST /-/reload: re-read the configuration file" in landing
