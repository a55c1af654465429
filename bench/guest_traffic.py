"""Benchmark: CHILD SA traffic from the kernel in the vmlab guest (issue 19).

In the emulated Debian guest (`tests/vmlab`, QEMU TCG, one vCPU): a genuine strongSwan
server with charon's kernel-netlink, real client charons (IKEv1 PSK, L2TP/IPsec, ESP in
transport mode through the kernel), and the real exporter (`python3 -m exporter`, the
listing every 10 minutes, so every byte count it shows is the kernel's). At each size,
in one run:

1. the exporter's scrape cost: wall time per `/metrics` (Prometheus' headers, OpenMetrics,
   gzip, keep-alive, back to back, taken inside the guest) and the exporter process's CPU
   per scrape (utime+stime from `/proc`, minus its idle rate measured just before);
2. the same numbers from iproute2: `ip -s xfrm state`, wall and CPU (its own and the
   kernel's for it, from `RUSAGE_CHILDREN`) per run, its output read in full;
3. staleness: traffic through every client's CHILD SA (pings inside PPP/L2TP/ESP), then a
   scrape between two readings of the clients' states by iproute2 (`ip -s xfrm state
   get`) that agree: every client's in and out bytes and packets in the scrape must be
   the kernel's exactly (a client whose states moved across the scrape, an LCP echo, is
   judged on a later one);
4. the join (`strongswan_kernel_traffic.kernel_traffic`) of the live XFRM dump, read by the
   exporter's own `dump_xfrm`, with charon-like CHILD SAs made for every added pair
   (their SPIs, reqid, addresses), so all of them join: the cost of the join at 5,000
   CHILD SAs on a real kernel's dump.

The sizes: the real clients' CHILD SAs, plus 0, 1,000 and 5,000 XFRM state pairs added
with `ip -batch` in the server's namespace (transport-mode ESP, distinct SPIs and reqids,
peers 10.200.x.y that no charon knows: they make the dump and the XFRM collector as big
as at 5,000 clients; charon has no CHILD SA for them, so in the scrape they are indexed
and not joined; item 4 joins them). The number of real clients is the guest's: each
is a charon, xl2tpd and pppd in a netns, and a connect under emulation takes 10-20 s.

Exits non-zero when a check fails (a stale or wrong byte count, states missing, a join
that does not find every pair). The guest is powered off on any exit.

    python bench/guest_traffic.py                      # bookworm, 8 clients, 0/1,000/5,000
    python bench/guest_traffic.py --release trixie --quick

The in-guest half is this file too (`--in-guest ...`, run by the guest's python3 from the
read-only checkout; standard library only, but for the join, which imports the exporter).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVER_IP = "192.168.77.1"
EXPORTER_PORT = 9814
GUEST_SRC = "/mnt/src"
#: The added pairs: SPIs 0x2000_0000 + 2i (in) and + 2i + 1 (out), never charon's (it asks
#: the kernel for inbound SPIs in 0xc0000000-0xcfffffff); reqids from 100,000 up.
EXTRA_SPI_BASE = 0x2000_0000
EXTRA_REQID_BASE = 100_000
ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
SPLIT = "-----split-----"

# -- pure parts (tests/unit/test_bench_guest_traffic.py) ----------------------------------


@dataclass(frozen=True)
class KernelSA:
    """One state of `ip -s xfrm state`."""

    src: str
    dst: str
    proto: str
    spi: int
    reqid: int
    mode: str
    bytes: int
    packets: int


_HEAD_RE = re.compile(
    # With -s, iproute2 adds the SPI in decimal and the reqid in hex: "spi 0xc5d1a2b3(3318850227)
    # reqid 1(0x00000001)".
    r"^src (\S+) dst (\S+)\n\s+proto (\w+) spi 0x([0-9a-f]+)(?:\(\d+\))?"
    r" reqid (\d+)(?:\(0x[0-9a-f]+\))? mode (\w+)",
    re.M,
)
_CURRENT_RE = re.compile(r"lifetime current:\n\s+(\d+)\(bytes\), (\d+)\(packets\)")


def parse_xfrm(text: str) -> list[KernelSA]:
    """The states of `ip -s xfrm state` (each with its current bytes and packets)."""
    out = []
    for block in re.split(r"\n(?=src )", text):
        head = _HEAD_RE.search(block)
        if head is None:
            continue
        current = _CURRENT_RE.search(block)
        if current is None:
            raise ValueError(f"no current lifetime in: {block[:200]!r}")
        src, dst, proto, spi, reqid, mode = head.groups()
        out.append(
            KernelSA(src, dst, proto, int(spi, 16), int(reqid), mode, *map(int, current.groups()))
        )
    return out


def peer_address(i: int) -> str:
    """The i-th added pair's peer (10.200.0.1 on, .1 to .250 in each /24), never a guest
    address."""
    return f"10.200.{i // 250}.{i % 250 + 1}"


def extra_spis(i: int) -> tuple[int, int]:
    """The i-th added pair's (inbound, outbound) SPIs."""
    return EXTRA_SPI_BASE + 2 * i, EXTRA_SPI_BASE + 2 * i + 1


def state_batch(pairs: int, server: str = SERVER_IP, start: int = 0) -> str:
    """`ip -batch` lines adding pairs `start`...`start + pairs - 1`: each a charon-like
    CHILD SA in the kernel (transport-mode ESP, AES-CBC + HMAC-SHA256, one reqid for its
    inbound and outbound state, peer → server and back, UDP/1701 selectors)."""
    lines = []
    for i in range(start, start + pairs):
        peer = peer_address(i)
        reqid = EXTRA_REQID_BASE + i
        spi_in, spi_out = extra_spis(i)
        enc = f"0x{i:032x}"
        auth = f"0x{i:064x}"
        for src, dst, spi, sport, dport in (
            (peer, server, spi_in, 0, 1701),
            (server, peer, spi_out, 1701, 0),
        ):
            sel = f"sel src {src}/32 dst {dst}/32 proto udp"
            sel += f" sport {sport}" if sport else f" dport {dport}"
            lines.append(
                f"xfrm state add src {src} dst {dst} proto esp spi 0x{spi:08x} reqid {reqid}"
                f" mode transport auth-trunc hmac(sha256) {auth} 128 enc cbc(aes) {enc} {sel}"
            )
    return "\n".join(lines) + "\n"


def of_hosts(states: Iterable[KernelSA], hosts: Iterable[str]) -> dict[int, KernelSA]:
    """The states between the server and these hosts, by SPI."""
    wanted = set(hosts)
    return {s.spi: s for s in states if s.src in wanted or s.dst in wanted}


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of `name` in a text exposition (labels, value)."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE_RE.match(line)
        if m and m.group(1) == name:
            out.append((dict(_LABEL_RE.findall(m.group(2) or "")), float(m.group(3))))
    return out


@dataclass(frozen=True)
class Mismatch:
    host: str
    direction: str
    what: str
    kernel: int
    scraped: float | None


def staleness(text: str, kernel: dict[int, KernelSA], hosts: Sequence[str]) -> list[Mismatch]:
    """Where the scrape's CHILD SA counts differ from the kernel's (empty: exact). Each host
    must have one IKE SA in the scrape with one CHILD SA, whose `in` bytes/packets are its
    peer → server state's and whose `out` ones the server → peer state's."""
    wrong = []
    info = metric_samples(text, "strongswan_ike_sa_info")
    for host in hosts:
        ike = {lab["uniqueid"] for lab, _ in info if lab.get("remote_host") == host}
        for direction, src, dst in (("in", host, SERVER_IP), ("out", SERVER_IP, host)):
            states = [s for s in kernel.values() if (s.src, s.dst) == (src, dst)]
            for what in ("bytes", "packets"):
                shown = [
                    v
                    for lab, v in metric_samples(text, f"strongswan_child_sa_current_{what}")
                    if lab.get("ike_uniqueid") in ike and lab.get("direction") == direction
                ]
                want = getattr(states[0], what) if len(states) == 1 else -1
                if len(shown) != 1 or shown[0] != want:
                    wrong.append(Mismatch(host, direction, what, want, shown[0] if shown else None))
    return wrong


def bracket(
    text: str,
    before: dict[int, KernelSA],
    after: dict[int, KernelSA],
    hosts: Sequence[str],
) -> list[Mismatch]:
    """Where the scrape's counts are not between the kernel's right before and right after
    it (`before` ≤ scraped ≤ `after`): a count older than the scrape, or made up. When
    before and after agree this is `staleness`, exact equality."""
    late = staleness(text, after, hosts)
    early = {(m.host, m.direction, m.what): m for m in staleness(text, before, hosts)}
    wrong = []
    for m in late:
        b = early.get((m.host, m.direction, m.what))
        # No mismatch with `before`: the scrape has exactly its counts.
        floor = b.kernel if b is not None else m.scraped
        if m.scraped is None or floor is None or m.kernel < 0 or not floor <= m.scraped <= m.kernel:
            wrong.append(m)
    return wrong


def judge(attempts: Sequence[dict[str, Any]], hosts: Sequence[str]) -> dict[str, Any]:
    """The verdict on a reading's scrapes: each client on the first scrape its states did
    not move across (exact equality), else on the last (between before and after)."""
    exact = bracketed = seen = 0
    wrong: list[Mismatch] = []
    for host in hosts:
        tried = []
        for a in attempts:
            before = {x["spi"]: KernelSA(**x) for x in a["before"]}
            after = {x["spi"]: KernelSA(**x) for x in a["after"]}
            mine_b = {k: v for k, v in before.items() if host in (v.src, v.dst)}
            mine_a = {k: v for k, v in after.items() if host in (v.src, v.dst)}
            tried.append((a["text"], mine_b, mine_a))
            if mine_b == mine_a:
                break
        text, mine_b, mine_a = tried[-1]
        seen += len(mine_a)
        if mine_b == mine_a:
            exact += 1
        else:
            bracketed += 1
        wrong += bracket(text, mine_b, mine_a, [host])
    return {"exact": exact, "bracketed": bracketed, "states": seen, "wrong": wrong}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values: Sequence[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


# -- the guest's half -----------------------------------------------------------------------


def _ticks(pid: int) -> int:
    """utime + stime of the whole process (every thread, live or gone), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _cpu(pid: int) -> float:
    return _ticks(pid) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _xfrm_text() -> str:
    return subprocess.run(
        ["ip", "-s", "xfrm", "state"], capture_output=True, text=True, check=True
    ).stdout


def get_batch(states: Iterable[KernelSA]) -> str:
    """`ip -batch` lines that read these states alone (no dump of all of them)."""
    return "".join(
        f"xfrm state get src {x.src} dst {x.dst} proto {x.proto} spi 0x{x.spi:08x}\n"
        for x in states
    )


def _states_now(states: Iterable[KernelSA]) -> list[KernelSA]:
    """These states as `ip -s xfrm state get` shows them now (one `ip` for all)."""
    text = subprocess.run(
        ["ip", "-s", "-batch", "-"],
        input=get_batch(states),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_xfrm(text)


class _Scraper:
    def __init__(self, port: int = EXPORTER_PORT) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, prometheus: bool = True) -> bytes:
        headers = {"Accept": ACCEPT, "Accept-Encoding": "gzip"} if prometheus else {}
        self.conn.request("GET", "/metrics", headers=headers)
        r = self.conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"/metrics -> {r.status}")
        if r.getheader("Content-Encoding") == "gzip":
            return gzip.decompress(body)
        return body

    def close(self) -> None:
        self.conn.close()


def guest_cost(pid: int, scrapes: int, idle: float, ip_runs: int) -> dict[str, Any]:
    """The exporter's scrape cost and `ip -s xfrm state`'s, measured here in the guest."""
    scraper = _Scraper()
    scraper.get()  # warm: connection, caches
    c0, t0 = _cpu(pid), time.monotonic()
    time.sleep(idle)
    idle_rate = (_cpu(pid) - c0) / (time.monotonic() - t0)
    walls, sizes = [], []
    c0, t0 = _cpu(pid), time.monotonic()
    for _ in range(scrapes):
        s = time.perf_counter()
        sizes.append(len(scraper.get()))
        walls.append(time.perf_counter() - s)
    elapsed = time.monotonic() - t0
    used = _cpu(pid) - c0
    scraper.close()
    ip_walls, ip_cpu, states = [], [], 0
    for _ in range(ip_runs):
        k0, s = _children_cpu(), time.perf_counter()
        text = _xfrm_text()
        ip_walls.append(time.perf_counter() - s)
        ip_cpu.append(_children_cpu() - k0)
        states = len(parse_xfrm(text))
    return {
        "scrape_wall": walls,
        "scrape_cpu_total": used,
        "scrape_elapsed": elapsed,
        "idle_rate": idle_rate,
        "scrape_cpu": max(0.0, used - idle_rate * elapsed) / scrapes,
        "exposition_bytes": median(sizes),
        "ip_wall": ip_walls,
        "ip_cpu": sum(ip_cpu) / len(ip_cpu),
        "states": states,
    }


#: The families a staleness reading sends back to the host (the rest is not needed).
_KEEP = (
    "strongswan_ike_sa_info",
    "strongswan_child_sa_current_bytes",
    "strongswan_child_sa_current_packets",
    "strongswan_kernel_traffic_age_seconds",
    "strongswan_sa_listing_age_seconds",
)


def guest_reading(hosts: Sequence[str], attempts: int) -> dict[str, Any]:
    """Scrapes, each between two readings of the clients' states (`ip -s xfrm state get`
    of each, one `ip -batch`; found in one full `ip -s xfrm state` first), until every
    client's states agreed in both readings around one of them, or `attempts` scrapes.
    pppd's LCP echoes cross each tunnel every 5 s, both ways: with many clients and a
    scrape of seconds, a moment when no tunnel carries a packet is rare, so each client is
    judged on a scrape its own states did not move across (exact), or failing one, on the
    last (its counts between the readings before and after)."""
    scraper = _Scraper()
    out: list[dict[str, Any]] = []
    waiting = set(hosts)
    everything = parse_xfrm(_xfrm_text())
    mine = list(of_hosts(everything, hosts).values())
    s = time.monotonic()
    for _ in range(attempts):
        t0 = time.monotonic()
        before = _states_now(mine)
        t1 = time.monotonic()
        text = scraper.get(prometheus=False).decode()
        t2 = time.monotonic()
        after = _states_now(mine)
        lines = text.splitlines()
        out.append(
            {
                "before": [asdict(x) for x in before],
                "after": [asdict(x) for x in after],
                "scrape_seconds": t2 - t1,
                "window_seconds": time.monotonic() - t0,
                "state_series": sum(line.startswith("xfrm_state_info{") for line in lines),
                "text": "\n".join(line for line in lines if line.startswith(_KEEP)),
            }
        )
        b = {x.spi: x for x in before}
        waiting -= {
            h for h in hosts if all(b.get(x.spi) == x for x in after if h in (x.src, x.dst))
        }
        if not waiting:
            break
    scraper.close()
    return {"seconds": time.monotonic() - s, "states": len(everything), "attempts": out}


def guest_join(pairs: int, rounds: int) -> dict[str, Any]:
    """The exporter's `dump_xfrm` of the live kernel and the join of its states with
    charon-like CHILD SAs for every added pair (needs the exporter on sys.path)."""
    import asyncio

    from exporter.collectors.strongswan_kernel_traffic import index_states, kernel_traffic
    from exporter.kernel.xfrm import dump_xfrm
    from exporter.strongswan.snapshot import ChildSA, IkeSA

    dumps = []
    snap = None
    for _ in range(rounds):
        s = time.perf_counter()
        snap = asyncio.run(dump_xfrm(30.0))
        dumps.append(time.perf_counter() - s)
    assert snap is not None
    ike_sas = []
    for i in range(pairs):
        spi_in, spi_out = extra_spis(i)
        child = ChildSA(
            name="l2tp",
            uniqueid=str(10_000_000 + i),
            reqid=str(EXTRA_REQID_BASE + i),
            state="INSTALLED",
            mode="TRANSPORT",
            protocol="ESP",
            encap=False,
            encr_alg="AES_CBC-128",
            integ_alg="HMAC_SHA2_256_128",
            bytes_in=0,
            bytes_out=0,
            packets_in=0,
            packets_out=0,
            installed_at=None,
            spi_in=spi_in,
            spi_out=spi_out,
        )
        ike_sas.append(
            IkeSA(
                conn="nycmesh-l2tp-psk",
                uniqueid=str(i + 1),
                version="1",
                state="ESTABLISHED",
                local_host=SERVER_IP,
                remote_host=peer_address(i),
                remote_id=peer_address(i),
                user=f"user{i}",
                encr_alg="AES_CBC-256",
                integ_alg="HMAC_SHA2_256_128",
                prf_alg="PRF_HMAC_SHA2_256",
                dh_group="MODP_2048",
                established_at=None,
                remote_vips=(),
                children=(child,),
            )
        )
    states = snap.states
    joins, indexes = [], []
    joined: dict[str, Any] = {}
    for _ in range(rounds):
        s = time.perf_counter()
        index_states(states)
        indexes.append(time.perf_counter() - s)
        s = time.perf_counter()
        joined = kernel_traffic(ike_sas, states)
        joins.append(time.perf_counter() - s)
    return {
        "states": len(states),
        "children": len(ike_sas),
        "joined": len(joined),
        "dump": dumps,
        "index": indexes,
        "join": joins,
    }


def in_guest(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="guest_traffic.py --in-guest")
    ap.add_argument("what", choices=("cost", "reading", "join", "batch"))
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--ip-runs", type=int, default=3)
    ap.add_argument("--hosts", default="")
    ap.add_argument("--attempts", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    hosts = [h for h in a.hosts.split(",") if h]
    if a.what == "cost":
        out = guest_cost(a.pid, a.scrapes, a.idle, a.ip_runs)
    elif a.what == "reading":
        out = guest_reading(hosts, a.attempts)
    elif a.what == "join":
        out = guest_join(a.pairs, a.rounds)
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
            f.write(state_batch(a.pairs, start=a.start))
        s = time.monotonic()
        subprocess.run(["ip", "-batch", f.name], check=True)
        os.unlink(f.name)
        out = {"seconds": time.monotonic() - s}
    print(json.dumps(out))
    return 0


# -- the host's half ------------------------------------------------------------------------


@dataclass
class Row:
    real: int
    extra: int
    states: int
    samples: int
    scrape_p50: float
    scrape_p95: float
    scrape_mean: float
    scrape_cpu: float
    ip_p50: float
    ip_cpu: float
    reading_attempts: int
    reading_seconds: float
    exact: int
    bracketed: int
    fresh: bool
    kernel_age: float
    listing_age: float
    traffic_to_scrape: float


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--in-guest"]:
        return in_guest(args[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", choices=("bookworm", "trixie"), default="bookworm")
    ap.add_argument("--quick", action="store_true", help="2 clients, 0 and 5,000 pairs, 5 scrapes")
    ap.add_argument("--clients", type=int, default=None, help="real clients (default 8)")
    ap.add_argument("--pairs", default=None, help="added pairs per step (default 0,1000,5000)")
    ap.add_argument("--scrapes", type=int, default=None, help="scrapes per size (default 10)")
    a = ap.parse_args(args)
    clients = a.clients or (2 if a.quick else 8)
    steps = [int(x) for x in (a.pairs or ("0,5000" if a.quick else "0,1000,5000")).split(",")]
    scrapes = a.scrapes or (5 if a.quick else 10)
    if steps != sorted(steps):
        ap.error("--pairs must grow")
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the guest is always powered off.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(128 + 15))
    return run(a.release, clients, steps, scrapes)


def run(release: str, clients: int, steps: Sequence[int], scrapes: int) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.vmlab.guest import Guest

    hosts = [f"192.168.77.{10 + n}" for n in range(1, clients + 1)]
    rows: list[Row] = []
    failures: list[str] = []
    t_start = time.monotonic()
    with Guest(clients=clients, release=release, memory_mb=1536) as g:
        print(f"# {release}: booted in {g.boot_seconds} s", flush=True)

        def guest_py(*gargs: str, timeout: float = 300, exporter: bool = False) -> Any:
            env = ["env", f"PYTHONPATH={GUEST_SRC}:/mnt/pydeps"] if exporter else []
            argv = [*env, "python3", f"{GUEST_SRC}/bench/guest_traffic.py", "--in-guest"]
            r = g.run([*argv, *gargs], timeout=timeout)
            return json.loads(r["stdout"])

        versions = {
            "kernel": g.sh("uname -r").strip(),
            "strongswan": g.sh("swanctl --version").strip(),
            "iproute2": g.sh("ip -V").strip(),
            "python": g.sh("python3 -V").strip(),
        }
        print(f"# {versions}", flush=True)
        connects = []
        for n in range(1, clients + 1):
            s = time.monotonic()
            g.connect(n)
            connects.append(time.monotonic() - s)
        print(f"# {clients} clients connected: {', '.join(f'{c:.0f}' for c in connects)} s")
        mem = g.sh("free -m | sed -n 2p").split()
        print(f"# guest memory: {mem[2]} MiB used of {mem[1]} with the clients up", flush=True)
        g.start_exporter(
            extra=[
                "--collector.strongswan.sa-details",
                "--collector.strongswan.sa-refresh-interval",
                "10m",
            ]
        )
        s = time.monotonic()
        g.wait_exporter(timeout=300)
        pid = int(g.status()["exporter"]["pid"])
        print(f"# exporter up in {time.monotonic() - s:.0f} s (pid {pid})", flush=True)
        added = 0
        join: dict[str, Any] | None = None
        for extra in steps:
            if extra > added:
                b = guest_py("batch", "--pairs", str(extra - added), "--start", str(added))
                print(f"# added {extra - added} pairs in {b['seconds']:.1f} s", flush=True)
                added = extra
            # Traffic through every client, then at once a reading: staleness.
            for n in range(1, clients + 1):
                r = g.traffic(n, count=10, size=400 + 100 * n)
                if r["rc"] != 0:
                    raise RuntimeError(f"traffic through client {n}: {r['output']}")
            sent = time.monotonic()
            reading = guest_py("reading", "--hosts", ",".join(hosts))
            after_traffic = time.monotonic() - sent
            verdict = judge(reading["attempts"], hosts)
            if verdict["states"] != 2 * clients:
                failures.append(f"{extra}: {verdict['states']} client states, not {2 * clients}")
            if verdict["wrong"]:
                failures.append(f"{extra}: scrape outside the kernel's counts: {verdict['wrong']}")
            if reading["states"] != 2 * (clients + extra):
                failures.append(f"{extra}: {reading['states']} states, not {2 * (clients + extra)}")
            last = reading["attempts"][-1]
            ages = metric_samples(last["text"], "strongswan_kernel_traffic_age_seconds")
            listing = metric_samples(last["text"], "strongswan_sa_listing_age_seconds")
            cost = guest_py("cost", "--pid", str(pid), "--scrapes", str(scrapes))
            row = Row(
                real=clients,
                extra=extra,
                states=cost["states"],
                samples=last["state_series"],
                scrape_p50=median(cost["scrape_wall"]),
                scrape_p95=p95(cost["scrape_wall"]),
                scrape_mean=statistics.mean(cost["scrape_wall"]),
                scrape_cpu=cost["scrape_cpu"],
                ip_p50=median(cost["ip_wall"]),
                ip_cpu=cost["ip_cpu"],
                reading_attempts=len(reading["attempts"]),
                reading_seconds=median([x["window_seconds"] for x in reading["attempts"]]),
                exact=verdict["exact"],
                bracketed=verdict["bracketed"],
                fresh=not verdict["wrong"],
                kernel_age=ages[0][1] if ages else float("nan"),
                listing_age=listing[0][1] if listing else float("nan"),
                traffic_to_scrape=after_traffic,
            )
            rows.append(row)
            print(f"# {json.dumps(asdict(row))}", flush=True)
            print(
                f"#   exposition {cost['exposition_bytes']:.0f} B, "
                f"idle {cost['idle_rate']:.4f} CPU-s/s"
            )
            if extra == max(steps) and extra > 0:
                join = guest_py("join", "--pairs", str(extra), exporter=True, timeout=600)
                if join["joined"] != extra:
                    failures.append(f"join: {join['joined']} of {extra} CHILD SAs found")
        g.stop_exporter()
    total = time.monotonic() - t_start
    host = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = host
    print()
    print(
        f"Guest: Debian {release} under QEMU TCG (1 vCPU), {versions['kernel']}, "
        f"{versions['strongswan']}, {versions['iproute2']}, {versions['python']}; "
        f"host {model}, {os.cpu_count()} CPUs; {total:.0f} s in all."
    )
    print()
    print(
        "| real CHILD SAs | added pairs | XFRM states | scrape wall p50 / p95 / mean (ms) "
        "| `xfrm_state_info` series | exporter CPU / scrape (ms) "
        "| `ip -s xfrm state` wall (ms) | its CPU (ms) "
        "| clients' bytes/packets in the scrape = kernel's | readings, window p50 (s) "
        "| last packet → verdict (s) | kernel traffic age (s) | listing age (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.real} | {r.extra:,} | {r.states:,} "
            f"| {ms(r.scrape_p50)} / {ms(r.scrape_p95)} / {ms(r.scrape_mean)} "
            f"| {r.samples:,} | {ms(r.scrape_cpu)} | {ms(r.ip_p50)} | {ms(r.ip_cpu)} "
            f"| {'yes' if r.fresh else '**no**'}: {r.exact} exact, {r.bracketed} between "
            f"| {r.reading_attempts}, {r.reading_seconds:.1f} | {r.traffic_to_scrape:.0f} "
            f"| {r.kernel_age:.2f} "
            f"| {r.listing_age:.0f} |"
        )
    if join is not None:
        print()
        print(
            f"Join at {join['children']:,} charon-like CHILD SAs against the live dump "
            f"({join['states']:,} states): dump_xfrm {ms(median(join['dump']))} ms, "
            f"index {ms(median(join['index']))} ms, kernel_traffic (index + join) "
            f"{ms(median(join['join']))} ms (median of {len(join['join'])}); "
            f"joined {join['joined']:,}."
        )
    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
