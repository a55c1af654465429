"""The owner of what the exporter knows about pluto: the last round of `ipsec` answers,
whether pluto answered, and the ledger of SAs that came and went.

A round is asked at scrape time (pluto answers its status commands from memory in
milliseconds; there is no VICI-like subscription to keep a background view current).
Concurrent scrapes share one round (the Scraper collects once for all of them).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from exporter.libreswan.ledger import LedgerReadings, PlutoLedger
from exporter.libreswan.model import PlutoSnapshot

#: One round of questions to pluto; raises with a message naming what failed.
AskPluto = Callable[[], Awaitable[PlutoSnapshot]]


class PlutoView:
    def __init__(self, ask: AskPluto, ledger: PlutoLedger | None = None) -> None:
        self._ask = ask
        self.ledger = ledger if ledger is not None else PlutoLedger()
        self._snapshot: PlutoSnapshot | None = None
        self.up = False
        #: Why the last round failed ("" after a good one).
        self.error = ""
        #: Rounds that failed, since the exporter started.
        self.failures = 0

    async def refresh(self) -> None:
        """Ask pluto one round; never raises (a failure is `up` False and `error`)."""
        try:
            snapshot = await self._ask()
        except Exception as err:  # any failure of the round is pluto being unreadable
            # Not logged here: the scrape layer logs one line when the collector starts
            # failing (with this message) and one when it recovers.
            self.up = False
            self.error = str(err) or type(err).__name__
            self.failures += 1
            return
        self.ledger.observe(snapshot)
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
