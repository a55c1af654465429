"""The series limiter belongs to the scrape layer: one limit for every collector, one
`l2tp_ipsec_exporter_series_dropped_total` family that the Scraper renders (not the
strongSwan collector), and a reload that changes the limit for all of them."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.cli import parse_command_line
from exporter.collectors.base import Collection
from exporter.collectors.limits import SeriesLimiter
from exporter.daemon import Runtime
from exporter.scrape import Scraper
from tests.fakes.exporter_wiring import config_file_text
from tests.fakes.vici_server import FakeViciServer, Recording, eventually

DROPPED = "l2tp_ipsec_exporter_series_dropped"


class Bounded:
    """A collector with `items` series in one family, bounded by the limiter it is given."""

    def __init__(self, name: str, items: int, limiter: SeriesLimiter) -> None:
        self.name = name
        self._items = [str(i) for i in range(items)]
        self._limiter = limiter

    async def collect(self) -> Collection:
        family = GaugeMetricFamily(f"{self.name}_info", "One per item.", labels=["item"])
        for item in self._limiter.take(f"{self.name}_info", self._items):
            family.add_metric([item], 1)
        return Collection([family])


def dropped(families: list[Metric]) -> dict[str, float]:
    (family,) = [f for f in families if f.name == DROPPED]
    return {s.labels["family"]: s.value for s in family.samples}


async def test_one_limiter_one_dropped_family_for_every_collector() -> None:
    scraper = Scraper(series_limit=2)
    scraper.add(Bounded("a", 5, scraper.limiter), Bounded("b", 3, scraper.limiter))
    first = await scraper.scrape()
    assert [f.name for f in first].count(DROPPED) == 1
    # After every collector's families: it counts the whole scrape.
    names = [f.name for f in first]
    assert names.index(DROPPED) > max(names.index("a_info"), names.index("b_info"))
    assert dropped(first) == {"a_info": 3, "b_info": 1}
    assert dropped(await scraper.scrape()) == {"a_info": 6, "b_info": 2}  # a counter

    scraper.set_series_limit(4)
    assert dropped(await scraper.scrape()) == {"a_info": 7, "b_info": 2}


def runtime_with_series_limit(config: Path, socket: Path, limit: int) -> Runtime:
    text = config_file_text(socket, timeout="3s")
    config.write_text(
        text.replace("events: true", f"events: true, sa_details: true, series_limit: {limit}")
    )
    command_line = parse_command_line(["--config.file", str(config)])
    return Runtime(command_line.settings, command_line.reload_settings)


async def test_the_daemon_wires_the_scrapers_limiter_and_reload_changes_it(
    tmp_path: Path,
) -> None:
    """Four recorded IKE SAs, a limit of one: three dropped per scrape, counted in the
    Scraper's family (the strongSwan collector renders none); after a reload to a limit
    of ten the count stops rising."""
    config = tmp_path / "exporter.yml"
    async with FakeViciServer(
        tmp_path / "charon.vici", Recording.scenario("remote-access")
    ) as charon:
        runtime = runtime_with_series_limit(config, charon.path, 1)
        runtime.start()
        try:
            assert runtime.collector in runtime.scraper.collectors

            async def dropping() -> bool:
                families = await runtime.scraper.scrape()
                return dropped(families).get("strongswan_ike_sa_info", 0) >= 3

            await eventually(dropping, "IKE SAs over the series limit counted")
            own = await runtime.collector.collect()
            assert DROPPED not in [f.name for f in own.families]

            config.write_text(config.read_text().replace("series_limit: 1", "series_limit: 10"))
            assert await runtime.reload() == "configuration reloaded"
            before = dropped(await runtime.scraper.scrape())["strongswan_ike_sa_info"]
            after = dropped(await runtime.scraper.scrape())["strongswan_ike_sa_info"]
            assert after == before
        finally:
            await runtime.close()
