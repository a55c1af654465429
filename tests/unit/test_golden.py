"""Recorded answers of a real charon → the exact exposition text in tests/golden/.

A diff is a bug or a deliberate change; after a deliberate one, rewrite the files with
`UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py` and say why in the commit.
"""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest

from exporter.collectors.limits import SeriesLimiter, dropped_family
from exporter.collectors.strongswan import render, up_family
from exporter.config import StrongswanOptions
from exporter.strongswan.fetch import assemble_snapshot
from tests.recordings import RECORDED_NOW, load_answers, scenarios
from tests.reference import Families

GOLDEN = Path(__file__).parent.parent / "golden"
OPTIONS = {
    "default": StrongswanOptions(),
    "sa-details": StrongswanOptions(sa_details=True, series_limit=2),
}


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    # charon reports its start time as local time.
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def exposition(scenario: Path, options: StrongswanOptions) -> str:
    snapshot = assemble_snapshot(load_answers(scenario), RECORDED_NOW)
    limiter = SeriesLimiter(options.series_limit)
    families = [up_family(True), *render(snapshot, options, limiter), dropped_family(limiter)]
    return generate_latest(Families(families)).decode()


@pytest.mark.parametrize("variant", sorted(OPTIONS))
@pytest.mark.parametrize("scenario", scenarios(), ids=lambda p: p.name)
def test_exposition_matches_golden(scenario: Path, variant: str) -> None:
    text = exposition(scenario, OPTIONS[variant])
    golden = GOLDEN / f"{scenario.name}.{variant}.prom"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text()


def test_there_are_recordings() -> None:
    assert {p.name for p in scenarios()} >= {"remote-access", "ike-up-child-failed"}
