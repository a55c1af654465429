"""Running the collectors for a scrape and adding the exporter's own metrics.

Concurrent scrapes share one in-flight collection: ten Prometheus replicas scraping at
once cost charon one round of questions, not ten.

The series limit is exporter-wide, so it lives here: the Scraper owns the one
`SeriesLimiter`, the collectors that bound per-SA and per-user series are built with it,
and the Scraper renders `l2tp_ipsec_exporter_series_dropped_total` after every collector
ran, so the count covers the whole scrape.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector as RegistryCollector
from prometheus_client.registry import CollectorRegistry

from exporter import __version__
from exporter.collectors.base import Collection, Collector
from exporter.collectors.limits import SeriesLimiter, dropped_family
from exporter.privacy import PrivacyFilter, PrivacyOptions

log = logging.getLogger("exporter.scrape")


def build_info() -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "l2tp_ipsec_exporter_build_info",
        "Version of l2tp-ipsec-exporter and the Python running it; always 1.",
        labels=["version", "python_version"],
    )
    family.add_metric([__version__, platform.python_version()], 1)
    return family


#: The series limit when nobody sets one (the `--collector.strongswan.series-limit` default).
DEFAULT_SERIES_LIMIT = 1000


class Scraper:
    def __init__(
        self,
        collectors: Sequence[Collector] = (),
        privacy: PrivacyFilter | None = None,
        series_limit: int = DEFAULT_SERIES_LIMIT,
    ) -> None:
        self.collectors = list(collectors)
        self.privacy = privacy or PrivacyFilter(PrivacyOptions())
        #: Hand this to every collector that bounds its series (see the module docstring).
        self.limiter = SeriesLimiter(series_limit)
        self._runtime = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._runtime)
        PlatformCollector(registry=self._runtime)
        GCCollector(registry=self._runtime)
        self._inflight: asyncio.Task[list[Metric]] | None = None
        self._failing: dict[str, str] = {}

    def add(self, *collectors: Collector) -> None:
        """Collectors built after the Scraper, with its `limiter`."""
        self.collectors.extend(collectors)

    def set_series_limit(self, limit: int) -> None:
        """A reload: the next collection bounds by `limit`; drops counted so far stay."""
        self.limiter.limit = limit

    def add_own_metrics(self, collector: RegistryCollector) -> None:
        """A prometheus_client collector of the exporter's own (e.g. its HTTP connections),
        in every scrape next to the process metrics."""
        self._runtime.register(collector)

    async def scrape(self) -> list[Metric]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._collect_all())
        # shield: one client hanging up must not cancel the collection others wait for.
        return await asyncio.shield(self._inflight)

    async def _collect_all(self) -> list[Metric]:
        results = await asyncio.gather(*(self._run(c) for c in self.collectors))
        success = GaugeMetricFamily(
            "l2tp_ipsec_exporter_collector_success",
            "1 when the collector read its source in this scrape, else 0.",
            labels=["collector"],
        )
        duration = GaugeMetricFamily(
            "l2tp_ipsec_exporter_collector_duration_seconds",
            "How long the collector took in this scrape.",
            labels=["collector"],
        )
        families: list[Metric] = [build_info()]
        for collector, (collection, seconds) in zip(self.collectors, results, strict=True):
            success.add_metric([collector.name], 1 if collection.success else 0)
            duration.add_metric([collector.name], seconds)
            families.extend(self.privacy.apply(collection.families))
        families += [dropped_family(self.limiter), success, duration]
        families.extend(self._runtime.collect())
        return families

    async def _run(self, collector: Collector) -> tuple[Collection, float]:
        started = time.perf_counter()
        try:
            collection = await collector.collect()
        except Exception as err:  # a broken collector must never break the scrape
            log.exception("collector crashed", extra={"collector": collector.name})
            collection = Collection(success=False, error=f"{type(err).__name__}: {err}")
        self._log_transition(collector.name, collection)
        return collection, time.perf_counter() - started

    def _log_transition(self, name: str, collection: Collection) -> None:
        # One line when a collector starts failing and one when it recovers, not one per
        # scrape.
        if not collection.success and name not in self._failing:
            log.error(
                "collector failed; it is retried at every scrape",
                extra={"collector": name, "err": collection.error},
            )
            self._failing[name] = collection.error
        elif collection.success and name in self._failing:
            del self._failing[name]
            log.info("collector recovered", extra={"collector": name})
