"""The fast renderer against prometheus_client's own, on everything the exporter renders."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import exposition
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample

from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.strongswan import render
from exporter.collectors.strongswan_ledger import render_ledger
from exporter.config import StrongswanOptions
from exporter.exposition import number, render_openmetrics, render_text
from exporter.scrape import Scraper
from exporter.strongswan.fetch import assemble_snapshot
from exporter.strongswan.ledger import SaLedger
from exporter.strongswan.snapshot import ChildSA, IkeSA
from exporter.table_family import CreatedCounterTable, TableFamily, counter_table, gauge_table
from tests.recordings import RECORDED_NOW, load_answers, scenarios
from tests.reference import Families, floatToGoString, openmetrics_latest


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


def runtime_families() -> list[Metric]:
    return asyncio.run(scraped_families())


@pytest.mark.parametrize("source", ["recorded", "tricky", "runtime"])
def test_same_bytes_as_prometheus_client(source: str) -> None:
    families = {
        "recorded": recorded_families,
        "tricky": tricky_families,
        "runtime": runtime_families,
    }[source]()
    assert render_text(families) == exposition.generate_latest(Families(families))
    assert render_openmetrics(families) == openmetrics_latest(Families(families))


def table_families() -> list[Metric]:
    """Rows with label names out of order, values that need escaping, big and odd numbers."""
    traffic = counter_table("x_user_bytes", "Bytes per user.", ["user", "conn", "direction"])
    traffic.add(('al"ice\\', "rw", "in"), 12345678901)
    traffic.add(("bob\nsmith", "rw", "out"), 0)
    traffic.add(("carol", "rw", "in"), 2**60)
    gauge = gauge_table("x_age", "Age.", ["conn"])
    gauge.extend([(("a",), 1.5), (("b",), float("nan")), (("c",), -7), (("d",), 999_999)])
    plain = gauge_table("x_single", "No labels.", [])
    plain.add((), 3)
    logins = CreatedCounterTable("x_user_logins", "Logins.", ["user", "conn"])
    logins.add(('al"ice\\', "rw"), 2, 1_764_745_060.25)
    logins.add(("bob", "rw"), 0)  # a series without a creation time
    logins.add(("carol", "rw"), 12_345_678, 1e9)
    uncreated = CreatedCounterTable("x_user_logouts", "No creation times at all.", ["user"])
    uncreated.add(("alice",), 1)
    return [
        traffic,
        gauge,
        plain,
        gauge_table("x_empty", "No rows yet.", ["conn"]),
        logins,
        uncreated,
        CreatedCounterTable("x_none", "No rows.", ["user"]),
    ]


def ledger_families() -> list[Metric]:
    """The ledger's families (tables among them) for users with counts of every size."""
    ledger = SaLedger()
    ledger.reconcile(
        [
            IkeSA(
                "rw",
                str(i),
                "1",
                "ESTABLISHED",
                "192.0.2.1",
                f"198.51.100.{i}",
                f"peer{i}",
                f"user{i}",
                "AES_CBC-128",
                "HMAC_SHA1_96",
                "PRF_HMAC_SHA1",
                "MODP_2048",
                1.7e9,
                (),
                (
                    ChildSA(
                        "l2tp",
                        str(i),
                        str(i),
                        "INSTALLED",
                        "TRANSPORT",
                        "ESP",
                        False,
                        "AES_CBC-128",
                        "HMAC_SHA1_96",
                        10**i,
                        3 * 10**i,
                        i,
                        2 * i,
                        1.7e9,
                    ),
                ),
            )
            for i in range(1, 12)
        ],
        listed_after=0.0,
    )
    return render_ledger(ledger, [], SeriesLimiter(100), user_metrics=True)


@pytest.mark.parametrize("source", ["tables", "ledger"])
def test_tables_same_bytes_as_prometheus_client(source: str) -> None:
    # prometheus_client writes a TableFamily from the samples it builds on demand, so this
    # holds the row writer to the reference.
    families = table_families() if source == "tables" else ledger_families()
    assert any(isinstance(f, TableFamily) and f.rows for f in families)
    assert render_text(families) == exposition.generate_latest(Families(families))
    assert render_openmetrics(families) == openmetrics_latest(Families(families))


@given(st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats()))
def test_number_is_floattogostring(value: float) -> None:
    assert number(value) == floatToGoString(value)


@pytest.mark.parametrize("value", [0, 1, 999_999, 1_000_000, 1_200_000, 2**53 - 1, 2**53, -1])
def test_number_at_the_edges(value: int) -> None:
    assert number(value) == floatToGoString(value)


def test_table_family_takes_rows_only() -> None:
    family = gauge_table("x", "x", ["a"])
    with pytest.raises(TypeError):
        family.samples = [Sample("x", {"a": "1"}, 1.0)]
    with pytest.raises(ValueError, match="_total"):
        counter_table("x_total", "x", [])
    with pytest.raises(ValueError, match="gauge or a counter"):
        TableFamily("x", "x", "histogram", [])
