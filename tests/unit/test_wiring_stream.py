"""The event stream against the fake VICI server, seen as Prometheus sees it (a scrape of
the running exporter): its loss, its reconnect and listing, and a hung charon that keeps
the connection open but answers nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from exporter.daemon import Runtime
from exporter.strongswan import event_stream
from tests.fakes.exporter_wiring import scrape, settings_for
from tests.fakes.vici_server import FakeViciServer, eventually, recorded_events

UP = "strongswan_up"
STREAM_UP = "strongswan_event_stream_up"


async def up_and_streaming(runtime: Runtime, up: float) -> bool:
    values = await scrape(runtime.scraper)
    return values[UP] == up and values[STREAM_UP] == up


async def test_stream_loss_reconnects_lists_and_is_reported(tmp_path: Path) -> None:
    _, events = recorded_events("up")
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        settings = settings_for(charon.path, refresh_interval=0.02, sa_refresh_interval=3600)
        runtime = Runtime(settings)
        runtime.start()
        try:
            await eventually(lambda: up_and_streaming(runtime, 1), "strongswan_up and stream 1")
            assert charon.send_events(events) == len(events)
            await eventually(
                lambda: _value(runtime, "strongswan_event_stream_events_total", len(events)),
                "the recorded events counted",
            )

            # The stream is lost, and its next registration goes unanswered for now.
            charon.hold("ike-updown")
            assert charon.drop(event_stream_only=True) == 1
            await eventually(lambda: up_and_streaming(runtime, 0), "strongswan_up and stream 0")
            values = await scrape(runtime.scraper)
            assert values["strongswan_event_stream_reconnects_total"] == 0

            charon.resume()
            await eventually(lambda: up_and_streaming(runtime, 1), "strongswan_up and stream 1")
            values = await scrape(runtime.scraper)
            assert values["strongswan_event_stream_reconnects_total"] == 1
            # It asked for a listing once subscribed again (what did it miss?).
            registered = charon.stream_registrations[-1].seq
            await charon.wait_until(lambda: charon.count("list-sas", after=registered) >= 1)
            # Events reach the exporter again.
            charon.send_events(events)
            await eventually(
                lambda: _value(runtime, "strongswan_event_stream_events_total", 2 * len(events)),
                "the events after the reconnect counted",
            )
        finally:
            await runtime.close()


async def test_a_hung_charon_is_noticed_within_the_timeout_and_liveness_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeout, liveness = 0.3, 0.2
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        settings = settings_for(
            charon.path, timeout=timeout, refresh_interval=0.05, sa_refresh_interval=3600
        )
        monkeypatch.setattr(event_stream, "LIVENESS_INTERVAL", liveness)
        runtime = Runtime(settings)
        runtime.start()
        try:
            await eventually(lambda: up_and_streaming(runtime, 1), "strongswan_up and stream 1")
            # The stream asks its liveness question and gets answers while charon lives.
            asked = len(charon.stream_registrations)
            await charon.wait_until(lambda: _stream_versions(charon) >= 2)

            loop = asyncio.get_running_loop()
            hung_at = loop.time()
            charon.hold("version")  # the connections stay open; no version is answered
            await eventually(lambda: _value(runtime, "strongswan_event_stream_up", 0), "stream 0")
            noticed = loop.time() - hung_at
            # At most one liveness interval until the question, then the timeout; the rest
            # is slack for a loaded machine.
            assert noticed < liveness + timeout + 1.0, f"noticed after {noticed:.2f} s"
            assert (await scrape(runtime.scraper))[UP] == 0

            charon.resume()
            await eventually(lambda: up_and_streaming(runtime, 1), "strongswan_up and stream 1")
            assert len(charon.stream_registrations) > asked
        finally:
            await runtime.close()


async def _value(runtime: Runtime, name: str, expected: float) -> bool:
    return (await scrape(runtime.scraper)).get(name) == expected


def _stream_versions(charon: FakeViciServer) -> int:
    """`version` questions on the event stream's connection (its liveness question)."""
    stream = charon.stream_registrations[-1].connection
    return sum(1 for a in charon.asked if a.connection == stream and a.name == "version")
