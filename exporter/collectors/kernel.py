"""Building the kernel collectors (ppp, l2tp, xfrm, sessions) from their settings.

The collectors package owns this: the kernel package is a source and knows nothing of
collectors or of strongSwan.
"""

from __future__ import annotations

from collections.abc import Callable

from exporter.collectors.base import Collector
from exporter.collectors.l2tp import L2tpCollector
from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.ppp import PppCollector
from exporter.collectors.sessions import SessionsCollector
from exporter.collectors.xfrm import XfrmCollector
from exporter.config import StrongswanOptions
from exporter.kernel.options import KernelOptions
from exporter.kernel.source import KernelSource
from exporter.strongswan.snapshot import StrongswanSnapshot


def build_kernel_collectors(
    options: KernelOptions,
    strongswan_snapshot: Callable[[], StrongswanSnapshot | None],
    limiter: SeriesLimiter | None = None,
) -> list[Collector]:
    """The enabled kernel collectors, sharing one reader so a scrape dumps each table once.

    `strongswan_snapshot` returns the strongSwan collector's latest snapshot (or None);
    the sessions collector joins against it and never asks charon itself. Pass the
    scrape layer's `Scraper.limiter` so drops land in the one
    `l2tp_ipsec_exporter_series_dropped_total` family the Scraper renders; without it the
    kernel collectors bound their series the same way and log when they drop some.
    """
    source = KernelSource(options)
    if limiter is None:
        limiter = SeriesLimiter(StrongswanOptions().series_limit)  # the one limit's default
    collectors: list[Collector] = []
    if options.ppp:
        collectors.append(PppCollector(source, limiter))
    if options.l2tp:
        collectors.append(L2tpCollector(source, limiter))
    if options.xfrm:
        collectors.append(XfrmCollector(source, limiter))
    if options.sessions:
        collectors.append(SessionsCollector(source, strongswan_snapshot, limiter))
    return collectors
