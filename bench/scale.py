"""Benchmark: what a scrape costs at 100, 1,000 and 5,000 real SAs (issue 9).

One run, per N, side by side against the same real charon responder in the netns lab
(``tests.lab.scale``: one initiator charon holding N IKEv2 connections with distinct
identities, each CHILD SA its own /32 on both sides):

1. charon's own listing: ``swanctl --list-sas --raw`` (wall time, median of ``--repeats``);
2. the naive peer: a full ``list_sas()`` through the blocking ``vici`` package (the same);
3. this exporter, a real ``python -m exporter`` subprocess with default settings (cheap
   questions every 10 s, list-sas at the automatic interval, events on) in the
   responder's namespace:
   ``/metrics`` latency (median, p95) with 1 and with 10 concurrent scrapers sending what
   Prometheus sends (OpenMetrics, gzip) back to back; resident memory (VmRSS, VmHWM);
   exporter CPU seconds per scrape (utime+stime from /proc over the batch, minus its idle
   rate measured just before); charon's CPU seconds per minute while one scraper scrapes
   every 15 s, against the same with the naive peer (a ``list_sas()`` every 15 s) and with
   nobody asking (idle);
4. charon's CPU seconds per request, over back-to-back requests (at least
   ``--cost-seconds``, minus charon's idle rate): a ``list_sas()``, and the exporter's own
   background rounds (its ``ask_charon`` with and without list-sas); from those, charon's
   CPU per minute for the naive peer and for the exporter at its default intervals. The
   60 s windows of 3. cannot resolve differences below charon's idle noise (at 1,000 SAs
   a listing costs charon a few tens of ms); these can.

Run as root (namespaces, charon):

    python bench/scale.py --sizes 100,1000,5000

Prints a Markdown table and the ratios against the issue's targets. Everything it starts
(charons, namespaces, the exporter) is torn down on exit, failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gzip
import http.client
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from exporter.config import StrongswanOptions, ViciAddress  # noqa: E402
from exporter.demo.lab import netns, process  # noqa: E402
from exporter.strongswan.fetch import ask_charon  # noqa: E402
from exporter.strongswan.view import (  # noqa: E402
    LISTING_COST_FACTOR,
    auto_listing_interval,
)
from exporter.vici import ViciClient  # noqa: E402
from tests.lab.scale import SERVER_CONNS, ScaleLab  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
CLONE_NEWNET = 0x40000000
#: What Prometheus 2.x sends.
SCRAPE_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.45.0",
}


# -- /proc -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p95(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


# -- scraping from inside the lab's namespace --------------------------------------------------

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread (only it) into network namespace ``name``."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


class Scraper:
    """HTTP on 127.0.0.1 of a namespace: every worker thread enters it once and keeps one
    keep-alive connection, as a Prometheus server does."""

    def __init__(self, ns: str, port: int, workers: int = 10) -> None:
        self.port = port
        self._local = threading.local()
        self.pool = ThreadPoolExecutor(workers, initializer=enter_netns, initargs=(ns,))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return conn

    def _get(self, path: str) -> tuple[float, bytes, dict[str, str]]:
        for attempt in (1, 2):
            conn = self._conn()
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=SCRAPE_HEADERS)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                continue
            took = time.perf_counter() - t0
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
            return took, body, dict(resp.getheaders())
        raise AssertionError("unreachable")

    def get_text(self, path: str = "/metrics") -> str:
        _, body, headers = self.pool.submit(self._get, path).result()
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body.decode()

    def _loop(self, count: int) -> list[float]:
        return [self._get("/metrics")[0] for _ in range(count)]

    def batch(self, concurrency: int, per_scraper: int) -> list[float]:
        """``concurrency`` scrapers, each scraping ``per_scraper`` times back to back;
        every request's latency in seconds."""
        futures = [self.pool.submit(self._loop, per_scraper) for _ in range(concurrency)]
        return [t for f in futures for t in f.result()]


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def sum_metric(text: str, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, lbl), v in metric_values(text).items()
        if n == name and all(dict(lbl).get(k) == w for k, w in labels.items())
    )


# -- the exporter ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:  # a free port (the namespace's loopback is empty anyway)
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn_exporter(
    lab: ScaleLab,
    port: int,
    log: Path,
    extra: Sequence[str] = (),
    head: Sequence[str] = ("-m", "exporter"),
    env_extra: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """The exporter (``python HEAD ...``) in the responder's namespace on 127.0.0.1:PORT,
    asking the lab's charon, its output in LOG (shared by scale.py and soak.py)."""
    argv = [
        sys.executable,
        *head,
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--vici.socket",
        lab.server_uri,
        *extra,
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(env_extra or {})
    with open(log, "wb") as fh:
        # `ip netns exec` execs: the pid is the exporter's own.
        return subprocess.Popen(
            netns.exec_argv(lab.server_ns, argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class Exporter:
    """``python -m exporter`` in the responder's namespace on 127.0.0.1."""

    def __init__(self, lab: ScaleLab, logdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.log = logdir / f"exporter-{self.port}.log"
        self.proc = spawn_exporter(lab, self.port, self.log, extra)
        self.scraper = Scraper(lab.server_ns, self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listed(self, n: int, timeout: float = 120.0) -> str:
        """Scrape until the exporter is up and shows the N SAs of the scale connection."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited: {self.log.read_text()[-3000:]}")
            try:
                last = self.scraper.get_text()
                up = sum_metric(last, "strongswan_up")
                sas = sum_metric(last, "strongswan_ike_sas", conn=SERVER_CONNS[2])
                if up == 1 and sas == n:
                    return last
            except (OSError, RuntimeError, http.client.HTTPException):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"exporter never showed {n} SAs; log:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.scraper.close()
        process.stop(self.proc)


# -- measurements ----------------------------------------------------------------------------


@dataclass
class Row:
    n: int
    load: list[str] = field(default_factory=list)
    swanctl: list[float] = field(default_factory=list)
    vici: list[float] = field(default_factory=list)
    lat1: list[float] = field(default_factory=list)
    lat10: list[float] = field(default_factory=list)
    cpu1: float = float("nan")  # exporter CPU s per scrape, 1 scraper
    cpu10: float = float("nan")  # the same, 10 concurrent scrapers (per request)
    exporter_idle: float = float("nan")  # exporter CPU s per s, idle (background refresh)
    rss_kb: int = 0
    hwm_kb: int = 0
    body_bytes: int = 0
    gzip_bytes: int = 0
    charon_idle: float = float("nan")  # charon CPU s per min
    charon_naive: float = float("nan")
    charon_exporter: float = float("nan")
    charon_extra: float = float("nan")  # exporter with --extra-refresh
    charon_rss_kb: int = 0
    bring_up: float = float("nan")
    # charon CPU seconds per request, over many back-to-back requests (no tick noise):
    cost_naive: float = float("nan")  # one list_sas() through the vici package
    cost_listing: float = float("nan")  # the exporter's round with list-sas
    cost_cheap: float = float("nan")  # the exporter's round without it
    # Wall time of the exporter's round with list-sas (median): what auto scales.
    wall_listing: float = float("nan")

    def listing_every(self, options: StrongswanOptions, kernel_counts: bool) -> float:
        """Seconds between the exporter's listings at these settings (auto: from the
        measured round, with or without the kernel giving the CHILD SA counts)."""
        if options.sa_refresh_interval is not None:
            return options.sa_refresh_interval
        return auto_listing_interval(
            self.wall_listing, options.sa_refresh_min, options.sa_refresh_max, kernel_counts
        )

    def modelled(
        self, interval: float, options: StrongswanOptions, kernel_counts: bool = False
    ) -> tuple[float, float]:
        """charon CPU s/min for a scrape every ``interval`` s: the naive peer (a list_sas
        per scrape) and the exporter (a listing round every `listing_every`, a cheap
        round every refresh-interval in between), from the per-request costs."""
        naive = 60.0 / interval * self.cost_naive
        listings = 60.0 / self.listing_every(options, kernel_counts)
        cheap = max(0.0, 60.0 / options.refresh_interval - listings)
        return naive, listings * self.cost_listing + cheap * self.cost_cheap


def charon_window(
    pid: int, seconds: float, every: float, action: Callable[[], Any] | None
) -> float:
    """charon's CPU seconds per minute over ``seconds``, running ``action`` at the start
    and then every ``every`` seconds (None: nobody asks)."""
    t0 = time.monotonic()
    c0 = cpu_seconds(pid)
    k = 0
    while True:
        at = t0 + k * every
        if at >= t0 + seconds:
            break
        time.sleep(max(0.0, at - time.monotonic()))
        if action is not None:
            action()
        k += 1
    time.sleep(max(0.0, t0 + seconds - time.monotonic()))
    used = cpu_seconds(pid) - c0
    return used * 60.0 / (time.monotonic() - t0)


def charon_cost(pid: int, idle_per_s: float, action: Callable[[], Any], seconds: float) -> float:
    """charon's CPU seconds per call of ``action``: calls back to back for at least
    ``seconds`` (and 3 calls), so the total is far above /proc's 10 ms tick, minus what
    charon spends idle in that time."""
    t0, c0, calls = time.monotonic(), cpu_seconds(pid), 0
    while calls < 3 or time.monotonic() - t0 < seconds:
        action()
        calls += 1
    used = cpu_seconds(pid) - c0 - idle_per_s * (time.monotonic() - t0)
    return max(0.0, used) / calls


class ExporterQuestions:
    """The exporter's own background questions (``ask_charon``, its VICI client) asked
    from here, so their cost to charon can be measured per round."""

    def __init__(self, lab: ScaleLab) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = ViciClient(ViciAddress.parse(lab.server_uri), timeout=300)

    def round(self, list_sas: bool) -> None:
        self._loop.run_until_complete(ask_charon(self._client, list_sas))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()


def vici_list_sas(lab: ScaleLab) -> tuple[float, int]:
    """The naive peer's scrape: one full list_sas() on a fresh blocking session."""
    t0 = time.perf_counter()
    with lab.server.session(timeout=120) as s:
        count = sum(1 for _ in s.list_sas())
    return time.perf_counter() - t0, count


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] load {loadavg()}: {msg}", file=sys.stderr, flush=True)


def measure(lab: ScaleLab, n: int, args: argparse.Namespace, logdir: Path) -> Row:
    row = Row(n, load=[loadavg()])
    pid = lab.server.pid
    assert pid is not None and Path(f"/proc/{pid}/comm").read_text().strip() == "charon"
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = lab.server.swanctl("--list-sas", "--raw", timeout=300)
        row.swanctl.append(time.perf_counter() - t0)
    listed = out.count("list-sa event")
    for _ in range(args.repeats):
        took, count = vici_list_sas(lab)
        row.vici.append(took)
    if count != n or listed not in (0, n):
        raise RuntimeError(f"charon lists {count} SAs (swanctl {listed}), expected {n}")
    log(f"N={n}: swanctl {median(row.swanctl):.3f}s, vici {median(row.vici):.3f}s")

    row.charon_idle = charon_window(pid, args.idle_window, args.window, None)
    row.charon_naive = charon_window(pid, args.window, args.interval, lambda: vici_list_sas(lab))
    log(f"N={n}: charon idle {row.charon_idle:.3f} naive {row.charon_naive:.3f} CPU s/min")
    idle_per_s = row.charon_idle / 60.0
    row.cost_naive = charon_cost(pid, idle_per_s, lambda: vici_list_sas(lab), args.cost_seconds)
    questions = ExporterQuestions(lab)
    try:
        walls: list[float] = []

        def timed_listing() -> None:
            t0 = time.perf_counter()
            questions.round(list_sas=True)
            walls.append(time.perf_counter() - t0)

        row.cost_listing = charon_cost(pid, idle_per_s, timed_listing, args.cost_seconds)
        row.wall_listing = median(walls)
        row.cost_cheap = charon_cost(
            pid, idle_per_s, lambda: questions.round(list_sas=False), args.cost_seconds
        )
    finally:
        questions.close()
    log(
        f"N={n}: charon CPU per request: list_sas {ms(row.cost_naive)} ms, exporter listing "
        f"round {ms(row.cost_listing)} ms, cheap round {ms(row.cost_cheap)} ms"
    )

    exp = Exporter(lab, logdir)
    try:
        exp.wait_listed(n)
        # The exporter's own idle rate: the background refresh (every 10 s) and events.
        # Two refresh intervals, so the rate is that of a steady state.
        c0, t0 = cpu_seconds(exp.pid), time.monotonic()
        time.sleep(args.exporter_idle)
        row.exporter_idle = (cpu_seconds(exp.pid) - c0) / (time.monotonic() - t0)
        body = exp.scraper.get_text().encode()
        row.body_bytes, row.gzip_bytes = len(body), len(gzip.compress(body))
        for concurrency, per, target in ((1, args.scrapes, "lat1"), (10, args.scrapes10, "lat10")):
            exp.scraper.batch(concurrency, 2)  # warm the connections
            c0, t0 = cpu_seconds(exp.pid), time.monotonic()
            lat = exp.scraper.batch(concurrency, per)
            wall = time.monotonic() - t0
            used = cpu_seconds(exp.pid) - c0 - row.exporter_idle * wall
            setattr(row, target, lat)
            if concurrency == 1:
                row.cpu1 = used / len(lat)
            else:
                row.cpu10 = used / len(lat)
        row.rss_kb = status_kb(exp.pid, "VmRSS")
        row.hwm_kb = status_kb(exp.pid, "VmHWM")
        log(
            f"N={n}: /metrics p50 {median(row.lat1) * 1e3:.1f} ms (1), "
            f"{median(row.lat10) * 1e3:.1f} ms (10); RSS {row.rss_kb / 1024:.1f} MB"
        )
        row.charon_exporter = charon_window(
            pid, args.window, args.interval, lambda: exp.scraper.get_text()
        )
        row.load.append(loadavg())
    finally:
        exp.stop()
    if args.extra_refresh:
        exp = Exporter(
            lab, logdir, "--collector.strongswan.refresh-interval", str(args.extra_refresh)
        )
        try:
            exp.wait_listed(n)
            row.charon_extra = charon_window(
                pid, args.window, args.interval, lambda: exp.scraper.get_text()
            )
        finally:
            exp.stop()
    row.charon_rss_kb = status_kb(pid, "VmRSS")
    row.load.append(loadavg())
    log(f"N={n}: charon with exporter {row.charon_exporter:.3f} CPU s/min")
    return row


# -- report ----------------------------------------------------------------------------------


def div(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def ms(x: float) -> str:
    return f"{x * 1e3:,.1f}"


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        "| N SAs | `swanctl --list-sas --raw` | vici `list_sas()` | /metrics p50 / p95, 1 scraper "
        "| /metrics p50 / p95, 10 scrapers | exporter CPU per scrape, 1 / 10 | exporter idle CPU "
        "| exporter RSS (HWM) | charon CPU s/min: idle / naive / exporter"
        + (f" / exporter at {args.extra_refresh:g} s" if args.extra_refresh else "")
        + " | load avg (start, end) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        extra = f" / {r.charon_extra:.2f}" if args.extra_refresh else ""
        lines.append(
            f"| {r.n:,} | {ms(median(r.swanctl))} ms | {ms(median(r.vici))} ms "
            f"| {ms(median(r.lat1))} / {ms(p95(r.lat1))} ms "
            f"| {ms(median(r.lat10))} / {ms(p95(r.lat10))} ms "
            f"| {ms(r.cpu1)} / {ms(r.cpu10)} ms | {r.exporter_idle * 1e3:.1f} ms/s "
            f"| {r.rss_kb / 1024:.1f} ({r.hwm_kb / 1024:.1f}) MB "
            f"| {r.charon_idle:.2f} / {r.charon_naive:.2f} / {r.charon_exporter:.2f}{extra} "
            f"| {r.load[0]} → {r.load[-1]} |"
        )
    return "\n".join(lines)


def ratios(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        "| N SAs | /metrics p50 ÷ swanctl (target ≤ 0.25) | /metrics p50 ÷ vici list_sas "
        "| 10 scrapers ÷ 1: p50, CPU per scrape | charon CPU naive ÷ exporter, raw "
        "(net of idle) (target ≥ 4)"
        + (f" | the same, exporter at {args.extra_refresh:g} s" if args.extra_refresh else "")
        + " | RSS (target < 80 MB at 5,000) |",
        "|---:|---:|---:|---:|---:|" + ("---:|" if args.extra_refresh else "") + "---:|",
    ]
    for r in rows:
        sw, vi, l1 = median(r.swanctl), median(r.vici), median(r.lat1)
        raw = div(r.charon_naive, r.charon_exporter)
        net = div(r.charon_naive - r.charon_idle, r.charon_exporter - r.charon_idle)
        extra = ""
        if args.extra_refresh:
            extra = (
                f" | {div(r.charon_naive, r.charon_extra):.2f} "
                f"({div(r.charon_naive - r.charon_idle, r.charon_extra - r.charon_idle):.2f})"
            )
        lines.append(
            f"| {r.n:,} | {div(l1, sw):.3f} | {div(l1, vi):.3f} "
            f"| {div(median(r.lat10), l1):.2f}, {div(r.cpu10, r.cpu1):.2f} "
            f"| {raw:.2f} ({net:.2f}){extra} | {r.rss_kb / 1024:.1f} MB |"
        )
    return "\n".join(lines)


def listing_text(options: StrongswanOptions) -> str:
    if options.sa_refresh_interval is None:
        return (
            f"auto: {LISTING_COST_FACTOR:g} times the round's cost, "
            f"{options.sa_refresh_min:g} to {options.sa_refresh_max:g} s"
        )
    return f"{options.sa_refresh_interval:g} s"


def costs(rows: list[Row], args: argparse.Namespace) -> str:
    options = StrongswanOptions()
    lines = [
        "| N SAs | charon CPU per request: vici `list_sas()` / exporter round with list-sas "
        "/ without | exporter's listing round (wall) → listing every (live bytes at most "
        "that old): without / with kernel counts | charon CPU s/min from those, a scrape "
        f"every {args.interval:g} s: naive / exporter without / with kernel counts "
        f"(list-sas every {listing_text(options)}, the rest every "
        f"{options.refresh_interval:g} s) | naive ÷ exporter: without / with kernel counts "
        "(targets ≥ 4 / ≥ 20) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        naive, exporter = r.modelled(args.interval, options)
        _, kernel = r.modelled(args.interval, options, kernel_counts=True)
        lines.append(
            f"| {r.n:,} | {ms(r.cost_naive)} / {ms(r.cost_listing)} / {ms(r.cost_cheap)} ms "
            f"| {ms(r.wall_listing)} ms → {r.listing_every(options, False):g} s "
            f"/ {r.listing_every(options, True):g} s (kernel: at the scrape) "
            f"| {naive:.3f} / {exporter:.3f} / {kernel:.3f} "
            f"| {div(naive, exporter):.2f} / {div(naive, kernel):.2f} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = status_like("/proc/meminfo", "MemTotal") // 1024 // 1024
    charon = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}", "strongswan-charon"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem} GB RAM, kernel {platform.release()}, "
        f"Python {platform.python_version()}, {charon or 'strongswan-charon ?'}"
    )


def status_like(path: str, key: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every ``finally`` tears the lab down."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000", help="SA counts, ascending")
    parser.add_argument("--repeats", type=int, default=5, help="listings timed per size")
    parser.add_argument("--scrapes", type=int, default=100, help="requests of the 1 scraper")
    parser.add_argument(
        "--scrapes10", type=int, default=30, help="requests of each of the 10 scrapers"
    )
    parser.add_argument("--interval", type=float, default=15.0, help="scrape interval")
    parser.add_argument("--window", type=float, default=60.0, help="charon CPU window")
    parser.add_argument("--idle-window", type=float, default=30.0, help="charon idle window")
    parser.add_argument(
        "--exporter-idle", type=float, default=20.0, help="exporter idle-rate window"
    )
    parser.add_argument(
        "--extra-refresh",
        type=float,
        default=0.0,
        help="also measure charon CPU with the exporter at this refresh interval (0: skip)",
    )
    parser.add_argument(
        "--cost-seconds",
        type=float,
        default=5.0,
        help="back-to-back requests for at least this long per charon CPU-per-request figure",
    )
    parser.add_argument("--wave", type=int, default=250, help="SAs initiated at once")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: network namespaces and charon", file=sys.stderr)
        return 2
    sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    rows: list[Row] = []
    started = time.monotonic()
    print(f"machine: {machine()}", flush=True)
    print(f"load average at start: {loadavg()}", flush=True)
    with terminate_on_signals(), tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        lab = ScaleLab([sizes[-1]])
        try:
            lab.start()
            for n in sizes:
                log(f"bringing up {n} SAs")
                try:
                    lab.bring_up(n, wave=args.wave, timeout=900)
                except Exception as err:
                    up = lab.server_counts()
                    print(
                        f"could not bring up {n} SAs ({err}); responder has {up[0]} IKE SAs "
                        f"({up[1]} half-open)",
                        flush=True,
                    )
                    break
                row = measure(lab, n, args, Path(tmp))
                row.bring_up = lab.timings.get(f"bring_up_{n}", float("nan"))
                rows.append(row)
        finally:
            lab.close()
    print()
    print(table(rows, args))
    print()
    print(ratios(rows, args))
    print()
    print(costs(rows, args))
    print()
    for r in rows:
        print(
            f"N={r.n}: bring-up {r.bring_up:.1f} s; /metrics body {r.body_bytes:,} bytes "
            f"({r.gzip_bytes:,} gzip'd); charon RSS {r.charon_rss_kb / 1024:.0f} MB; "
            f"exporter idle {r.exporter_idle * 1e3:.1f} ms CPU per s"
        )
    print(f"whole run: {time.monotonic() - started:.0f} s; load average at end: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
