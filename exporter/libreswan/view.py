"""The owner of what the exporter knows about pluto: the last round of `ipsec` answers,
whether pluto answered, and the ledger of SAs that came and went.

A round is asked at scrape time (pluto answers its status commands from memory in
milliseconds; there is no VICI-like subscription to keep a background view current).
Concurrent scrapes share one round (the Scraper collects once for all of them).

pluto has no event stream, but the kernel announces every SA it installs or deletes (the
XFRM notifications, `exporter.kernel.xfrm_events`). With `follow_kernel`, each
announcement asks pluto a round soon after (debounced), so an IPsec SA that comes and goes
between two scrapes is still seen by the ledger, once, with its identity; and a deleted
SA's final byte counts (carried by the notification) replace its last polled ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from exporter.kernel.model import XfrmState
from exporter.kernel.xfrm_events import (
    ResyncNeeded,
    SaDeleted,
    SaExpired,
    SourceStats,
    XfrmEvent,
    XfrmEventSource,
)
from exporter.libreswan.ledger import LedgerReadings, PlutoLedger, Traffic
from exporter.libreswan.model import PlutoSnapshot

log = logging.getLogger("exporter.libreswan")

#: Seconds between a kernel announcement and the round it asks for: a rekey or a
#: connect installs several states within milliseconds; one round sees them all.
ROUND_DELAY = 0.3
#: Seconds after the last announcement of a burst for one more round (see _kernel_event).
SETTLE_DELAY = 2.0

#: One round of questions to pluto; raises with a message naming what failed.
AskPluto = Callable[[], Awaitable[PlutoSnapshot]]
#: A quick round (trafficstatus alone) completing the previous snapshot.
AskTraffic = Callable[[PlutoSnapshot], Awaitable[PlutoSnapshot]]


class PlutoView:
    def __init__(
        self,
        ask: AskPluto,
        ledger: PlutoLedger | None = None,
        ask_traffic: AskTraffic | None = None,
    ) -> None:
        self._ask = ask
        self._ask_traffic = ask_traffic
        self.ledger = ledger if ledger is not None else PlutoLedger()
        self._snapshot: PlutoSnapshot | None = None
        self.up = False
        #: Why the last round failed ("" after a good one).
        self.error = ""
        #: Rounds that failed, since the exporter started.
        self.failures = 0
        self._lock = asyncio.Lock()
        self._kernel: XfrmEventSource | None = None
        self._round: asyncio.TimerHandle | None = None
        self._settle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Final counts the kernel announced, per pluto serial: [inbound, outbound].
        self._finals: dict[int, list[int | None]] = {}

    def follow_kernel(self, netns: str | None) -> None:
        """Subscribe to the kernel's XFRM notifications (in `netns`) from now on; the
        subscription retries in the background when it cannot be made."""
        if self._kernel is None:
            self._kernel = XfrmEventSource(handler=self._kernel_event, netns=netns)
            self._spawn(self._kernel.start())

    def kernel_stats(self) -> SourceStats | None:
        return self._kernel.stats if self._kernel is not None else None

    async def close(self) -> None:
        for timer in (self._round, self._settle):
            if timer is not None:
                timer.cancel()
        if self._kernel is not None:
            await self._kernel.stop()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _spawn(self, work: Awaitable[object]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _kernel_event(self, event: XfrmEvent) -> None:
        log.debug("kernel SA event", extra={"event": type(event).__name__})
        if isinstance(event, SaDeleted) or (isinstance(event, SaExpired) and event.hard):
            self._final(event.state)
        if isinstance(event, ResyncNeeded):
            return
        loop = asyncio.get_running_loop()
        if self._round is None:
            self._round = loop.call_later(ROUND_DELAY, self._kernel_round)
        # pluto installs an SA's kernel states before it calls the SA established (the
        # responder's inbound state goes in at Quick Mode's second message), so a round
        # right after the announcement may not list it yet: one more when the burst of
        # announcements has settled.
        if self._settle is not None:
            self._settle.cancel()
        self._settle = loop.call_later(SETTLE_DELAY, self._settled_round)

    def _kernel_round(self) -> None:
        self._round = None
        self._spawn(self.refresh(quick=True))

    def _settled_round(self) -> None:
        self._settle = None
        self._spawn(self.refresh())

    def _final(self, state: XfrmState) -> None:
        """A deleted SA's final count, for the pluto IPsec SA whose SPI it has."""
        snapshot = self._snapshot
        if snapshot is None:
            return
        for sa in snapshot.ipsec_sas:
            for direction, spi in ((0, sa.spi_in), (1, sa.spi_out)):
                if spi is None or _spi(spi) != state.spi:
                    continue
                finals = self._finals.setdefault(sa.serial, [None, None])
                finals[direction] = state.bytes
                self.ledger.record_final(
                    sa.serial,
                    Traffic(
                        finals[0] if finals[0] is not None else 0,
                        finals[1] if finals[1] is not None else 0,
                    ),
                )
                return

    async def refresh(self, quick: bool = False) -> None:
        """Ask pluto one round; never raises (a failure is `up` False and `error`).
        Rounds never overlap (the ledger compares each with the one before). A `quick`
        one asks trafficstatus alone when there is a full round to complete."""
        async with self._lock:
            await self._refresh(quick)

    async def _refresh(self, quick: bool) -> None:
        previous = self._snapshot
        try:
            if quick and self._ask_traffic is not None and previous is not None and self.up:
                snapshot = await self._ask_traffic(previous)
            else:
                snapshot = await self._ask()
        except Exception as err:  # any failure of the round is pluto being unreadable
            # Not logged here: the scrape layer logs one line when the collector starts
            # failing (with this message) and one when it recovers.
            self.up = False
            self.error = str(err) or type(err).__name__
            log.debug("pluto round failed", extra={"err": self.error})
            self.failures += 1
            return
        if log.isEnabledFor(logging.DEBUG):
            serials = ",".join(str(sa.serial) for sa in snapshot.ipsec_sas)
            log.debug("pluto round", extra={"ipsec_sas": serials})
        self.ledger.observe(snapshot)
        live = {sa.serial for sa in snapshot.ipsec_sas}
        self._finals = {k: v for k, v in self._finals.items() if k in live}
        self._snapshot = snapshot
        self.up = True
        self.error = ""

    def current(self) -> PlutoSnapshot | None:
        """The last round's snapshot while pluto answers, else None (so the per-client
        join never names users from a stale state)."""
        return self._snapshot if self.up else None

    def last(self) -> PlutoSnapshot | None:
        """The last good round, even when pluto stopped answering since."""
        return self._snapshot

    def readings(self) -> LedgerReadings:
        return self.ledger.readings()

    def age(self) -> float | None:
        if self._snapshot is None:
            return None
        return max(0.0, time.time() - self._snapshot.taken_at)


def _spi(text: str) -> int | None:
    try:
        return int(text, 16)
    except ValueError:
        return None
