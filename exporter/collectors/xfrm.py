"""The kernel's IPsec SAs and policies (NETLINK_XFRM) and /proc/net/xfrm_stat."""

from __future__ import annotations

import logging
from collections import Counter
from operator import attrgetter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.collectors.base import Collection
from exporter.collectors.limits import SeriesLimiter
from exporter.kernel.gcpause import gc_paused
from exporter.kernel.model import XfrmSnapshot, XfrmState
from exporter.kernel.source import KernelSource
from exporter.table_family import counter_table, gauge_table

log = logging.getLogger("exporter.collectors.xfrm")

#: Shown even at 0 so dashboards have a series: the shapes an L2TP/IPsec server uses.
BASELINE_STATES = (("esp", "transport"), ("esp", "tunnel"))
BASELINE_DIRECTIONS = ("in", "out", "fwd")

#: (metric name, XfrmState field, help).
PER_SA_COUNTERS = (
    ("xfrm_state_bytes", "bytes", "Bytes through the SA since it was added (current lifetime)."),
    ("xfrm_state_packets", "packets", "Packets through the SA since it was added."),
    (
        "xfrm_state_replay_window_errors",
        "replay_window_errors",
        "Packets the SA dropped as outside its replay window.",
    ),
    ("xfrm_state_replay_errors", "replay_errors", "Replayed packets the SA dropped."),
    (
        "xfrm_state_integrity_errors",
        "integrity_errors",
        "Packets the SA dropped because their integrity check failed.",
    ),
)


def _sa_key(s: XfrmState) -> tuple[str, int, str]:
    return (s.dst, s.spi, s.proto)


@gc_paused
def render_xfrm(snap: XfrmSnapshot, limiter: SeriesLimiter) -> list[Metric]:
    states = GaugeMetricFamily(
        "xfrm_states", "IPsec SAs in the kernel by protocol and mode.", labels=["proto", "mode"]
    )
    by_shape: Counter[tuple[str, str]] = Counter(BASELINE_STATES)
    for shape in BASELINE_STATES:
        by_shape[shape] = 0
    by_shape.update((s.proto, s.mode) for s in snap.states)
    for (proto, mode), count in sorted(by_shape.items()):
        states.add_metric([proto, mode], count)
    policies = GaugeMetricFamily(
        "xfrm_policies",
        "IPsec policies in the kernel by direction (socket_* are per-socket policies).",
        labels=["direction"],
    )
    by_dir: Counter[str] = Counter({d: 0 for d in BASELINE_DIRECTIONS})
    by_dir.update(p.direction for p in snap.policies)
    for direction, count in sorted(by_dir.items()):
        policies.add_metric([direction], count)
    info = gauge_table(
        "xfrm_state_info",
        "One series per kernel SA with its endpoints, protocol, mode and reqid; always 1.",
        ["spi", "src", "dst", "proto", "mode", "reqid"],
    )
    counters = [
        (counter_table(name, text, ["spi", "dst"]), field) for name, field, text in PER_SA_COUNTERS
    ]
    # Rows built a family at a time (one comprehension each): the same rows in the same
    # order as a loop over the SAs, at a fraction of the calls.
    taken = limiter.take("xfrm_state_info", sorted(snap.states, key=_sa_key))
    keys = [(s.spi_hex, s.dst) for s in taken]
    info.extend(
        [
            ((spi, s.src, dst, s.proto, s.mode, str(s.reqid)), 1)
            for (spi, dst), s in zip(keys, taken, strict=True)
        ]
    )
    for family, field in counters:
        get = attrgetter(field)
        family.extend([(key, get(s)) for key, s in zip(keys, taken, strict=True)])
    return [states, policies, info, *(family for family, _field in counters)]


def render_xfrm_stat(stat: dict[str, int]) -> Metric:
    family = CounterMetricFamily(
        "xfrm_errors",
        "XFRM errors since boot from /proc/net/xfrm_stat, by the kernel's counter name.",
        labels=["reason"],
    )
    for reason, value in sorted(stat.items()):
        family.add_metric([reason], value)
    return family


class XfrmCollector:
    name = "xfrm"

    def __init__(self, source: KernelSource, limiter: SeriesLimiter) -> None:
        self._source = source
        self._limiter = limiter
        self._said_no_stat = False
        self._dropping = False

    async def collect(self) -> Collection:
        families: list[Metric] = []
        stat = await self._source.xfrm_stat()
        if stat is not None:
            families.append(render_xfrm_stat(stat))
        elif not self._said_no_stat:
            self._said_no_stat = True
            log.info("no /proc/net/xfrm_stat (kernel without CONFIG_XFRM_STATISTICS)")
        try:
            snap = await self._source.xfrm()
        except (OSError, TimeoutError) as err:
            return Collection(families, success=False, error=f"NETLINK_XFRM: {err or 'timeout'}")
        families[:0] = render_xfrm(snap, self._limiter)
        dropping = len(snap.states) > self._limiter.limit
        if dropping and not self._dropping:
            log.warning(
                "more SAs than the series limit; per-SA series are cut",
                extra={"sas": len(snap.states), "limit": self._limiter.limit},
            )
        self._dropping = dropping
        return Collection(families)
