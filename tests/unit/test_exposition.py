"""The fast renderer against prometheus_client's own, on everything the exporter renders."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import exposition
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics

from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.strongswan import render
from exporter.config import StrongswanOptions
from exporter.exposition import render_openmetrics, render_text
from exporter.scrape import Families, Scraper
from exporter.strongswan.fetch import assemble_snapshot
from tests.recordings import RECORDED_NOW, load_answers, scenarios


def recorded_families() -> list[Metric]:
    families: list[Metric] = []
    for scenario in scenarios():
        snapshot = assemble_snapshot(load_answers(scenario), RECORDED_NOW)
        families += render(snapshot, StrongswanOptions(sa_details=True), SeriesLimiter(100))
    return families


def tricky_families() -> list[Metric]:
    gauge = GaugeMetricFamily("x_g", 'help with \\ and "quotes"\nand a line', labels=["a", "b"])
    gauge.add_metric(['va"l\\ue\n', "ü"], 1.5)
    gauge.add_metric(["", "b"], float("inf"))
    counter = CounterMetricFamily("x_c", "c", labels=["z", "a"], unit="bytes")
    counter.add_metric(["2", "1"], 12345678901234.0)
    info = InfoMetricFamily("x_i", "i", value={"version": "1"})
    histogram = HistogramMetricFamily("x_h", "h", buckets=[("1", 1), ("+Inf", 2)], sum_value=3)
    return [gauge, counter, info, histogram, GaugeMetricFamily("x_plain", "p", value=0)]


async def scraped_families() -> list[Metric]:
    return await Scraper([]).scrape()  # runtime families: process, platform, gc


@pytest.mark.parametrize("source", ["recorded", "tricky", "runtime"])
def test_same_bytes_as_prometheus_client(source: str) -> None:
    families = {
        "recorded": recorded_families,
        "tricky": tricky_families,
        "runtime": lambda: asyncio.run(scraped_families()),
    }[source]()
    assert render_text(families) == exposition.generate_latest(Families(families))  # type: ignore[arg-type]
    assert render_openmetrics(families) == openmetrics.generate_latest(Families(families))  # type: ignore[arg-type]
