"""A reload through the schema, against a fake VICI server: what is live is applied, what
needs a restart keeps its running value and is named in the log, and the outcome is
exported as blackbox_exporter does (`…_config_last_reload_successful`,
`…_success_timestamp_seconds`)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from exporter.cli import parse_command_line
from exporter.config import SettingsError
from exporter.daemon import Runtime
from tests.fakes.exporter_wiring import config_file_text, scrape
from tests.fakes.vici_server import FakeViciServer

SUCCESSFUL = "l2tp_ipsec_exporter_config_last_reload_successful"
SUCCESS_AT = "l2tp_ipsec_exporter_config_last_reload_success_timestamp_seconds"


def runtime_from(config: Path) -> Runtime:
    command_line = parse_command_line(["--config.file", str(config)])
    return Runtime(command_line.settings, command_line.reload_settings)


async def test_a_rejected_reload_shows_in_the_metrics(tmp_path: Path) -> None:
    config = tmp_path / "exporter.yml"
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        config.write_text(config_file_text(charon.path, timeout="3s"))
        runtime = runtime_from(config)
        try:
            started = await scrape(runtime.scraper)
            assert started[SUCCESSFUL] == 1  # the load at start counts
            assert started[SUCCESS_AT] > 0

            config.write_text("vici: {timeout: forever}\n")
            with pytest.raises(SettingsError):
                await runtime.reload()
            rejected = await scrape(runtime.scraper)
            assert rejected[SUCCESSFUL] == 0
            assert rejected[SUCCESS_AT] == started[SUCCESS_AT]

            config.write_text(config_file_text(charon.path, timeout="2s"))
            await runtime.reload()
            fixed = await scrape(runtime.scraper)
            assert fixed[SUCCESSFUL] == 1
            assert fixed[SUCCESS_AT] > started[SUCCESS_AT]
        finally:
            await runtime.close()


async def test_live_settings_apply_and_restart_ones_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "exporter.yml"
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        base = config_file_text(charon.path, timeout="3s")
        config.write_text(base)
        runtime = runtime_from(config)
        try:
            changed = base.replace(
                "events: true", "events: true, series_limit: 7, user_idle_timeout: 2h"
            ).replace("  ppp: {enabled: false}", "  ppp: {enabled: false, interfaces: 'l2tp*'}")
            config.write_text(changed + "web: {max_connections: 64, enable_lifecycle: true}\n")
            with caplog.at_level(logging.WARNING, logger="exporter"):
                await runtime.reload()
            running = runtime.settings
            # Live: in the running settings and in the parts that use them.
            assert running.strongswan.series_limit == 7
            assert runtime.scraper.limiter.limit == 7
            assert running.strongswan.user_idle_seconds == 7200
            assert running.enable_lifecycle is True
            # Restart: kept at the running value, so the next reload compares right ...
            assert running.web_limits.max_connections == 512
            assert running.kernel.ppp_interfaces == "ppp*"
            # ... and named, by flag, in one warning.
            (warning,) = [r for r in caplog.records if "next restart" in r.getMessage()]
            named = getattr(warning, "settings", "")
            assert named == "--web.max-connections, --collector.ppp.interfaces"

            caplog.clear()
            config.write_text(base)  # back to what runs: nothing waits for a restart
            with caplog.at_level(logging.WARNING, logger="exporter"):
                await runtime.reload()
            assert not [r for r in caplog.records if "next restart" in r.getMessage()]
            assert runtime.settings.strongswan.series_limit == 1000
        finally:
            await runtime.close()
