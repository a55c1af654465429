"""Benchmark: what writing the per-login counters costs at N logins (`render_users` and
the exposition writer, OpenMetrics and text 0.0.4), CPU p50 of 15 renders.

N logins, one session each, through the real `LoginLedger` (the tests' records). To
compare two trees in one run, interleave them (the other tree's exporter first on the
path; this script runs unchanged against it):

    for run in 1 2 3; do
        PYTHONPATH=/tmp/kh/before python bench/users_render.py 1000
        python bench/users_render.py 1000
    done
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after PYTHONPATH: another tree's exporter wins

from exporter.collectors.join import join_sessions  # noqa: E402
from exporter.collectors.limits import SeriesLimiter  # noqa: E402
from exporter.collectors.users import render_users  # noqa: E402
from exporter.exposition import render_openmetrics, render_text  # noqa: E402
from exporter.logins.ledger import LoginLedger  # noqa: E402
from exporter.logins.model import LoginsView  # noqa: E402
from tests.unit.test_users_collector import OPTIONS, REJECTED, START, hook, iface  # noqa: E402


def logins(n: int) -> LoginsView:
    ledger = LoginLedger(OPTIONS, clock=lambda: START, started_at=START)
    links = [iface(f"ppp{i}", 100 + i, START + 10, 25_984 + i, 24_040 + i) for i in range(n)]
    hooks = {
        f"ppp{i}": hook(f"ppp{i}", 100 + i, f"user{i}", 1000 + i, START + 10) for i in range(n)
    }
    return ledger.update(join_sessions(links, None, hooks, None), links, hooks, [], now=START + 60)


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 1000
    view = logins(n)
    if len(view.totals) != n:
        print(f"CHECK FAILED: {len(view.totals)} logins, not {n}", file=sys.stderr)
        return 1
    for name, render in (("OpenMetrics", render_openmetrics), ("text", render_text)):
        times = []
        for _ in range(15):
            started = time.process_time()
            render(render_users(view, SeriesLimiter(10 * n), REJECTED))
            times.append(time.process_time() - started)
        print(f"{n} logins, {name}: {statistics.median(times) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
