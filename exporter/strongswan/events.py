"""charon's event stream on a second VICI connection, feeding the `SaLedger`.

The stream reconnects by itself (charon restarts, socket missing), and after every
(re)connect asks for a fresh listing so that SAs which vanished while it was away are
counted as down exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from vici.protocol import Packet

from exporter.config import ViciAddress
from exporter.strongswan.ledger import SaLedger
from exporter.vici import Backoff, ViciConnection, ViciError

log = logging.getLogger("exporter.events")

EVENTS = ("ike-updown", "child-updown", "ike-rekey", "child-rekey")
#: How often drops past their reauthentication grace time get counted.
TICK_SECONDS = 1.0


class EventStream:
    def __init__(
        self,
        address: ViciAddress,
        timeout: float,
        ledger: SaLedger,
        reconcile: Callable[[], Awaitable[None]],
        backoff: Backoff | None = None,
        consumers: Sequence[Callable[[str, Mapping[str, Any]], None]] = (),
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.ledger = ledger
        self._reconcile = reconcile
        self._backoff = backoff or Backoff()
        #: Who else learns of every event (the SA model), after the ledger.
        self._consumers = [ledger.apply_event, *consumers]
        self._on_lost = on_lost
        self.up = False
        self.reconnects = 0
        self.events_received = 0
        self.connected_once = False
        self._tasks: list[asyncio.Task[None]] = []
        self._conn: ViciConnection | None = None

    def reconfigure(self, address: ViciAddress, timeout: float) -> None:
        """Reconnect to another socket (the ledger and its counts stay)."""
        self.address = address
        self.timeout = timeout
        if self._conn is not None:
            self._conn.abort()  # the read loop sees it closed and reconnects

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.run(), name="vici-event-stream"),
            asyncio.create_task(self._tick(), name="ledger-tick"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tick(self) -> None:
        # Drops are counted once their reauthentication grace is over, events or not.
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.ledger.tick()

    async def run(self) -> None:
        failing = False
        while True:
            conn: ViciConnection | None = None
            try:
                conn = self._conn = await ViciConnection.open(self.address, self.timeout)
                async with asyncio.timeout(self.timeout):
                    for event in EVENTS:
                        await conn.register(event)
                if self.connected_once:
                    self.reconnects += 1
                self.connected_once = True
                self.up = True
                self._backoff.reset()
                if failing:
                    log.info("event stream reconnected", extra={"socket": str(self.address)})
                    failing = False
                await self._reconcile_safely()
                await self._read(conn)
            except ViciError as err:
                if not failing:
                    log.warning(
                        "event stream not connected; retrying in the background",
                        extra={"socket": str(self.address), "err": str(err)},
                    )
                    failing = True
            except TimeoutError:
                if not failing:
                    log.warning("event stream registration timed out; reconnecting")
                    failing = True
            except Exception:  # never let the stream die for good
                log.exception("event stream failed; reconnecting")
                failing = True
            finally:
                if self.up and self._on_lost is not None:
                    self._on_lost()
                self.up = False
                self._conn = None
                if conn is not None:
                    await conn.close()
            await asyncio.sleep(self._backoff.failed())

    async def _reconcile_safely(self) -> None:
        try:
            await self._reconcile()
        except ViciError as err:
            # The next scrape reconciles too; the stream itself is fine.
            log.debug("reconcile after connect failed", extra={"err": str(err)})

    async def _read(self, conn: ViciConnection) -> None:
        while True:
            frame = await conn.receive()
            if frame.kind != Packet.EVENT:
                continue
            self.events_received += 1
            for consume in self._consumers:
                try:
                    consume(frame.name, frame.message)
                except Exception:  # one odd event must not stop the stream
                    log.exception("cannot apply event", extra={"event": frame.name})
