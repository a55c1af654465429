"""Kernel L2TP tunnels and sessions over generic netlink."""

from __future__ import annotations

import logging
from operator import attrgetter

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import Collection
from exporter.collectors.limits import SeriesLimiter
from exporter.kernel.gcpause import gc_paused
from exporter.kernel.l2tp import L2tpUnavailable
from exporter.kernel.model import L2tpSnapshot
from exporter.kernel.source import KernelSource
from exporter.table_family import counter_table, gauge_table

log = logging.getLogger("exporter.collectors.l2tp")

#: (metric suffix, L2tpStats field, what).
COUNTERS = (
    ("receive_bytes", "rx_bytes", "Bytes received"),
    ("transmit_bytes", "tx_bytes", "Bytes sent"),
    ("receive_packets", "rx_packets", "Packets received"),
    ("transmit_packets", "tx_packets", "Packets sent"),
    ("receive_errors", "rx_errors", "Receive errors"),
    ("transmit_errors", "tx_errors", "Transmit errors"),
)


def available_family(available: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "l2tp_available",
        "1 when the kernel has L2TP (the l2tp_netlink generic netlink family), else 0.",
        value=1 if available else 0,
    )


@gc_paused
def render_l2tp(snap: L2tpSnapshot, limiter: SeriesLimiter) -> list[Metric]:
    families: list[Metric] = [
        available_family(True),
        GaugeMetricFamily("l2tp_tunnels", "Kernel L2TP tunnels.", value=len(snap.tunnels)),
        GaugeMetricFamily(
            "l2tp_sessions",
            "Kernel L2TP sessions (calls; xl2tpd's per-tunnel session 0 is not one).",
            value=len(snap.sessions),
        ),
    ]
    tunnel_info = gauge_table(
        "l2tp_tunnel_info",
        "One series per kernel L2TP tunnel with its ids and endpoints; always 1.",
        [
            "tunnel_id",
            "peer_tunnel_id",
            "local_address",
            "local_port",
            "peer_address",
            "peer_port",
            "encap",
        ],
    )
    tunnel_counters = [
        (
            counter_table(
                f"l2tp_tunnel_{suffix}", f"{what} by the kernel L2TP tunnel.", ["tunnel_id"]
            ),
            field,
        )
        for suffix, field, what in COUNTERS
    ]
    # Rows built a family at a time (one comprehension each): the same rows in the same
    # order as a loop over the tunnels and sessions, at a fraction of the calls.
    tunnels = limiter.take("l2tp_tunnel_info", snap.tunnels)
    tids = [(str(t.tunnel_id),) for t in tunnels]
    tunnel_info.extend(
        [
            (
                (
                    tid,
                    str(t.peer_tunnel_id),
                    t.local_address,
                    str(t.local_port),
                    t.peer_address,
                    str(t.peer_port),
                    t.encap,
                ),
                1,
            )
            for (tid,), t in zip(tids, tunnels, strict=True)
        ]
    )
    tunnel_stats = [t.stats for t in tunnels]
    for family, field in tunnel_counters:
        get = attrgetter(field)
        family.extend([(tid, get(s)) for tid, s in zip(tids, tunnel_stats, strict=True)])
    session_info = gauge_table(
        "l2tp_session_info",
        "One series per kernel L2TP session with its ids and ppp interface; always 1.",
        ["tunnel_id", "session_id", "peer_session_id", "interface"],
    )
    session_counters = [
        (
            counter_table(
                f"l2tp_session_{suffix}",
                f"{what} by the kernel L2TP session.",
                ["tunnel_id", "session_id"],
            ),
            field,
        )
        for suffix, field, what in COUNTERS
    ]
    sessions = limiter.take("l2tp_session_info", snap.sessions)
    ids = [(str(s.tunnel_id), str(s.session_id)) for s in sessions]
    session_info.extend(
        [((*i, str(s.peer_session_id), s.interface), 1) for i, s in zip(ids, sessions, strict=True)]
    )
    session_stats = [s.stats for s in sessions]
    for family, field in session_counters:
        get = attrgetter(field)
        family.extend([(i, get(st)) for i, st in zip(ids, session_stats, strict=True)])
    families += [tunnel_info, *(family for family, _field in tunnel_counters), session_info]
    families += [family for family, _field in session_counters]
    return families


class L2tpCollector:
    name = "l2tp"

    def __init__(self, source: KernelSource, limiter: SeriesLimiter) -> None:
        self._source = source
        self._limiter = limiter
        self._available: bool | None = None

    async def collect(self) -> Collection:
        try:
            snap = await self._source.l2tp()
        except L2tpUnavailable:
            # Not an error: this kernel has no L2TP. Said once, and again if it changes.
            if self._available is not False:
                log.info(
                    "the kernel has no L2TP (module l2tp_netlink not loaded); "
                    "exporting l2tp_available 0"
                )
            self._available = False
            return Collection(families=[available_family(False)])
        except (OSError, TimeoutError) as err:
            return Collection(success=False, error=f"L2TP generic netlink: {err or 'timeout'}")
        if self._available is False:
            log.info("the kernel has L2TP now")
        self._available = True
        return Collection(families=render_l2tp(snap, self._limiter))
