"""`--collector.strongswan.max-sas` as a scrape sees it, against the fake VICI server
replaying a recorded charon listing of four IKE SAs: one is tracked, the other three are
counted in `strongswan_sas_untracked_total`, with the event stream on (the ledger counts)
and off (only listings fill the SA table, and it counts)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from exporter.daemon import Runtime
from tests.fakes.exporter_wiring import scrape, settings_for
from tests.fakes.vici_server import FakeViciServer, Recording, eventually

#: IKE SAs of the recording (tests/fixtures/vici/remote-access/list-sas.json).
RECORDED_SAS = 4


@pytest.mark.parametrize("events", [True, False], ids=["events", "no-events"])
async def test_sas_over_the_cap_are_counted_not_tracked(tmp_path: Path, events: bool) -> None:
    async with FakeViciServer(
        tmp_path / "charon.vici", Recording.scenario("remote-access")
    ) as fake:
        settings = settings_for(
            fake.path, refresh_interval=0.05, sa_refresh_interval=3600, events=events, max_sas=1
        )
        runtime = Runtime(settings)
        runtime.start()
        try:

            async def capped() -> bool:
                values = await scrape(runtime.scraper)
                return (
                    values["strongswan_up"] == 1
                    and values.get("strongswan_ike_sas") == 1
                    and values.get("strongswan_sas_untracked_total", 0) >= RECORDED_SAS - 1
                )

            await eventually(capped, "one SA tracked, the rest counted as untracked")
        finally:
            await runtime.close()


@pytest.mark.parametrize("events", [True, False], ids=["events", "no-events"])
async def test_a_reload_sets_the_cap_of_the_model_and_the_ledger(
    tmp_path: Path, events: bool
) -> None:
    settings = settings_for(tmp_path / "absent.vici", events=events, max_sas=1)
    lowered = dataclasses.replace(
        settings, strongswan=dataclasses.replace(settings.strongswan, max_sas=5)
    )
    runtime = Runtime(settings, lambda: lowered)
    try:
        assert runtime.charon._sa_table.max_sas == 1
        await runtime.reload()
        assert runtime.charon._sa_table.max_sas == 5
        if events:
            assert runtime.charon._ledger is not None
            assert runtime.charon._ledger.max_sas == 5
    finally:
        await runtime.close()
