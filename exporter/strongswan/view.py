"""The live view of charon: one object owns what the exporter knows of it.

`CharonView` owns the VICI client and its refresh rounds, the latest snapshot, the SA
table that events keep current between listings, the ledger (with events on) and the
event stream with its health. Data flows one way: VICI → the view → the collector, which
renders from the view's small read API and drives nothing. The event stream decodes each
event once and hands it to the view, which hands it to the SA table and the ledger; it
tells the view when it subscribed (list now: what was missed?) and when it was lost.

`/metrics` renders the view and never waits on charon: a `list-sas` of thousands of SAs
costs charon seconds. A background task asks for the cheap parts (stats, connections,
pools, certificates, counters) every `refresh_interval` seconds and for `list-sas`
(reconciling the SA table and the ledger, and the CHILD SA byte counts) every
`listing_interval()` seconds (fixed, or picked from what the last listing cost) and right
after the event stream reconnects; between listings the event stream keeps the SA table
and the ledger current, and the kernel's counts (`observe_traffic`) the traffic. With
`refresh_interval = 0` every scrape asks charon for everything (small servers, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter.strongswan.charon_events import CharonEvent
from exporter.strongswan.event_stream import EventStream
from exporter.strongswan.fetch import fetch_snapshot
from exporter.strongswan.ledger import LedgerReadings, SaLedger, Traffic
from exporter.strongswan.options import StrongswanOptions
from exporter.strongswan.sa_table import SaTable
from exporter.strongswan.snapshot import StrongswanSnapshot
from exporter.vici import ViciClient, ViciError
from exporter.vici.address import ViciAddress

log = logging.getLogger("exporter.strongswan")

#: How often drops past their reauthentication grace time get counted.
TICK_SECONDS = 1.0
#: The automatic listing interval is this many times what the last listing round took:
#: charon spends at most about 1 % of its time listing for the exporter (a 20-SA server's
#: 20 ms listing → every sa-refresh-min; a 5,000-SA listing of 3 s → every 5 minutes).
LISTING_COST_FACTOR = 100.0


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """The event stream as a scrape reports it."""

    #: Subscribed to charon's events right now.
    up: bool
    #: Times it subscribed again after losing a subscription.
    reconnects: int
    #: Event frames received.
    events_received: int


class CharonView:
    def __init__(self, address: ViciAddress, timeout: float, options: StrongswanOptions) -> None:
        self._client = ViciClient(address, timeout)
        self._refresh_interval = options.refresh_interval
        self._sa_refresh_interval = options.sa_refresh_interval
        self._sa_refresh_bounds = (options.sa_refresh_min, options.sa_refresh_max)
        self._sa_table = SaTable(max_sas=options.max_sas)
        #: Seconds the last listing round took (what `listing_interval` scales).
        self._listing_seconds: float | None = None
        #: When `observe_traffic` last had kernel counts of CHILD SAs.
        self._kernel_counts_at: float | None = None
        self._ledger: SaLedger | None = None
        self._stream: EventStream | None = None
        if options.events:
            self._ledger = SaLedger(
                reauth_grace=options.reauth_grace,
                user_idle_seconds=options.user_idle_seconds,
                max_sas=options.max_sas,
            )
            # Its own connection: VICI carries one command at a time, and events arrive
            # whenever charon has them.
            self._stream = EventStream(
                address,
                timeout,
                on_event=self._on_event,
                on_subscribed=self.refresh,
                on_lost=self._request_refresh,
            )
        self._snapshot: StrongswanSnapshot | None = None
        #: Monotonic times of the last successful refresh and list-sas.
        self._refreshed_at: float | None = None
        self._listed_at: float | None = None
        self._ok = False
        self._error = "not asked yet"
        #: Wakes the round loop early (a listing asked for, or a reload that may change
        #: when the next listing is due).
        self._wake = asyncio.Event()
        #: A listing was asked for now (the stream reconnected, charon moved).
        self._listing_asked = False
        #: A listing was asked for (_request_refresh) and none has succeeded since.
        self._listing_owed = False
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    # ---- the read API: what the collector renders ----------------------------------

    @property
    def background(self) -> bool:
        """Refreshed in the background (else each scrape calls `refresh` itself)."""
        return self._refresh_interval > 0

    def current(self) -> StrongswanSnapshot | None:
        """The latest snapshot with the SAs as the events have kept them since."""
        if self._snapshot is None:
            return None
        return dataclasses.replace(self._snapshot, ike_sas=self._sa_table.ike_sas())

    @property
    def up(self) -> bool:
        """charon answered the last round, and the event stream (if on) is subscribed or
        has never been (a stream that cannot subscribe at start does not hide charon)."""
        stream = self._stream
        stream_ok = stream is None or stream.up or not stream.connected_once
        return self._ok and stream_ok

    @property
    def error(self) -> str:
        """Why the view is not `up` ("" when it is)."""
        if self.up:
            return ""
        return self._error or "the event stream to charon is down"

    def age(self) -> float | None:
        """Seconds since the last successful round (None: none yet)."""
        return _since(self._refreshed_at)

    def listing_age(self) -> float | None:
        """Seconds since the last successful list-sas (None: none yet)."""
        return _since(self._listed_at)

    def listing_seconds(self) -> float | None:
        """Seconds the last successful round with list-sas took (None: none yet)."""
        return self._listing_seconds

    def ledger_readings(self) -> LedgerReadings | None:
        """The ledger's counts and totals, drops past their grace counted (None: events
        off, no ledger)."""
        if self._ledger is None:
            return None
        self._ledger.tick()
        return self._ledger

    @property
    def untracked(self) -> int:
        """SAs left out for `max_sas`: the ledger's count with events on, else the SA
        table's (which then only listings fill)."""
        return self._ledger.untracked if self._ledger is not None else self._sa_table.untracked

    def stream_health(self) -> StreamHealth | None:
        """None: events off."""
        stream = self._stream
        if stream is None:
            return None
        return StreamHealth(stream.up, stream.reconnects, stream.events_received)

    # ---- what changes it -------------------------------------------------------------

    def observe_traffic(
        self, seen: Mapping[str, Traffic], gone: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Fresher byte and packet counts of live CHILD SAs by uniqueid (the kernel's XFRM
        states, read at a scrape), for the ledger's totals (no ledger: events off, ignored).
        `gone`: (IKE SA, CHILD SA) uniqueids of REKEYED CHILD SAs none of whose states the
        kernel holds any more, which charon deleted without an event."""
        if seen:
            self._kernel_counts_at = time.monotonic()
        self._sa_table.forget_rekeyed(gone)
        if self._ledger is not None:
            self._ledger.observe(seen)

    def listing_interval(self) -> float:
        """Seconds between background listings: `sa_refresh_interval` when set, else
        (auto) LISTING_COST_FACTOR times what the last listing round took, within
        `sa_refresh_min` and `sa_refresh_max`; `sa_refresh_max` while the kernel gives the
        CHILD SA counts (`observe_traffic` had some within that time), since listings then
        only reconcile what the events keep current."""
        if self._sa_refresh_interval is not None:
            return self._sa_refresh_interval
        low, high = self._sa_refresh_bounds
        kernel = self._kernel_counts_at
        counted = kernel is not None and time.monotonic() - kernel < high
        return auto_listing_interval(self._listing_seconds or 0.0, low, high, counted)

    async def refresh(self, list_sas: bool = True) -> None:
        """One round of questions (`list_sas`: with the listing, and the SA table and
        the ledger follow its answer)."""
        async with self._lock:
            listed_after = self._ledger.clock() if self._ledger is not None else 0.0
            started = time.monotonic()
            if list_sas:
                self._sa_table.begin_listing()
            try:
                try:
                    snapshot = await fetch_snapshot(self._client, list_sas)
                except BaseException:
                    self._sa_table.abandon_listing()  # no answer to replay onto
                    raise
            except ViciError as err:
                self._ok = False
                self._error = str(err)
                return
            except Exception as err:  # a bug must not leave the last good answer "up"
                if self._error != f"{type(err).__name__}: {err}":
                    log.exception("cannot read charon's answers")
                self._ok = False
                self._error = f"{type(err).__name__}: {err}"
                return
            if list_sas:
                self._sa_table.replace(snapshot.ike_sas, snapshot.taken_at)
                if self._ledger is not None:
                    self._ledger.reconcile(
                        snapshot.ike_sas, listed_after, snapshot.stats.start_time
                    )
                self._listed_at = time.monotonic()
                self._listing_seconds = self._listed_at - started
            self._snapshot = snapshot
            self._refreshed_at = time.monotonic()
            self._ok = True
            self._error = ""

    def _on_event(self, event: CharonEvent) -> None:
        """One decoded event from the stream, for the SA table and the ledger."""
        consumers = [self._sa_table.apply]
        if self._ledger is not None:
            consumers.insert(0, self._ledger.apply)
        for consume in consumers:
            try:
                consume(event)
            except Exception:  # one odd event must not stop the stream
                log.exception("cannot apply event", extra={"event": type(event).__name__})

    def _request_refresh(self) -> None:
        """Refresh now (the event stream was lost, or charon moved: what did we miss?)."""
        self._listing_asked = True
        self._wake.set()

    def reconfigure(self, options: StrongswanOptions) -> None:
        """A reload. Events on/off, `reauth_grace`, and switching between background and
        per-scrape refreshes take a restart: they keep their running values."""
        if (options.refresh_interval > 0) == self.background:
            self._refresh_interval = options.refresh_interval
        self._sa_refresh_interval = options.sa_refresh_interval
        self._sa_refresh_bounds = (options.sa_refresh_min, options.sa_refresh_max)
        if self.background:
            # Recompute when the next listing is due (it may be sooner now); a reload
            # alone asks for no listing, which costs charon seconds at thousands of SAs.
            self._wake.set()
        # The caps; what is tracked stays.
        self._sa_table.max_sas = options.max_sas
        if self._ledger is not None:
            self._ledger.max_sas = options.max_sas
            self._ledger.user_idle_seconds = options.user_idle_seconds

    def reconfigure_vici(self, address: ViciAddress, timeout: float) -> None:
        """Ask charon on another socket or with another timeout (the ledger's counts
        stay); another socket is listed at once."""
        if (address, timeout) == (self._client.address, self._client.timeout):
            return
        moved = address != self._client.address
        self._client.reconfigure(address, timeout)
        if self._stream is not None:
            self._stream.reconfigure(address, timeout)
        if moved:
            # Another charon: its SAs, not the old one's, from the next round on (with
            # events on, the stream's reconnect asks for this too).
            self._request_refresh()

    # ---- running ---------------------------------------------------------------------

    def start(self) -> None:
        if self._stream is not None:
            self._stream.start()
            self._tasks.append(asyncio.create_task(self._tick(), name="ledger-tick"))
        if self.background:
            self._tasks.append(asyncio.create_task(self._run(), name="strongswan-refresh"))

    async def close(self) -> None:
        """Stop the stream and the background tasks, and close the VICI client."""
        if self._stream is not None:
            await self._stream.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._client.close()

    async def _tick(self) -> None:
        # Drops are counted once their reauthentication grace is over, events or not.
        while self._ledger is not None:
            await asyncio.sleep(TICK_SECONDS)
            self._ledger.tick()

    def _listing_due(self) -> bool:
        age = self.listing_age()
        return (
            age is None
            or age >= self.listing_interval()
            or self._listing_owed
            or self._listing_asked
        )

    async def _run(self) -> None:
        while True:
            list_sas = self._listing_due()
            # Cleared before the round: a _request_refresh() while it runs (the event
            # stream lost) must start the next round at once, not wait for the interval.
            self._wake.clear()
            self._listing_asked = False
            listed_before = self._listed_at
            if list_sas:
                self._listing_owed = False
            try:
                await self.refresh(list_sas=list_sas)
            except Exception:  # the refresher must outlive any surprise
                log.exception("refresh failed")
            if list_sas and self._listed_at == listed_before:
                # The listing failed (charon slow, or the client in its reconnect delay):
                # owe it to the next round, which waits for the interval as usual, so an
                # absent charon is not asked in a loop.
                self._listing_owed = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_round_in()):
                    await self._wake.wait()

    def _next_round_in(self) -> float:
        """Seconds to the next round: `refresh_interval`, or sooner when a listing falls
        due before it (a listing interval shorter than the refresh interval is honoured)."""
        age = self.listing_age()
        if age is None or self._listing_owed:
            return self._refresh_interval
        return max(0.0, min(self._refresh_interval, self.listing_interval() - age))


def auto_listing_interval(
    listing_seconds: float, low: float, high: float, kernel_counts: bool = False
) -> float:
    """`--collector.strongswan.sa-refresh-interval auto`: LISTING_COST_FACTOR times what
    the last listing round took, within [low, high]; `high` when the kernel gives the
    CHILD SA counts."""
    if kernel_counts:
        return high
    return min(high, max(low, LISTING_COST_FACTOR * listing_seconds))


def _since(monotonic: float | None) -> float | None:
    return None if monotonic is None else time.monotonic() - monotonic
