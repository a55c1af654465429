"""Reload against fake VICI servers: the configuration file names another socket and
timeout, `Runtime.reload` (what SIGHUP and POST /-/reload run) moves the VICI client and
the event stream to the second server and the new timeout holds; a rejected reload keeps
them where they are."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from exporter.cli import parse_command_line
from exporter.config import SettingsError
from exporter.daemon import Runtime
from tests.fakes.exporter_wiring import config_file_text, scrape
from tests.fakes.vici_server import FakeViciServer, Recording, eventually

#: IKE SAs each recording lists (tests/fixtures/vici/*/list-sas.json).
FIRST_SAS, SECOND_SAS = 4, 2


def runtime_from(config: Path) -> Runtime:
    """The daemon's runtime as `main` builds it: the command line's settings and its
    reloader (the file read again, the flags on top)."""
    command_line = parse_command_line(["--config.file", str(config)])
    return Runtime(command_line.settings, command_line.reload_settings)


async def ike_sas(runtime: Runtime, expected: int) -> bool:
    values = await scrape(runtime.scraper)
    return values["strongswan_up"] == 1 and values.get("strongswan_ike_sas") == expected


async def test_reload_moves_to_another_socket_and_timeout(tmp_path: Path) -> None:
    config = tmp_path / "exporter.yml"
    first = FakeViciServer(tmp_path / "first.vici", Recording.scenario("remote-access"))
    second = FakeViciServer(tmp_path / "second.vici", Recording.scenario("ike-up-child-failed"))
    async with first, second:
        config.write_text(config_file_text(first.path, timeout="3s"))
        runtime = runtime_from(config)
        runtime.start()
        try:
            await eventually(lambda: ike_sas(runtime, FIRST_SAS), "the first server's SAs")
            await first.wait_until(lambda: len(first.stream_registrations) == 1)

            config.write_text(config_file_text(second.path, timeout="300ms"))
            assert await runtime.reload() == "configuration reloaded"
            # Both connections move: the questions and the event stream.
            await eventually(lambda: ike_sas(runtime, SECOND_SAS), "the second server's SAs")
            await second.wait_until(lambda: len(second.stream_registrations) == 1)
            await first.wait_until(lambda: not first.open_connections)
            # The stream listed again once subscribed to the second server.
            registered = second.stream_registrations[0].seq
            await second.wait_until(lambda: second.count("list-sas", after=registered) >= 1)

            # The new timeout holds: a question left unanswered fails after 0.3 s, not after
            # the 3 s of the first configuration (stats: the event stream asks only version).
            loop = asyncio.get_running_loop()
            hung_at = loop.time()
            second.hold("stats")
            await eventually(lambda: _down(runtime), "strongswan_up 0")
            noticed = loop.time() - hung_at
            assert noticed < 2.0, f"noticed after {noticed:.2f} s"
        finally:
            await runtime.close()


async def test_rejected_reload_keeps_the_connections(tmp_path: Path) -> None:
    config = tmp_path / "exporter.yml"
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        config.write_text(config_file_text(charon.path, timeout="3s"))
        runtime = runtime_from(config)
        runtime.start()
        try:
            await eventually(lambda: ike_sas(runtime, FIRST_SAS), "the server's SAs")
            await charon.wait_until(lambda: len(charon.stream_registrations) == 1)
            connections = charon.open_connections

            config.write_text(config_file_text(tmp_path / "other.vici", timeout="-1s"))
            with pytest.raises(SettingsError, match="timeout"):
                await runtime.reload()
            # Still asking the same server over the same connections.
            asked = len(charon.asked)
            await charon.wait_until(lambda: charon.count("stats", after=asked) >= 2)
            assert charon.open_connections == connections
            assert len(charon.stream_registrations) == 1
            assert await ike_sas(runtime, FIRST_SAS)
        finally:
            await runtime.close()


async def test_reload_to_another_socket_without_events_lists_the_new_charon(
    tmp_path: Path,
) -> None:
    config = tmp_path / "exporter.yml"
    first = FakeViciServer(tmp_path / "first.vici", Recording.scenario("remote-access"))
    second = FakeViciServer(tmp_path / "second.vici", Recording.scenario("ike-up-child-failed"))
    async with first, second:
        config.write_text(config_file_text(first.path, timeout="3s", events=False))
        runtime = runtime_from(config)
        runtime.start()
        try:
            await eventually(lambda: ike_sas(runtime, FIRST_SAS), "the first server's SAs")
            config.write_text(config_file_text(second.path, timeout="3s", events=False))
            await runtime.reload()
            # Two whole rounds of questions answered by the second server ...
            await second.wait_until(lambda: second.count("get-counters") >= 2)
            values = await scrape(runtime.scraper)
            assert values["strongswan_up"] == 1
            # ... and the SAs are the second server's.
            assert values["strongswan_ike_sas"] == SECOND_SAS
        finally:
            await runtime.close()


async def _down(runtime: Runtime) -> bool:
    return (await scrape(runtime.scraper))["strongswan_up"] == 0
