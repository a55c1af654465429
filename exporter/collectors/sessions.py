"""One series per connected client: ppp interface, L2TP tunnel, IKE SA and user joined.

Traffic per session is not repeated here: join on `interface` with the ppp_* series,
e.g. `ppp_interface_receive_bytes_total * on(interface) group_left(user)
l2tp_ipsec_session_info` (docs/kernel.md).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import Collection
from exporter.collectors.join import IkeSnapshot, join_sessions
from exporter.collectors.limits import SeriesLimiter
from exporter.kernel.gcpause import gc_paused
from exporter.kernel.l2tp import L2tpUnavailable
from exporter.kernel.model import L2tpIpsecSession, L2tpSnapshot, PppHookRecord, PppInterface
from exporter.kernel.source import KernelSource
from exporter.table_family import gauge_table

log = logging.getLogger("exporter.collectors.sessions")

SESSION_LABELS = (
    "interface",
    "user",
    "ppp_user",
    "ike_user",
    "conn",
    "public_address",
    "inner_address",
    "ike_uniqueid",
)


@gc_paused
def render_sessions(sessions: Sequence[L2tpIpsecSession], limiter: SeriesLimiter) -> list[Metric]:
    count = GaugeMetricFamily(
        "l2tp_ipsec_sessions",
        "Connected L2TP/IPsec clients (ppp interfaces matching --collector.ppp.interfaces).",
        value=len(sessions),
    )
    info = gauge_table(
        "l2tp_ipsec_session_info",
        "One series per client: its ppp interface, user (PPP user, else IKE user), IKE SA, "
        "public and inner address; always 1.",
        SESSION_LABELS,
    )
    start = gauge_table(
        "l2tp_ipsec_session_start_timestamp_seconds",
        "When the client's session came up (ppp IPCP up, else the IKE SA), in seconds since "
        "the epoch.",
        ["interface"],
    )
    taken = limiter.take("l2tp_ipsec_session_info", sessions)
    labels = attrgetter(*SESSION_LABELS)
    info.extend([(labels(s), 1) for s in taken])
    start.extend([((s.interface,), s.started_at) for s in taken if s.started_at is not None])
    return [count, info, start]


class SessionsCollector:
    name = "sessions"

    def __init__(
        self,
        source: KernelSource,
        ike_snapshot: Callable[[], IkeSnapshot | None],
        limiter: SeriesLimiter,
    ) -> None:
        self._source = source
        self._ike = ike_snapshot
        self._limiter = limiter

    async def collect(self) -> Collection:
        try:
            joined = await read_joined(self._source, self._ike())
        except (OSError, TimeoutError) as err:
            return Collection(success=False, error=f"rtnetlink: {err or 'timeout'}")
        return Collection(families=render_sessions(joined.sessions, self._limiter))


@dataclass(frozen=True)
class Joined:
    """One reading of the clients: the ppp interfaces, the hook's up records, and the
    sessions joined from them, L2TP and the IKE daemon."""

    interfaces: list[PppInterface]
    hooks: dict[str, PppHookRecord]
    sessions: list[L2tpIpsecSession]


#: Per source: the last join and the readings it was made of. The sessions collector and
#: the login tracker both join at every scrape, from the same shared readings; the second
#: gets the first's answer (a join costs ~25 ms at 1,000 clients).
_LAST_JOIN: weakref.WeakKeyDictionary[KernelSource, tuple[tuple[object, ...], Joined]] = (
    weakref.WeakKeyDictionary()
)


def _same(last: tuple[object, ...], now: tuple[object, ...]) -> bool:
    """The kernel's readings are the very objects (each reading is a new one, and the memo
    holds the last, so identity cannot be reused); the IKE daemon's snapshot is rebuilt
    by every call of its getter, so it is compared by value (its SAs are frozen
    dataclasses: equal snapshots join the same)."""
    *kernel, ike = now
    *last_kernel, last_ike = last
    return all(a is b for a, b in zip(last_kernel, kernel, strict=True)) and (
        last_ike is ike or last_ike == ike
    )


async def read_joined(source: KernelSource, ike: IkeSnapshot | None) -> Joined:
    """Read the ppp interfaces (OSError/TimeoutError when rtnetlink fails), then what the
    join needs; a kernel without L2TP (user-space xl2tpd) joins through the hook's
    ipparam instead. Callers that read the same readings share one join."""
    interfaces = await source.ppp()
    l2tp: L2tpSnapshot | None = None
    if interfaces:
        try:
            l2tp = await source.l2tp()
        except L2tpUnavailable:
            pass  # user-space L2TP: the hook's ipparam names the peer instead
        except (OSError, TimeoutError) as err:
            log.debug("no L2TP for the join", extra={"err": str(err)})
    hooks = await source.hooks() if interfaces else {}
    readings = (interfaces, l2tp, hooks, ike)
    last = _LAST_JOIN.get(source)
    if last is not None and _same(last[0], readings):
        return last[1]
    joined = Joined(interfaces, hooks, join_sessions(interfaces, l2tp, hooks, ike))
    _LAST_JOIN[source] = (readings, joined)
    return joined
