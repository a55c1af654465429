"""What the daemon knows about charon, refreshed in the background.

`/metrics` renders this state and never waits on charon: a `list-sas` of thousands of
SAs costs charon seconds. A background task asks for the cheap parts (stats, connections,
pools, certificates, counters) every `refresh_interval` seconds and for `list-sas`
(reconciling the SA model and the ledger, and the CHILD SA byte counts) every
`sa_refresh_interval` seconds and right after the event stream reconnects; between
listings the event stream keeps the SA model and the ledger current. With
`refresh_interval = 0` every scrape asks charon for everything (small servers, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from exporter.strongswan.charon_events import CharonEvent
from exporter.strongswan.fetch import fetch_snapshot
from exporter.strongswan.ledger import SaLedger
from exporter.strongswan.model import StrongswanSnapshot
from exporter.strongswan.sa_model import SaModel
from exporter.vici import ViciClient, ViciError

log = logging.getLogger("exporter.strongswan")


class StrongswanState:
    def __init__(
        self,
        client: ViciClient,
        ledger: SaLedger | None,
        refresh_interval: float,
        sa_refresh_interval: float = 120.0,
        max_sas: int = 10000,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.refresh_interval = refresh_interval
        self.sa_refresh_interval = sa_refresh_interval
        #: Monotonic time of the last successful list-sas.
        self.listed_at: float | None = None
        self.model = SaModel(max_sas=max_sas)
        self.snapshot: StrongswanSnapshot | None = None
        #: Monotonic time of the last successful refresh.
        self.refreshed_at: float | None = None
        self.ok = False
        self.error = "not asked yet"
        self.refreshes = 0
        self._wake = asyncio.Event()
        #: A listing was asked for (request_refresh) and none has succeeded since.
        self._listing_owed = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def background(self) -> bool:
        return self.refresh_interval > 0

    def apply(self, event: CharonEvent) -> None:
        self.model.apply(event)

    async def refresh(self, list_sas: bool = True) -> None:
        """One round of questions (`list_sas`: with the listing, and the model and the
        ledger follow its answer)."""
        async with self._lock:
            listed_after = self.ledger.clock() if self.ledger is not None else 0.0
            try:
                snapshot = await fetch_snapshot(self.client, list_sas)
            except ViciError as err:
                self.ok = False
                self.error = str(err)
                return
            except Exception as err:  # a bug must not leave the last good answer "up"
                if self.error != f"{type(err).__name__}: {err}":
                    log.exception("cannot read charon's answers")
                self.ok = False
                self.error = f"{type(err).__name__}: {err}"
                return
            if list_sas:
                self.model.replace(snapshot.ike_sas, snapshot.taken_at)
                if self.ledger is not None:
                    self.ledger.reconcile(snapshot.ike_sas, listed_after, snapshot.stats.start_time)
                self.listed_at = time.monotonic()
            self.snapshot = snapshot
            self.refreshed_at = time.monotonic()
            self.refreshes += 1
            self.ok = True
            self.error = ""

    def set_max_sas(self, max_sas: int) -> None:
        """The cap of the SA model and the ledger (a reload); what is tracked stays."""
        self.model.max_sas = max_sas
        if self.ledger is not None:
            self.ledger.max_sas = max_sas

    def request_refresh(self) -> None:
        """Refresh now (the event stream reconnected: what did we miss?)."""
        self._wake.set()

    async def reconcile(self) -> None:
        await self.refresh()

    def current(self) -> StrongswanSnapshot | None:
        """The latest snapshot with the SAs as the events have kept them since."""
        if self.snapshot is None:
            return None
        return dataclasses.replace(self.snapshot, ike_sas=self.model.ike_sas())

    def age(self) -> float | None:
        return _since(self.refreshed_at)

    def listing_age(self) -> float | None:
        return _since(self.listed_at)

    def _listing_due(self) -> bool:
        age = self.listing_age()
        return (
            age is None
            or age >= self.sa_refresh_interval
            or self._listing_owed
            or self._wake.is_set()
        )

    def start(self) -> None:
        if self.background:
            self._task = asyncio.create_task(self._run(), name="strongswan-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            list_sas = self._listing_due()
            # Cleared before the round: a request_refresh() while it runs (the event
            # stream lost) must start the next round at once, not wait for the interval.
            self._wake.clear()
            listed_before = self.listed_at
            if list_sas:
                self._listing_owed = False
            try:
                await self.refresh(list_sas=list_sas)
            except Exception:  # the refresher must outlive any surprise
                log.exception("refresh failed")
            if list_sas and self.listed_at == listed_before:
                # The listing failed (charon slow, or the client in its reconnect delay):
                # owe it to the next round, which waits for the interval as usual, so an
                # absent charon is not asked in a loop.
                self._listing_owed = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.refresh_interval):
                    await self._wake.wait()


def _since(monotonic: float | None) -> float | None:
    return None if monotonic is None else time.monotonic() - monotonic
