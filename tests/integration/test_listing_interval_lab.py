"""`--collector.strongswan.sa-refresh-interval auto` against real charon (kernel-libipsec in
network namespaces, so the kernel gives no CHILD SA counts and listings carry the bytes):
a small lab is listed every sa-refresh-min and its bytes show within that; a lab of 1,000
SAs costs a longer listing and is listed less often, by exactly the rule."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.config import StrongswanOptions
from exporter.strongswan.view import auto_listing_interval

pytestmark = pytest.mark.lab

DEFAULTS = StrongswanOptions()


def child_bytes_in(scrape: Any) -> float:
    return float(
        sum(
            s.value
            for s in scrape.samples("strongswan_child_sa_bytes_total", conn="nycmesh")
            if s.labels.get("direction") == "in"
        )
    )


def test_a_small_lab_is_listed_every_sa_refresh_min_and_its_bytes_are_that_fresh(
    make_lab: Any, start_exporter: Any
) -> None:
    lab = make_lab(["nycmesh", "nycmesh"])
    exp = start_exporter(lab.server_uri)  # defaults: auto, 10 s to 10 min
    # After a listing (the interval is there from the start, the duration after the
    # first). The very first round may be slow on a loaded machine (the exporter's start):
    # a later one of two SAs takes milliseconds, and then the interval is the lower bound.
    scrape = exp.wait_for(
        lambda s: (
            s.value("strongswan_sa_listing_duration_seconds") is not None
            and s.value("strongswan_sa_listing_interval_seconds") == DEFAULTS.sa_refresh_min
        ),
        timeout=60,
    )
    duration = scrape.value("strongswan_sa_listing_duration_seconds")
    assert duration is not None and 0 < duration <= 0.1, duration  # two SAs: milliseconds
    before = child_bytes_in(exp.scrape())
    assert lab.clients[0].ping(5) == 5
    sent = time.monotonic()
    # No newer than one listing interval (+ a refresh round's slack): the bytes of five
    # pings are in a scrape within sa-refresh-min.
    exp.wait_for(lambda s: child_bytes_in(s) > before, timeout=DEFAULTS.sa_refresh_min + 3)
    assert time.monotonic() - sent <= DEFAULTS.sa_refresh_min + 3
    # And the listing never grows older than that while the exporter runs.
    ages = []
    for _ in range(12):
        age = exp.scrape().value("strongswan_sa_listing_age_seconds")
        assert age is not None
        ages.append(age)
        time.sleep(1)
    assert max(ages) <= DEFAULTS.sa_refresh_min + 2, ages


@pytest.fixture
def thousand_sas(lab_available: None) -> Iterator[Any]:
    from tests import conftest
    from tests.lab.scale import ScaleLab

    lab = ScaleLab([1000])
    conftest._LIVE_LABS.append(lab)  # its charon logs go into a failure's report
    try:
        lab.start()
        lab.bring_up(1000)
        yield lab
    finally:
        lab.close()
        conftest._LIVE_LABS.remove(lab)


def test_a_thousand_sas_are_listed_less_often_by_the_rule(
    thousand_sas: Any, start_exporter: Any
) -> None:
    exp = start_exporter(thousand_sas.server.uri)
    scrape = exp.wait_for(
        lambda s: (s.value("strongswan_ike_sas", conn="scale", state="ESTABLISHED") or 0) >= 1000,
        timeout=60,
    )
    duration = scrape.value("strongswan_sa_listing_duration_seconds")
    interval = scrape.value("strongswan_sa_listing_interval_seconds")
    assert duration is not None and interval is not None
    # The rule, on what this listing measured.
    expected = auto_listing_interval(duration, DEFAULTS.sa_refresh_min, DEFAULTS.sa_refresh_max)
    assert interval == pytest.approx(expected, rel=1e-6)
    # 1,000 SAs take charon and the exporter more than 0.1 s to list: backed off.
    assert interval > DEFAULTS.sa_refresh_min, (duration, interval)
