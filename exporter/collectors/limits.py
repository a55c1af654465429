"""Bounding per-SA and per-user series, and counting what the bound dropped.

One limiter per daemon, owned by the scrape layer (`exporter.scrape.Scraper`) and handed
to every collector that bounds series, so one limit applies and one family counts drops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily

T = TypeVar("T")


class SeriesLimiter:
    """Keeps at most `limit` series per family and remembers how many were dropped.

    The dropped count is a counter over the daemon's life: it rises by the number of
    series left out in every collection, so `rate()` shows an ongoing overflow.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped: dict[str, int] = {}

    def take(self, family: str, items: Sequence[T]) -> Sequence[T]:
        self.dropped.setdefault(family, 0)
        if len(items) <= self.limit:
            return items
        self.dropped[family] += len(items) - self.limit
        return items[: self.limit]


def dropped_family(limiter: SeriesLimiter) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "l2tp_ipsec_exporter_series_dropped",
        "Series left out of a per-SA or per-user family by the series limit, summed over "
        "collections.",
        labels=["family"],
    )
    for name, count in sorted(limiter.dropped.items()):
        family.add_metric([name], count)
    return family
