"""`--collector.strongswan.sa-refresh-interval auto`: the listing interval follows what the
last listing cost, within the operator's bounds, and is the upper bound while the kernel
gives the CHILD SA counts; a fixed interval is honoured as set."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from pathlib import Path

import pytest

from exporter.cli import parse_command_line
from exporter.config import StrongswanOptions
from exporter.daemon import Runtime
from exporter.settings.errors import SettingsError
from exporter.strongswan.ledger import Traffic
from exporter.strongswan.view import LISTING_COST_FACTOR, CharonView, auto_listing_interval
from exporter.vici.address import ViciAddress
from tests.fakes.exporter_wiring import settings_for
from tests.fakes.vici_server import FakeViciServer

EPSILON = 0.001


def test_the_rule() -> None:
    assert LISTING_COST_FACTOR == 100
    # A 20-SA server's listing of 20 ms: the lower bound.
    assert auto_listing_interval(0.02, 10, 600) == 10
    # 5,000 SAs listed in 3 s: every 5 minutes.
    assert auto_listing_interval(3.0, 10, 600) == 300
    # Slower than that: never beyond the upper bound.
    assert auto_listing_interval(30.0, 10, 600) == 600
    # The kernel gives the counts: listings only reconcile.
    assert auto_listing_interval(0.02, 10, 600, kernel_counts=True) == 600


def test_kernel_counts_put_listings_off_unless_the_interval_is_fixed() -> None:
    address = ViciAddress("unix", path="/nonexistent/charon.vici")
    auto = CharonView(address, 1, StrongswanOptions(sa_refresh_min=1, sa_refresh_max=7))
    assert auto.listing_interval() == 1  # nothing listed yet: the lower bound
    auto.observe_traffic({})  # no CHILD SA in the kernel (kernel-libipsec)
    assert auto.listing_interval() == 1
    auto.observe_traffic({"3": Traffic(100, 200, 1, 2)})
    assert auto.listing_interval() == 7
    fixed = CharonView(address, 1, StrongswanOptions(sa_refresh_interval=5))
    fixed.observe_traffic({"3": Traffic(100, 200, 1, 2)})
    assert fixed.listing_interval() == 5


def test_bounds_the_wrong_way_round_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SettingsError, match="sa-refresh-min 20m is above"):
        StrongswanOptions(sa_refresh_min=1200, sa_refresh_max=600)
    with pytest.raises(SystemExit) as info:
        parse_command_line(["--collector.strongswan.sa-refresh-min", "20m"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--collector.strongswan.sa-refresh-min 20m is above" in err
    assert "--collector.strongswan.sa-refresh-max 10m" in err
    assert parse_command_line(["--collector.strongswan.sa-refresh-interval", "auto"])
    assert parse_command_line(["--collector.strongswan.sa-refresh-interval", "1"])


async def test_a_slow_listing_puts_the_next_one_off_and_a_fast_one_brings_it_near(
    tmp_path: Path,
) -> None:
    """charon answers the first list-sas after 50 ms (held by the fake): the next listing
    comes no sooner than 100 times that; those are answered at once (a round of well under
    a millisecond here, up to tens on a loaded machine), so the ones after come far
    sooner."""
    held = 0.05
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        settings = settings_for(
            charon.path,
            refresh_interval=0.02,
            sa_refresh_interval=None,
            sa_refresh_min=0.05,
            sa_refresh_max=10,
            events=False,
        )
        charon.hold("list-sas")
        runtime = Runtime(settings)
        runtime.start()
        try:
            await charon.wait_until(lambda: charon.count("list-sas") >= 1)
            await asyncio.sleep(held)
            charon.resume()
            await charon.wait_until(lambda: charon.count("list-sas") >= 4, timeout=25)
        finally:
            await runtime.close()
    listings = [a.at for a in charon.asked if a.name == "list-sas"]
    gaps = [b - a for a, b in itertools.pairwise(listings)]
    assert gaps[0] >= LISTING_COST_FACTOR * held - EPSILON, gaps
    assert gaps[0] <= 10 + 1, gaps  # the upper bound
    assert min(gaps[1:]) >= 0.05 - EPSILON, gaps
    # A fast round (25 ms on a loaded machine at worst) brings the next listing near.
    assert min(gaps[1:]) < 2.5, gaps


async def test_a_reload_lists_only_when_its_new_interval_is_due(tmp_path: Path) -> None:
    """A reload (every SIGHUP hands the view its options) asks for no listing of its own
    (thousands of SAs cost charon seconds); one that shortens the interval is honoured at
    once, not after the refresh interval's hour."""
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        settings = settings_for(
            charon.path, refresh_interval=3600, sa_refresh_interval=3600, events=False
        )
        runtime = Runtime(settings)
        runtime.start()
        try:
            await charon.wait_until(lambda: charon.count("list-sas") == 1)
            for _ in range(3):
                runtime.charon.reconfigure(settings.strongswan)
                await asyncio.sleep(0.1)
            assert charon.count("list-sas") == 1, "a reload alone listed"
            assert charon.count("version") >= 2, "the reload did not wake the round loop"
            shorter = dataclasses.replace(settings.strongswan, sa_refresh_interval=0.05)
            runtime.charon.reconfigure(shorter)
            await charon.wait_until(lambda: charon.count("list-sas") >= 3, timeout=5)
        finally:
            await runtime.close()
