"""Benchmark and profile: what the exporter itself spends on one /metrics at N users.

No root and no charon needed: a real charon's `list-sas` answer recorded in the lab
(`tests/fixtures/vici/remote-access/`, IKEv1 PSK + XAuth, the NYC Mesh shape) is cloned
to N IKE SAs, each with its own uniqueid, XAuth user, address and traffic counts, and
served with the rest of the recording by the fake VICI server of the tests
(`tests/fakes/vici_server.py`). It goes through the production path: one refresh round
of the real `CharonView` (VICI, `parse_ike_sas`, the SA table and the ledger), then per
scrape the strongSwan collector, the scraper (shared collection), and `RenderCache`
(OpenMetrics, gzip, as Prometheus asks). It prints the median and p95 of the collection and of the
rendering, the answer's size, and with `--profile` the functions that take the time
(cProfile). `bench/scale.py` measures the same end to end against a real charon with N
real SAs; this one is the quick loop for finding what to fix.

    python bench/render.py --users 1000,5000
    python bench/render.py --users 1000 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from exporter.collectors.strongswan import StrongswanCollector  # noqa: E402
from exporter.config import StrongswanOptions  # noqa: E402
from exporter.http import RenderCache  # noqa: E402
from exporter.scrape import Scraper  # noqa: E402
from exporter.strongswan.view import CharonView  # noqa: E402
from tests.fakes.vici_server import FakeViciServer, Recording  # noqa: E402

ACCEPT = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"


def cloned_list_sas(recorded: list[Mapping[str, Any]], users: int) -> list[Mapping[str, Any]]:
    """The recorded answer's first IKE SA, N times, as N distinct users and SAs."""
    ((conn, template),) = recorded[0].items()
    answer: list[Mapping[str, Any]] = []
    for i in range(users):
        sa = copy.deepcopy(template)
        sa["uniqueid"] = str(2 * i + 1)
        sa["remote-host"] = f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}"
        sa["remote-id"] = sa["remote-host"]
        sa["remote-xauth-id"] = f"user{i}"
        ((child_key, child),) = sa["child-sas"].items()
        child["uniqueid"] = child["reqid"] = str(2 * i + 2)
        for field, value in (("bytes-in", 1000 + 37 * i), ("bytes-out", 5_000_000 + 91 * i)):
            child[field] = str(value)
        child["packets-in"], child["packets-out"] = str(10 + i), str(4000 + i)
        sa["child-sas"] = {f"{child['name']}-{child['uniqueid']}": child}
        del child_key
        answer.append({conn: sa})
    return answer


@contextlib.asynccontextmanager
async def exporter_of(users: int, options: StrongswanOptions) -> AsyncIterator[Scraper]:
    """The strongSwan collector's scraper over a `CharonView` that has just listed N users
    from the fake VICI server: what the background refresh leaves behind (the view is not
    started, so no round runs while the scrapes are timed)."""
    recording = Recording.scenario("remote-access")
    recording.streams["list-sas"] = cloned_list_sas(recording.streams["list-sas"], users)
    with tempfile.TemporaryDirectory() as folder:
        async with FakeViciServer(Path(folder) / "charon.vici", recording) as charon:
            view = CharonView(charon.address, 30.0, options)
            try:
                await view.refresh()
                if not view.up:
                    raise RuntimeError(f"the fake charon did not answer: {view.error}")
                yield Scraper([StrongswanCollector(view, options)])
            finally:
                await view.close()
                # The fake's end of the connection sees it closed (no task of it is
                # cancelled mid-read at its close).
                await charon.wait_until(lambda: not charon.open_connections)


async def one_scrape(scraper: Scraper) -> tuple[float, float, int]:
    started = time.perf_counter()
    families = await scraper.scrape()
    collected = time.perf_counter()
    body, _ = RenderCache().get(families, ACCEPT, "gzip")
    rendered = time.perf_counter()
    return collected - started, rendered - collected, len(body)


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


async def measure(users: int, scrapes: int, series_limit: int, profile: bool) -> str:
    options = StrongswanOptions(series_limit=series_limit)
    async with exporter_of(users, options) as scraper:
        return await _measure(scraper, users, scrapes, profile)


async def _measure(scraper: Scraper, users: int, scrapes: int, profile: bool) -> str:
    for _ in range(3):  # warm up
        await one_scrape(scraper)
    collect, render = [], []
    size = 0
    for _ in range(scrapes):
        c, r, size = await one_scrape(scraper)
        collect.append(c)
        render.append(r)
    families = await scraper.scrape()
    plain, _ = RenderCache().get(families, ACCEPT, None)
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(scrapes):
            await one_scrape(scraper)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        print(f"\n## cProfile, {users} users, {scrapes} scrapes", file=sys.stderr)
        stats.sort_stats("tottime").print_stats(20)
    ms = 1000
    return (
        f"| {users:,} | {statistics.median(collect) * ms:.1f} / {p95(collect) * ms:.1f} ms "
        f"| {statistics.median(render) * ms:.1f} / {p95(render) * ms:.1f} ms "
        f"| {statistics.median([a + b for a, b in zip(collect, render, strict=True)]) * ms:.1f}"
        f" ms | {len(plain):,} B ({size:,} B gzip'd) |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", default="100,1000,5000", help="user/SA counts")
    parser.add_argument("--scrapes", type=int, default=50, help="scrapes timed per size")
    parser.add_argument(
        "--series-limit", type=int, default=1000, help="as the daemon's flag (default 1000)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile to stderr")
    args = parser.parse_args()
    try:
        sizes = [int(n) for n in args.users.split(",")]
    except ValueError:
        parser.error(f"--users takes comma-separated numbers, not {args.users!r}")
    print(
        "| users | collect p50 / p95 | render (OpenMetrics + gzip) p50 / p95 | total p50 "
        "| answer |\n|---:|---:|---:|---:|---:|"
    )
    for users in sizes:
        print(
            asyncio.run(measure(users, args.scrapes, args.series_limit, args.profile)), flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
