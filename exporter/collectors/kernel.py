"""Building the kernel collectors (ppp, l2tp, xfrm, sessions) from their settings.

The collectors package owns this: the kernel package is a source and knows nothing of
collectors or of the IKE daemons.
"""

from __future__ import annotations

from collections.abc import Callable

from exporter.collectors.base import Collector
from exporter.collectors.join import IkeSnapshot
from exporter.collectors.l2tp import L2tpCollector
from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.ppp import PppCollector
from exporter.collectors.sessions import SessionsCollector
from exporter.collectors.xfrm import XfrmCollector
from exporter.config import StrongswanOptions
from exporter.kernel.options import KernelOptions
from exporter.kernel.source import KernelSource


def build_kernel_collectors(
    options: KernelOptions,
    ike_snapshot: Callable[[], IkeSnapshot | None],
    limiter: SeriesLimiter | None = None,
    source: KernelSource | None = None,
) -> list[Collector]:
    """The enabled kernel collectors, sharing one reader so a scrape dumps each table once.

    `ike_snapshot` returns the IKE daemon's latest snapshot (charon's or pluto's, or
    None); the sessions collector joins against it and never asks the daemon itself. Pass the
    scrape layer's `Scraper.limiter` so drops land in the one
    `l2tp_ipsec_exporter_series_dropped_total` family the Scraper renders; without it the
    kernel collectors bound their series the same way and log when they drop some.
    Pass `source` to share its dumps with other readers (the login tracker).
    """
    source = source or KernelSource(options)
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
        collectors.append(SessionsCollector(source, ike_snapshot, limiter))
    return collectors
