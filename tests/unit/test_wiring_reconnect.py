"""The VICI client against the fake server: it reconnects after the server drops it, waits
out a backoff that grows while charon does not answer, and starts over only after an answer.

The client's clock is the test's: the delays are checked exactly, without waiting them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from exporter.strongswan import event_stream
from exporter.vici import Backoff, ViciClient, ViciConnectionError
from tests.fakes.vici_server import FakeViciServer, eventually

#: Float rounding between the loop's clock in the fake and the exporter's.
EPSILON = 0.001


async def test_reconnects_after_a_drop_with_a_backoff_reset_only_by_an_answer(
    tmp_path: Path,
) -> None:
    now = [100.0]
    backoff = Backoff(initial=0.25, maximum=1.0)
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        client = ViciClient(charon.address, timeout=2.0, backoff=backoff, clock=lambda: now[0])
        try:
            assert (await client.request("version"))["daemon"] == "charon"
            assert charon.connections_opened == 1

            # charon drops the connection (a restart): the call on it fails ...
            charon.drop()
            with pytest.raises(ViciConnectionError):
                await client.request("stats")
            assert backoff.delay == 0.25
            # ... and within the delay the client does not even connect.
            with pytest.raises(ViciConnectionError):
                await client.request("stats")
            assert charon.connections_opened == 1

            # A peer that accepts and hangs up unanswered: connecting is not an answer, so
            # every attempt doubles the delay, up to its maximum.
            charon.hang_up = True
            for expected in (0.5, 1.0, 1.0):
                now[0] += backoff.delay
                opened = charon.connections_opened
                with pytest.raises(ViciConnectionError):
                    await client.request("stats")
                assert charon.connections_opened == opened + 1  # it did connect
                assert backoff.delay == expected

            # charon answers again: the delay starts over.
            charon.hang_up = False
            now[0] += backoff.delay
            assert await client.request("stats") == charon.recording.answers["stats"]
            assert backoff.delay == 0.0
            assert client.reconnects == 4
            charon.drop()
            with pytest.raises(ViciConnectionError):
                await client.request("stats")
            assert backoff.delay == 0.25
        finally:
            await client.close()


async def test_a_late_answer_is_never_read_as_the_next_ones(tmp_path: Path) -> None:
    """A command charon did not answer in time costs its connection: its answer, when it
    comes, must not be read as the answer to the next command."""
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        now = [100.0]
        client = ViciClient(charon.address, timeout=0.2, clock=lambda: now[0])
        try:
            charon.hold("version")
            with pytest.raises(ViciConnectionError, match=r"did not answer within 0\.2 s"):
                await client.request("version")
            answered = charon.answered
            charon.resume()
            # The held answer goes out now, on the connection the client gave up.
            await charon.wait_until(lambda: charon.answered > answered)
            now[0] += 1.0  # past the reconnect delay
            assert await client.request("stats") == charon.recording.answers["stats"]
            assert charon.connections_opened == 2
        finally:
            await client.close()


async def test_event_stream_backoff_starts_over_only_after_a_stable_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event stream's own rule: a connection that dies at once after connecting (a peer
    that hangs up, or sends garbage) keeps doubling the delay; one that lived
    STABLE_SECONDS proved the peer sane, and the delay starts over."""
    stable = 0.5
    monkeypatch.setattr(event_stream, "STABLE_SECONDS", stable)
    backoff = Backoff(initial=0.02, maximum=0.08)
    listings: list[int] = []

    async def reconcile() -> None:
        listings.append(1)

    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        stream = event_stream.EventStream(
            charon.address,
            2.0,
            on_event=lambda _event: None,
            on_subscribed=reconcile,
            backoff=backoff,
            liveness_interval=0.1,
        )
        charon.hang_up = True  # every attempt: connected, then hung up on, unregistered
        stream.start()
        try:
            await charon.wait_until(lambda: charon.connections_opened >= 5)
            attempts = [a.at for a in charon.stream_registrations]
            gaps = [b - a for a, b in itertools.pairwise(attempts)]
            assert all(
                g >= d - EPSILON for g, d in zip(gaps, [0.02, 0.04, 0.08, 0.08], strict=False)
            )
            assert backoff.delay == 0.08
            assert not stream.up and not listings

            charon.hang_up = False
            await eventually(lambda: stream.up, "the stream subscribed")
            assert listings == [1]  # and asked for a listing
            # It lives past STABLE_SECONDS (its liveness questions say how long) ...
            connection = charon.stream_registrations[-1].connection
            await charon.wait_until(lambda: _questions(charon, connection) > stable / 0.1)
            charon.drop(event_stream_only=True)
            await eventually(lambda: stream.up and stream.reconnects == 1, "subscribed again")
            assert backoff.delay == 0.02  # ... so the delay started over
            # One lost at once after connecting does not start it over.
            charon.drop(event_stream_only=True)
            await eventually(lambda: stream.up and stream.reconnects == 2, "subscribed again")
            assert backoff.delay == 0.04
            assert listings == [1, 1, 1]
        finally:
            await stream.stop()


def _questions(charon: FakeViciServer, connection: int) -> int:
    return sum(1 for a in charon.asked if a.connection == connection and a.name == "version")
