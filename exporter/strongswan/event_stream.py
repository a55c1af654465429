"""charon's event stream on a second VICI connection: each event decoded once, for the
owner of charon's live view (`view.CharonView`) to hand to the SA table and the ledger.

The stream reconnects by itself (charon restarts, socket missing), and after every
(re)connect tells its owner, which asks for a fresh listing so that SAs which vanished
while it was away are counted as down exactly once.

A quiet stream looks the same from a calm charon and from a hung one (SIGSTOP, a
deadlock): so every `liveness_interval` seconds the stream asks charon `version` over the
same connection (VICI lets a client send commands on a connection registered for events;
the answer comes between the events) and drops the connection when no answer comes
within the VICI timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from vici.protocol import Packet

from exporter.strongswan.charon_events import EVENTS, CharonEvent, decode_event
from exporter.vici import Backoff, ViciConnection, ViciConnectionError, ViciError
from exporter.vici.address import ViciAddress

log = logging.getLogger("exporter.events")

#: Seconds between liveness questions on the event connection: a hung charon is seen at
#: most this plus the VICI timeout after it stops. charon logs the question at level 2 only.
LIVENESS_INTERVAL = 2.0
#: A connection that lived this long proved charon (or what listens on its socket) sane:
#: only then does the reconnect delay start over from the shortest. One that dies at once
#: after connecting (a peer sending garbage) keeps doubling it.
STABLE_SECONDS = 30.0


class EventStream:
    """The event connection: what it reads goes to `on_event` decoded (once), and its
    owner learns when it subscribed (`on_subscribed`, awaited: list what was missed) and
    when a subscription was lost (`on_lost`). Its health is `up`, `reconnects`,
    `events_received`, `connected_once`."""

    def __init__(
        self,
        address: ViciAddress,
        timeout: float,
        on_event: Callable[[CharonEvent], None],
        on_subscribed: Callable[[], Awaitable[None]],
        on_lost: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
        liveness_interval: float | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._on_event = on_event
        self._on_subscribed = on_subscribed
        self._on_lost = on_lost
        self._backoff = backoff or Backoff()
        self.liveness_interval = (
            LIVENESS_INTERVAL if liveness_interval is None else liveness_interval
        )
        self._answered = asyncio.Event()
        self.up = False
        self.reconnects = 0
        self.events_received = 0
        self.connected_once = False
        self._task: asyncio.Task[None] | None = None
        self._conn: ViciConnection | None = None

    def reconfigure(self, address: ViciAddress, timeout: float) -> None:
        """Reconnect to another socket (its counts stay)."""
        self.address = address
        self.timeout = timeout
        if self._conn is not None:
            self._conn.abort()  # the read loop sees it closed and reconnects

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="vici-event-stream")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        # One warning per outage, not one per attempt: `failing` stays set until a
        # connection has proved stable, so a peer that is dropped at once after every
        # connect (garbage, a hung charon) is reported once.
        failing = False
        loop = asyncio.get_running_loop()
        while True:
            conn: ViciConnection | None = None
            connected_at: float | None = None
            problem: str | None = None
            try:
                conn = self._conn = await ViciConnection.open(self.address, self.timeout)
                async with asyncio.timeout(self.timeout):
                    for event in EVENTS:
                        await conn.register(event)
                if self.connected_once:
                    self.reconnects += 1
                self.connected_once = True
                self.up = True
                connected_at = loop.time()
                if failing:
                    log.info("event stream reconnected", extra={"socket": str(self.address)})
                await self._subscribed()
                await self._serve(conn)
            except ViciError as err:
                problem = str(err)
            except TimeoutError:
                problem = f"registration not confirmed within {self.timeout:g} s"
            except Exception as err:  # never let the stream die for good
                problem = f"{type(err).__name__}: {err}"
                if not failing:
                    log.exception("event stream failed; reconnecting")
                    failing = True
            finally:
                if self.up and self._on_lost is not None:
                    self._on_lost()
                self.up = False
                self._conn = None
                if conn is not None:
                    conn.abort()  # not close(): a hung charon would not read what is queued
            stable = connected_at is not None and loop.time() - connected_at >= STABLE_SECONDS
            if stable:
                self._backoff.reset()
                failing = False
            if not failing:
                log.warning(
                    "event stream not connected; retrying in the background",
                    extra={"socket": str(self.address), "err": problem},
                )
                failing = True
            await asyncio.sleep(self._backoff.failed())

    async def _subscribed(self) -> None:
        try:
            await self._on_subscribed()
        except ViciError as err:
            # The next scrape reconciles too; the stream itself is fine.
            log.debug("reconcile after connect failed", extra={"err": str(err)})

    async def _serve(self, conn: ViciConnection) -> None:
        """Read events and watch charon's liveness until either fails; raises ViciError."""
        reader = asyncio.create_task(self._read(conn), name="vici-event-reader")
        watchdog = asyncio.create_task(self._watch(conn), name="vici-event-liveness")
        try:
            await asyncio.wait((reader, watchdog), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, watchdog):
                task.cancel()
            # Let both end (a cancellation of this task still propagates from here).
            await asyncio.wait((reader, watchdog))
        # Both run until they fail: raise what ended them (fetching both outcomes also
        # keeps asyncio from logging one as never retrieved).
        for error in [t.exception() for t in (reader, watchdog) if not t.cancelled()]:
            if error is not None:
                raise error

    async def _watch(self, conn: ViciConnection) -> None:
        while True:
            await asyncio.sleep(self.liveness_interval)
            self._answered.clear()
            await conn.send_request("version")
            try:
                async with asyncio.timeout(self.timeout):
                    await self._answered.wait()
            except TimeoutError:
                raise ViciConnectionError(
                    f"charon did not answer on the event connection within {self.timeout:g} s"
                ) from None

    async def _read(self, conn: ViciConnection) -> None:
        while True:
            frame = await conn.receive()
            if frame.kind in (Packet.CMD_RESPONSE, Packet.CMD_UNKNOWN):
                self._answered.set()  # the liveness question's answer
                continue
            if frame.kind != Packet.EVENT:
                continue
            self.events_received += 1
            try:
                # Decoded once, for every consumer.
                event = decode_event(frame.name, frame.message, time.time())
                if event is not None:
                    self._on_event(event)
            except Exception:  # one odd event must not stop the stream
                log.exception("cannot apply event", extra={"event": frame.name})
