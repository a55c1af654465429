"""The background refresher's schedule, counted in the commands the fake VICI server saw:
the cheap questions every refresh_interval, list-sas every sa_refresh_interval and right
after the event stream reconnects.

Intervals are short (20 ms, 500 ms) so the test takes a second; its checks are lower bounds
on the gaps and counts the exporter cannot miss, so a slow machine only makes it slower.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

from vici.protocol import Packet

from exporter.daemon import Runtime
from tests.fakes.exporter_wiring import scrape, settings_for
from tests.fakes.vici_server import FakeViciServer, eventually

#: Float rounding between the loop's clock in the fake and time.monotonic() in the exporter.
EPSILON = 0.001
#: The questions of every round, in order; a listing round adds list-sas after stats.
CHEAP = ["version", "stats", "list-conns", "get-pools", "list-certs", "get-counters"]


async def test_cheap_questions_every_refresh_interval_listing_every_sa_refresh_interval(
    tmp_path: Path,
) -> None:
    refresh, sa_refresh = 0.02, 0.5
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        settings = settings_for(
            charon.path, refresh_interval=refresh, sa_refresh_interval=sa_refresh, events=False
        )
        runtime = Runtime(settings)
        runtime.start()
        try:
            await charon.wait_until(lambda: charon.count("list-sas") >= 3)
        finally:
            await runtime.close()

    commands = [a for a in charon.asked if a.kind == Packet.CMD_REQUEST]
    rounds = [a.at for a in commands if a.name == "version"]
    listings = [a.at for a in commands if a.name == "list-sas"]
    # The first round lists (nothing was listed yet).
    assert listings[0] < rounds[1]
    # A round starts refresh_interval after the last one ended, never sooner, unless a
    # listing falls due before that (then the round that lists comes when it is due).
    listing_rounds = {max(r for r in rounds if r <= t) for t in listings}
    cheap_gaps = [b - a for a, b in itertools.pairwise(rounds) if b not in listing_rounds]
    assert min(cheap_gaps) >= refresh - EPSILON
    # A listing comes sa_refresh_interval after the last one, never sooner ...
    assert min(b - a for a, b in itertools.pairwise(listings)) >= sa_refresh - EPSILON
    # ... and the rounds in between ask only the cheap questions.
    between = [t for t in rounds if listings[0] < t < listings[1]]
    assert len(between) >= 3, f"{len(between)} rounds between two listings"
    # Every round asks every cheap question.
    assert [a.name for a in commands if a.name != "list-sas"][: 2 * len(CHEAP)] == CHEAP * 2


async def test_listing_right_after_the_event_stream_reconnects(tmp_path: Path) -> None:
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        # sa_refresh_interval of an hour: every listing here is one the stream asked for.
        settings = settings_for(charon.path, refresh_interval=0.02, sa_refresh_interval=3600)
        runtime = Runtime(settings)
        runtime.start()
        try:

            def settled_after(registration: int) -> bool:
                """A listing after the stream registered, then three rounds without one."""
                listed = charon.last("list-sas")
                return (
                    listed is not None
                    and listed.seq > registration
                    and charon.count("stats", after=listed.seq) >= 3
                )

            await charon.wait_until(lambda: len(charon.stream_registrations) == 1)
            first = charon.stream_registrations[0].seq
            await charon.wait_until(lambda: settled_after(first))
            listed = charon.count("list-sas")

            assert charon.drop(event_stream_only=True) == 1
            await charon.wait_until(lambda: len(charon.stream_registrations) == 2)
            second = charon.stream_registrations[1].seq
            await charon.wait_until(lambda: settled_after(second))
            # The stream's loss and its reconnect: at most one listing each, no more.
            assert charon.count("list-sas") - listed in (1, 2)
        finally:
            await runtime.close()


@contextlib.asynccontextmanager
async def _settled(charon: FakeViciServer, timeout: float) -> AsyncIterator[Runtime]:
    """A running exporter with the event stream on and listings hourly, settled: the first
    round's listing and the stream's, then two cheap rounds."""
    settings = settings_for(
        charon.path, timeout=timeout, refresh_interval=0.02, sa_refresh_interval=3600
    )
    runtime = Runtime(settings)
    runtime.start()
    try:
        await charon.wait_until(lambda: charon.count("list-sas") >= 2)
        listed = charon.last("list-sas")
        assert listed is not None
        await charon.wait_until(lambda: charon.count("stats", after=listed.seq) >= 2)
        yield runtime
    finally:
        await runtime.close()


async def test_a_listing_asked_for_during_a_round_is_not_lost(tmp_path: Path) -> None:
    async with FakeViciServer(tmp_path / "charon.vici") as charon, _settled(charon, 5.0) as runtime:
        # A round is under way (held at stats) when the event stream is lost, and the
        # stream cannot subscribe again (its listing then would hide the lost one).
        charon.hold("stats", "ike-updown")
        asked = len(charon.asked)
        await charon.wait_until(lambda: charon.count("stats", after=asked) >= 1)
        charon.drop(event_stream_only=True)
        await eventually(
            lambda: _scraped(runtime, "strongswan_event_stream_up", 0), "the stream lost"
        )
        charon.hold("ike-updown")  # the round goes on
        held_round = len(charon.asked)
        await charon.wait_until(lambda: charon.count("get-counters", after=held_round) >= 3)
        assert charon.count("list-sas", after=asked) >= 1, "the stream's loss asked for one"


async def _scraped(runtime: Runtime, name: str, expected: float) -> bool:
    return (await scrape(runtime.scraper)).get(name) == expected


async def test_a_listing_whose_round_failed_is_asked_again(tmp_path: Path) -> None:
    async with FakeViciServer(tmp_path / "charon.vici") as charon, _settled(charon, 0.3):
        # The event stream is lost (and stays away: its listing would hide the lost
        # one); the listing its loss asks for goes unanswered until the VICI timeout.
        charon.hold("list-sas", "ike-updown")
        asked = len(charon.asked)
        charon.drop(event_stream_only=True)
        await charon.wait_until(lambda: charon.count("list-sas", after=asked) == 1)
        unanswered = charon.last("list-sas")
        assert unanswered is not None
        # The client gave up on it: its next round comes.
        await charon.wait_until(lambda: charon.count("stats", after=unanswered.seq) >= 1)
        charon.hold("ike-updown")  # charon answers listings again
        failed = unanswered.seq
        await charon.wait_until(lambda: charon.count("get-counters", after=failed) >= 3)
        assert charon.count("list-sas", after=failed) >= 1, "the failed listing is owed"


async def test_a_listing_interval_below_the_refresh_interval_is_honoured(
    tmp_path: Path,
) -> None:
    """--collector.strongswan.sa-refresh-interval 1 with refresh-interval 10 s used to list
    every 10 s: the listing rode on the cheap round. Here: rounds every 2 s, listings every
    0.1 s must come every 0.1 s."""
    refresh, sa_refresh = 2.0, 0.1
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        settings = settings_for(
            charon.path, refresh_interval=refresh, sa_refresh_interval=sa_refresh, events=False
        )
        runtime = Runtime(settings)
        runtime.start()
        try:
            await charon.wait_until(lambda: charon.count("list-sas") >= 5, timeout=1.5)
        finally:
            await runtime.close()
    listings = [a.at for a in charon.asked if a.name == "list-sas"]
    assert len(listings) >= 5, "listings waited for the refresh interval"
    assert min(b - a for a, b in itertools.pairwise(listings)) >= sa_refresh - EPSILON
