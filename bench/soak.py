"""Soak: does the exporter's memory level off while real clients come and go for an hour?

Issue 14, item 8: a 10-minute soak with churning clients went from 52.1 to 56.9 MB, still
rising at the end. This runs the real thing for ``--duration`` seconds and records the
curve:

- the netns lab's scale topology (``tests.lab.scale``): a real charon responder and one
  initiator charon holding ``--clients`` connections (distinct identities ``user<i>@scale``
  / ``user<i>@v1.scale``, every ``--ikev1-every``-th one IKEv1), each CHILD SA rekeyed every
  ``--child-rekey`` s and each IKE SA rekeyed (IKEv2) or reauthenticated (IKEv1) every
  ``--ike-rekey`` s by charon itself;
- churn: every ``--churn-interval`` s one random client goes down (``terminate``) if it is
  up or comes up (``initiate``) if not, and (every ``--ping-every`` toggles) one random
  live tunnel carries a ping, so up/down/rekey events, uniqueids, tombstones and traffic
  counts keep moving;
- the exporter as a subprocess (``python -m exporter``, default settings: cheap questions
  every 10 s, list-sas every 120 s, events on) in the responder's namespace, scraped every
  ``--scrape-interval`` s with Prometheus' headers; its VmRSS read at every scrape;
- with ``--tracemalloc``, a second exporter against the same charon runs under
  tracemalloc (a wrapper, no change to the exporter) and dumps a snapshot every
  ``--snapshot-interval`` s on SIGUSR1; at the end the first snapshot after the warm-up
  and the last are diffed (top growth by line). Its RSS is reported too, but tracemalloc
  itself costs memory: the plain exporter's curve is the one to read.

Every sample goes to ``--csv`` as it is taken (a killed run keeps its data). At the end it
prints the curve (every ``--curve-step`` s), start/end/max RSS, and the slope (least
squares, MB per minute) over the whole run after the warm-up and over its last half.

    sudo python bench/soak.py --duration 3600 --tracemalloc --csv /tmp/soak.csv

``--flood N`` measures item 6 instead (no lab, no root): a fake VICI peer on a Unix socket
(tests/hostile/fake_charon.py) sends ``ike-updown`` + ``child-updown`` ups of N new SAs to
a real exporter as fast as it reads them; RSS before, at its peak during the flood, right
after, and every 10 s for ``--after`` s once the event stream dropped and the reconnect's
listing (empty) removed every SA; with the exporter's ``strongswan_sas_untracked_total``.

    python bench/soak.py --flood 130000
    python bench/soak.py --flood 130000 --exporter-arg=--collector.strongswan.max-sas=1000000

Everything it starts (charons, namespaces, exporters) is torn down on exit, failure,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import http.client
import linecache
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from scale import (  # noqa: E402
    SCRAPE_HEADERS,
    cpu_seconds,
    free_port,
    loadavg,
    machine,
    spawn_exporter,
    status_kb,
    sum_metric,
    terminate_on_signals,
)

from exporter.demo.lab import netns, process  # noqa: E402
from tests.lab.scale import ScaleLab, Version, client_conn, client_ts, conn_name, server_ts  # noqa: E402

#: Run as ``python -c TRACED_EXPORTER ARGS``: the exporter under tracemalloc, a snapshot
#: into $SOAK_SNAPSHOTS at every SIGUSR1 (the exporter itself does not use SIGUSR1).
TRACED_EXPORTER = """
import gc, os, runpy, signal, sys, tracemalloc
tracemalloc.start(int(os.environ.get("SOAK_TRACE_FRAMES", "6")))
folder, taken = os.environ["SOAK_SNAPSHOTS"], [0]
def dump(_signum, _frame):
    gc.collect()
    taken[0] += 1
    tracemalloc.take_snapshot().dump(os.path.join(folder, f"snap-{taken[0]:04d}.pickle"))
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["exporter", *sys.argv[1:]]
runpy.run_module("exporter", run_name="__main__", alter_sys=True)
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the exporters ---------------------------------------------------------------------------


class Exporter:
    """``python -m exporter`` (or the traced wrapper) in the responder's namespace."""

    def __init__(
        self, lab: ScaleLab, logdir: Path, name: str, traced: Path | None, extra: list[str]
    ) -> None:
        self.name = name
        self.port = free_port()
        head = ["-c", TRACED_EXPORTER] if traced is not None else ["-m", "exporter"]
        self.snapshots = traced
        self.log = logdir / f"exporter-{name}.log"
        env = {"SOAK_SNAPSHOTS": str(traced)} if traced is not None else None
        self.proc = spawn_exporter(lab, self.port, self.log, extra, head, env)
        self.ns = lab.server_ns

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float:
        return status_kb(self.pid, "VmRSS") / 1024

    def snapshot(self) -> None:
        if self.snapshots is not None:
            self.proc.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        process.stop(self.proc)


class NsHttp:
    """GETs on 127.0.0.1 of the lab's namespace from one thread that entered it."""

    def __init__(self, ns: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from scale import enter_netns

        self.pool = ThreadPoolExecutor(1, initializer=enter_netns, initargs=(ns,))

    def get(self, port: int, path: str = "/metrics") -> tuple[float, str]:
        return self.pool.submit(self._get, port, path).result()

    @staticmethod
    def _get(port: int, path: str) -> tuple[float, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            t0 = time.perf_counter()
            conn.request("GET", path, headers=SCRAPE_HEADERS)
            resp = conn.getresponse()
            body = resp.read()
            took = time.perf_counter() - t0
            if resp.getheader("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            return took, body.decode()
        finally:
            conn.close()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def wait_ready(http_ns: NsHttp, exp: Exporter, timeout: float = 60.0) -> None:
    """Until the exporter answers a scrape (the first sample is then a running one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exp.proc.poll() is not None:
            raise RuntimeError(f"exporter {exp.name} exited: {exp.log.read_text()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            http_ns.get(exp.port)
            return
        time.sleep(0.5)
    raise RuntimeError(f"exporter {exp.name} did not answer within {timeout} s")


# -- the churning clients --------------------------------------------------------------------


@dataclass
class ChurnStats:
    ups: int = 0
    downs: int = 0
    failed: int = 0
    pings: int = 0


class Churn(threading.Thread):
    """Toggles one random client every ``interval`` s; pings one live tunnel each time."""

    def __init__(self, lab: ScaleLab, args: argparse.Namespace, stop: threading.Event) -> None:
        super().__init__(name="churn", daemon=True)
        self.lab = lab
        self.interval = args.churn_interval
        self.stop_event = stop
        self.rng = random.Random(args.seed)
        self.up: set[int] = set()
        self.stats = ChurnStats()
        self.clients = args.clients
        self.ping_every = args.ping_every

    def _charon(self, i: int) -> Any:
        return self.lab.initiator_of(i).charon

    def initiate(self, i: int) -> None:
        name = conn_name(i)
        with self._charon(i).session(timeout=30) as s:
            for _ in s.initiate({"child": name, "ike": name, "timeout": "15000"}):
                pass

    def terminate(self, i: int) -> None:
        name = conn_name(i)
        with self._charon(i).session(timeout=30) as s:
            for _ in s.terminate({"ike": name, "timeout": "15000", "force": "yes"}):
                pass

    def ping(self, i: int) -> None:
        ns = self.lab.initiator_of(i).netns
        subprocess.run(
            netns.exec_argv(
                ns,
                ["ping", "-c", "2", "-i", "0.2", "-W", "1", "-q", "-I", client_ts(i), server_ts(i)],
            ),
            capture_output=True,
            timeout=10,
            check=False,
        )
        self.stats.pings += 1

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            i = self.rng.randrange(self.clients)
            try:
                if i in self.up:
                    self.up.discard(i)
                    self.terminate(i)
                    self.stats.downs += 1
                else:
                    self.initiate(i)
                    self.up.add(i)
                    self.stats.ups += 1
                toggles = self.stats.ups + self.stats.downs
                if self.up and self.ping_every and toggles % self.ping_every == 0:
                    self.ping(self.rng.choice(sorted(self.up)))
            except Exception as err:  # a failed initiate leaves it down; go on
                self.stats.failed += 1
                log(f"churn: client {i}: {err}")


def client_conns(args: argparse.Namespace, i: int) -> dict[str, Any]:
    version: Version = 1 if args.ikev1_every and i % args.ikev1_every == 0 else 2
    conn = client_conn(i, version, start=False)
    body = conn[conn_name(i)]
    ike_key = "rekey_time" if version == 2 else "reauth_time"
    body[ike_key] = f"{args.ike_rekey}s"
    body["over_time"] = f"{max(10, args.ike_rekey // 10)}s"
    child = body["children"][conn_name(i)]
    child["rekey_time"] = f"{args.child_rekey}s"
    child["life_time"] = f"{args.child_rekey * 2}s"
    return conn


def load_clients(lab: ScaleLab, args: argparse.Namespace) -> None:
    initiator = lab.initiators[0]
    with initiator.charon.session(timeout=60) as s:
        for i in range(args.clients):
            s.load_conn(client_conns(args, i))
            lab.loaded.add(i)


# -- numbers ---------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the exporters started
    rss: float
    traced_rss: float
    scrape_ms: float
    ike_sas: float
    events: float
    charon_rss: float
    exporter_cpu: float


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in points)
    return 60 * sxy / sxx if sxx else float("nan")


def summary(samples: list[Sample], args: argparse.Namespace, churn: ChurnStats) -> str:
    lines = []
    after = [s for s in samples if s.t >= args.warmup]
    if not after:
        return "no samples after the warm-up"
    half = [s for s in after if s.t >= (after[0].t + after[-1].t) / 2]
    curves = [("exporter", "rss")] + (
        [("traced exporter", "traced_rss")] if args.tracemalloc else []
    )
    for label, field_name in curves:

        def pick(s: Sample, field_name: str = field_name) -> float:
            value: float = getattr(s, field_name)
            return value

        whole = slope_per_minute([(s.t, pick(s)) for s in after])
        late = slope_per_minute([(s.t, pick(s)) for s in half])
        lines.append(
            f"{label}: RSS {pick(samples[0]):.1f} MB at {samples[0].t:.0f} s, "
            f"{pick(after[0]):.1f} MB after the {args.warmup:.0f} s warm-up, "
            f"{pick(samples[-1]):.1f} MB at the end ({samples[-1].t:.0f} s), "
            f"max {max(pick(s) for s in samples):.1f} MB; slope after the warm-up "
            f"{whole:+.4f} MB/min, over the last half {late:+.4f} MB/min"
        )
    lines.append(
        f"churn: {churn.ups} ups, {churn.downs} downs, {churn.failed} failed, "
        f"{churn.pings} pings; events seen by the exporter: {samples[-1].events:.0f}; "
        f"exporter CPU {samples[-1].exporter_cpu:.1f} s in {samples[-1].t:.0f} s"
    )
    lines.append("")
    lines.append(
        "| minute | RSS MB | traced RSS MB | IKE SAs | events | scrape ms | charon RSS MB |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    next_at = 0.0
    for s in samples:
        if s.t + 1e-6 >= next_at or s is samples[-1]:
            lines.append(
                f"| {s.t / 60:.1f} | {s.rss:.1f} | {s.traced_rss:.1f} | {s.ike_sas:.0f} "
                f"| {s.events:.0f} | {s.scrape_ms:.1f} | {s.charon_rss:.1f} |"
            )
            next_at = s.t + args.curve_step
    return "\n".join(lines)


def diff_snapshots(folder: Path, warmup_index: int, top: int) -> str:
    snaps = sorted(folder.glob("snap-*.pickle"))
    if len(snaps) < 2:
        return "fewer than two tracemalloc snapshots"
    first = snaps[min(warmup_index, len(snaps) - 2)]
    last = snaps[-1]
    old = tracemalloc.Snapshot.load(str(first))
    new = tracemalloc.Snapshot.load(str(last))
    keep = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, linecache.__file__),
    ]
    old, new = old.filter_traces(keep), new.filter_traces(keep)
    out = [f"tracemalloc: {first.name} -> {last.name}"]
    total_old = sum(s.size for s in old.statistics("filename"))
    total_new = sum(s.size for s in new.statistics("filename"))
    out.append(f"traced total {total_old / 1e6:.2f} MB -> {total_new / 1e6:.2f} MB")
    out.append("top growth by line:")
    for stat in new.compare_to(old, "lineno")[:top]:
        out.append(f"  {stat}")
    out.append("top growth by traceback:")
    for stat in new.compare_to(old, "traceback")[: max(3, top // 3)]:
        out.append(f"  {stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks")
        for frame in stat.traceback.format()[-8:]:
            out.append(f"      {frame}")
    return "\n".join(out)


def run(args: argparse.Namespace, workdir: Path) -> int:
    lab = ScaleLab([args.clients])
    exporters: list[Exporter] = []
    stop = threading.Event()
    churn: Churn | None = None
    http_ns: NsHttp | None = None
    samples: list[Sample] = []
    snapshots = workdir / "snapshots"
    snapshots.mkdir()
    try:
        lab.start()
        load_clients(lab, args)
        churn = Churn(lab, args, stop)
        first = list(range(0, args.clients, 2))  # half the clients up at the start
        for i in first:
            try:
                churn.initiate(i)
                churn.up.add(i)
            except Exception as err:
                log(f"initial bring-up of client {i}: {err}")
        log(f"{len(churn.up)} of {args.clients} clients up; starting the exporter(s)")
        extra = list(args.exporter_arg or [])
        exporters.append(Exporter(lab, workdir, "plain", None, extra))
        if args.tracemalloc:
            exporters.append(Exporter(lab, workdir, "traced", snapshots, extra))
        http_ns = NsHttp(lab.server_ns)
        for exp in exporters:
            wait_ready(http_ns, exp)
        started = time.monotonic()
        churn.start()
        out = open(args.csv, "w", newline="") if args.csv else None  # noqa: SIM115
        writer = csv.writer(out) if out else None
        if writer:
            writer.writerow([f.name for f in Sample.__dataclass_fields__.values()])
        next_scrape = started
        next_snapshot = started + args.warmup
        charon_pid = lab.server.pid or 0
        try:
            while (now := time.monotonic()) - started < args.duration:
                time.sleep(max(0.0, next_scrape - now))
                next_scrape += args.scrape_interval
                t = time.monotonic() - started
                values: dict[str, float] = {}
                for exp in exporters:
                    if exp.proc.poll() is not None:
                        raise RuntimeError(f"exporter {exp.name} exited: {exp.log.read_text()}")
                    try:
                        took, text = http_ns.get(exp.port)
                    except (OSError, http.client.HTTPException) as err:
                        log(f"scrape of {exp.name} failed: {err}")
                        took, text = float("nan"), ""
                    values[f"{exp.name}_ms"] = took * 1e3
                    values[f"{exp.name}_rss"] = exp.rss_mb()
                    if exp.name == "plain" and text:
                        values["ike_sas"] = sum_metric(text, "strongswan_ike_sas")
                        values["events"] = sum_metric(text, "strongswan_event_stream_events_total")
                sample = Sample(
                    t=t,
                    rss=values["plain_rss"],
                    traced_rss=values.get("traced_rss", float("nan")),
                    scrape_ms=values["plain_ms"],
                    ike_sas=values.get("ike_sas", float("nan")),
                    events=values.get("events", float("nan")),
                    charon_rss=status_kb(charon_pid, "VmRSS") / 1024 if charon_pid else 0.0,
                    exporter_cpu=cpu_seconds(exporters[0].pid),
                )
                samples.append(sample)
                if writer and out:
                    writer.writerow(
                        [f"{getattr(sample, k):.3f}" for k in Sample.__dataclass_fields__]
                    )
                    out.flush()
                if len(samples) % max(1, int(300 / args.scrape_interval)) == 1:
                    log(
                        f"t={t:.0f}s rss={sample.rss:.1f} MB traced={sample.traced_rss:.1f} MB "
                        f"sas={sample.ike_sas:.0f} events={sample.events:.0f} "
                        f"load={loadavg()} churn={churn.stats}"
                    )
                if args.tracemalloc and time.monotonic() >= next_snapshot:
                    exporters[-1].snapshot()
                    next_snapshot += args.snapshot_interval
        finally:
            if out:
                out.close()
        if args.tracemalloc:
            exporters[-1].snapshot()
            time.sleep(5)  # the dump of a large heap takes a moment
    finally:
        stop.set()
        if churn is not None and churn.is_alive():
            churn.join(30)
        if http_ns is not None:
            http_ns.close()
        for exp in exporters:
            exp.stop()
        lab.close()
    print()
    print(summary(samples, args, churn.stats if churn else ChurnStats()))
    if args.tracemalloc:
        print()
        print(diff_snapshots(snapshots, 0, args.top))
    return 0


def run_flood(args: argparse.Namespace, workdir: Path) -> int:
    from tests.conftest import Scrape
    from tests.hostile.fake_charon import FakeCharon

    peer = FakeCharon(workdir / "charon.vici", flood=args.flood, held=True)
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}"]
    argv += ["--vici.socket", peer.uri, *(args.exporter_arg or [])]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(workdir / "exporter.log", "wb") as fh:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)

    def rss() -> float:
        return status_kb(proc.pid, "VmRSS") / 1024

    def scrape() -> Scrape:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("GET", "/metrics")
            return Scrape(conn.getresponse().read().decode())
        finally:
            conn.close()

    def value(scraped: Scrape, name: str) -> float:
        return sum(float(x.value) for x in scraped.samples(name))

    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if value(scrape(), "strongswan_event_stream_up") == 1:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the exporter did not connect to the fake peer")
            time.sleep(0.5)
        for _ in range(3):
            scrape()
        before = peak = rss()
        log(f"exporter up: RSS {before:.1f} MB; flooding {args.flood} SAs")
        t0 = time.monotonic()
        peer.release()
        while not peer.flood_done.wait(1.0):
            peak = max(peak, rss())
        while value(scraped := scrape(), "strongswan_event_stream_events_total") < 2 * args.flood:
            peak = max(peak, rss())
            time.sleep(0.5)
        took = time.monotonic() - t0
        peak = max(peak, rss())
        sas = value(scraped, "strongswan_ike_sas")
        untracked = value(scraped, "strongswan_sas_untracked_total")
        log(
            f"flood of {args.flood} SAs read in {took:.1f} s: RSS {before:.1f} -> peak "
            f"{peak:.1f} MB, {rss():.1f} MB now; {sas:.0f} SAs tracked, {untracked:.0f} untracked"
        )
        peer.drop_events()
        for i in range(max(1, int(args.after / 10))):
            time.sleep(10)
            scraped = scrape()
            log(
                f"{10 * (i + 1)} s after the stream dropped: RSS {rss():.1f} MB, "
                f"{value(scraped, 'strongswan_ike_sas'):.0f} SAs, reconnects "
                f"{value(scraped, 'strongswan_event_stream_reconnects_total'):.0f}"
            )
    finally:
        process.stop(proc)
        peer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of churn")
    parser.add_argument("--clients", type=int, default=40, help="client connections")
    parser.add_argument("--ikev1-every", type=int, default=4, help="every Nth client IKEv1")
    parser.add_argument("--churn-interval", type=float, default=3.0, help="s between toggles")
    parser.add_argument("--ping-every", type=int, default=1, help="a ping every N toggles")
    parser.add_argument("--child-rekey", type=int, default=90, help="CHILD SA rekey_time, s")
    parser.add_argument("--ike-rekey", type=int, default=300, help="IKE rekey/reauth time, s")
    parser.add_argument("--scrape-interval", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=300.0, help="s before slopes count")
    parser.add_argument("--tracemalloc", action="store_true", help="also a traced exporter")
    parser.add_argument("--snapshot-interval", type=float, default=600.0)
    parser.add_argument("--top", type=int, default=25, help="lines of the snapshot diff")
    parser.add_argument("--curve-step", type=float, default=300.0, help="s between rows")
    parser.add_argument("--csv", help="write every sample here as it is taken")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--exporter-arg", action="append", help="extra exporter argument (repeatable)"
    )
    parser.add_argument("--flood", type=int, default=0, help="item 6: flood N SAs instead")
    parser.add_argument("--after", type=float, default=60.0, help="--flood: s watched after")
    args = parser.parse_args(argv)
    if args.flood:
        with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
            return run_flood(args, Path(tmp))
    if os.geteuid() != 0:
        print("run as root: network namespaces and charon", file=sys.stderr)
        return 2
    print(f"machine: {machine()}", flush=True)
    print(f"load average at start: {loadavg()}; args: {vars(args)}", flush=True)
    with terminate_on_signals(), tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
