"""Per-login (PPP user) counters that survive reconnects, and the tracker that feeds them.

`LoginTracker` reads what the login ledger needs at each refresh — the ppp interfaces,
the L2TP sessions and the pppd hooks' up and ended records from the kernel source, the
IKE daemon's latest snapshot — joins them (`collectors.join`) and feeds the ledger
(`exporter.logins.ledger`). The users collector and the /sessions page both read it;
callers within a second share one refresh. `UsersCollector` renders the ledger's view
(docs/logins.md), bounded by the scrape layer's series limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from operator import attrgetter
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.collectors.base import Collection
from exporter.collectors.join import IkeSnapshot
from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.sessions import read_joined
from exporter.kernel.gcpause import gc_paused
from exporter.kernel.hook import ENDED_DIR, REJECT_REASONS, REJECTIONS, RecordRejections
from exporter.kernel.source import KernelSource, Shared
from exporter.logins.ledger import LoginLedger
from exporter.logins.model import LoginsView, LoginTotals
from exporter.logins.options import LoginOptions
from exporter.logins.records import EndedRecordReader
from exporter.table_family import CreatedCounterTable, gauge_table

log = logging.getLogger("exporter.collectors.users")

#: The family the series limit counts the per-login series under.
LIMITED_FAMILY = "l2tp_ipsec_user_sessions"

#: (metric name without _total, LoginTotals field, help).
COUNTERS = (
    (
        "l2tp_ipsec_user_logins",
        "logins",
        "Sessions of the login that began while the exporter ran.",
    ),
    (
        "l2tp_ipsec_user_logouts",
        "logouts",
        "Sessions of the login that ended while the exporter ran.",
    ),
    (
        "l2tp_ipsec_user_connected_seconds",
        "connected_seconds",
        "Seconds the login's sessions were connected while the exporter ran (two sessions at "
        "once count twice).",
    ),
    (
        "l2tp_ipsec_user_receive_bytes",
        "receive_bytes",
        "Bytes received from the login's clients on their ppp interfaces, over all sessions "
        "(ended ones: pppd's BYTES_RCVD or the last count seen, whichever is larger).",
    ),
    (
        "l2tp_ipsec_user_transmit_bytes",
        "transmit_bytes",
        "Bytes sent to the login's clients on their ppp interfaces, over all sessions.",
    ),
    (
        "l2tp_ipsec_user_receive_packets",
        "receive_packets",
        "Packets received from the login's clients, over all sessions (a session seen only "
        "through its ended record adds none: pppd does not give packets).",
    ),
    (
        "l2tp_ipsec_user_transmit_packets",
        "transmit_packets",
        "Packets sent to the login's clients, over all sessions.",
    ),
)


@gc_paused
def render_users(
    view: LoginsView,
    limiter: SeriesLimiter,
    rejected: dict[str, int],
    created: Callable[[str], bool] = lambda family: True,
) -> list[Metric]:
    """`created(family)`: whether the family's counters carry `_created` (not when the
    privacy settings drop the user label: merged series have no one creation time)."""
    totals: Sequence[LoginTotals] = limiter.take(LIMITED_FAMILY, view.totals)
    sessions = gauge_table(
        "l2tp_ipsec_user_sessions", "Sessions of the login connected now.", ["user"]
    )
    last_login = gauge_table(
        "l2tp_ipsec_user_last_login_timestamp_seconds",
        "When the login's newest session began, in seconds since the epoch.",
        ["user"],
    )
    last_logout = gauge_table(
        "l2tp_ipsec_user_last_logout_timestamp_seconds",
        "When the login's last session ended, in seconds since the epoch.",
        ["user"],
    )
    counters = [
        (CreatedCounterTable(name, text, ["user"]), attr, created(name))
        for name, attr, text in COUNTERS
    ]
    adds = [(family.add, attrgetter(attr), with_created) for family, attr, with_created in counters]
    for t in totals:
        user = (t.login,)
        sessions.add(user, t.sessions)
        if t.last_login is not None:
            last_login.add(user, t.last_login)
        if t.last_logout is not None:
            last_logout.add(user, t.last_logout)
        created_at = t.created
        for add, get, with_created in adds:
            add(user, get(t), created_at if with_created else None)
    required = gauge_table(
        "l2tp_ipsec_required_login_up",
        "1 while a required login (--collector.users.required) has a session, else 0.",
        ["user"],
    )
    for login, up in view.required:
        required.add((login,), 1 if up else 0)
    forgotten = CounterMetricFamily(
        "l2tp_ipsec_users_forgotten",
        "Logins forgotten (their series dropped): idle past --collector.users.idle-expiry, "
        "or the longest-idle one when --collector.users.max were tracked.",
        labels=["reason"],
    )
    for reason, n in view.forgotten:
        forgotten.add_metric([reason], n)
    records = CounterMetricFamily(
        "l2tp_ipsec_login_records_rejected",
        "pppd hook records ignored (each once): larger than 4 KiB, not UTF-8, owned by "
        "another user than root or the exporter's, or malformed (e.g. truncated).",
        labels=["reason"],
    )
    for reason in REJECT_REASONS:
        records.add_metric([reason], rejected.get(reason, 0))
    return [
        sessions,
        *(family for family, _attr, _created in counters),
        last_login,
        last_logout,
        required,
        GaugeMetricFamily(
            "l2tp_ipsec_users_tracked", "Logins tracked now.", value=len(view.totals)
        ),
        forgotten,
        GaugeMetricFamily(
            "l2tp_ipsec_sessions_without_login",
            "Connected sessions with no login known (no pppd hook record, no IKE user): "
            "not counted per login.",
            value=view.without_login,
        ),
        records,
    ]


class LoginTracker:
    """Owns the login ledger; `refresh()` feeds it (shared by callers within a second)."""

    def __init__(
        self,
        source: KernelSource,
        ike_snapshot: Callable[[], IkeSnapshot | None],
        options: LoginOptions,
        state_dir: Path,
        clock: Callable[[], float] = time.time,
        rejections: RecordRejections | None = None,
    ) -> None:
        self._source = source
        self._ike = ike_snapshot
        self.rejections = REJECTIONS if rejections is None else rejections
        self.ledger = LoginLedger(options, clock, started_at=clock())
        self._records = EndedRecordReader(state_dir / ENDED_DIR, self.rejections)
        self._shared = Shared(self._refresh, max_age=1.0)

    def reconfigure(self, options: LoginOptions) -> None:
        self.ledger.reconfigure(options)

    async def refresh(self) -> LoginsView:
        """Raises OSError or TimeoutError when the ppp interfaces cannot be read."""
        return await self._shared.get()

    async def view(self) -> LoginsView:
        """The /sessions page's provider."""
        return await self.refresh()

    async def _refresh(self) -> LoginsView:
        joined = await read_joined(self._source, self._ike())
        ended = await asyncio.to_thread(self._records.read)
        return self.ledger.update(joined.sessions, joined.interfaces, joined.hooks, ended)


class UsersCollector:
    name = "users"

    def __init__(
        self,
        tracker: LoginTracker,
        limiter: SeriesLimiter,
        created: Callable[[str], bool] = lambda family: True,
    ) -> None:
        self._tracker = tracker
        self._limiter = limiter
        self._created = created

    async def collect(self) -> Collection:
        try:
            view = await self._tracker.refresh()
        except (OSError, TimeoutError) as err:
            return Collection(success=False, error=f"rtnetlink: {err or 'timeout'}")
        families = render_users(view, self._limiter, self._tracker.rejections.counts, self._created)
        return Collection(families=families)
