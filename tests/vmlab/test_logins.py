"""Per-login accounting and the /sessions page in the genuine stack (issue 18).

One guest (strongSwan flavour), the shipped pppd hooks installed (ip-up records the
login, ip-down the ended session with pppd's BYTES_*/CONNECT_TIME), the exporter in the
guest with the users collector and the page, scraped from the host through the forwarded
port. Three logins: ``nycmesh`` (client 1), ``alice`` (client 2), ``bob`` (client 3).
Tests run in file order and share the guest.

What pppd gives the hooks (docs/logins.md; tests/vmlab/pppd_probe.py measured it):
BYTES_RCVD/BYTES_SENT are the ppp interface's final rx/tx byte counts minus the few bytes
(IPv6 link-local chatter, 58-154 B in the runs) it counted before pppd's own baseline;
the interface is already gone when ip-down runs; a killed *client* still gets its
server-side ip-down once the LCP echoes fail (5 s x 3 in the guest); only a killed
*server-side pppd* leaves no record.

So the exact claims: a session the exporter saw live after its last traffic is banked
with the interface's final counts (the larger of the two); one that started and ended
between two scrapes with pppd's counts, exactly. Debian 13 only in .ci/run;
VMLAB_MATRIX=full runs every release (docs/vmlab.md, "CI subset").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import STACK_RELEASES, vmlab_skip_reason
from .guest import Guest, GuestError
from .scraped import eventually

pytestmark = pytest.mark.vmlab

# Debian 13 in .ci/run (the 45-minute budget); every release with VMLAB_MATRIX=full.
LOGINS_RELEASES = (
    list(STACK_RELEASES)
    if os.environ.get("VMLAB_MATRIX") == "full" or os.environ.get("VMLAB_RELEASE")
    else ["trixie"]
)
CONN = "nycmesh-l2tp-psk"
HOOK = "/mnt/src/contrib/ppp/ip-{}.d/l2tp-ipsec-exporter"
STATE = "/run/l2tp-ipsec-exporter/ppp"
#: client -> (PPP login, password); nycmesh is the guest's own (conf/chap-secrets).
LOGINS = {1: ("nycmesh", "nycmeshnet"), 2: ("alice", "alice-pw"), 3: ("bob", "bob-pw")}
#: Bytes the interface counts before pppd's baseline, which BYTES_* leave out (58-154 B
#: seen: the IPv6 link-local packets right after IPV6CP); a bound, not a guess of it.
PRE_BASELINE_MAX = 600
#: Where the chromium test copies its screenshot when set (docs/sessions-page-guest.png).
SCREENSHOT_ENV = "VMLAB_SESSIONS_SCREENSHOT"

Samples = dict[str, list[tuple[dict[str, str], float]]]
COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
FAMILY = {
    "rx_bytes": "l2tp_ipsec_user_receive_bytes_total",
    "tx_bytes": "l2tp_ipsec_user_transmit_bytes_total",
    "rx_packets": "l2tp_ipsec_user_receive_packets_total",
    "tx_packets": "l2tp_ipsec_user_transmit_packets_total",
}


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    found = [
        v for lab, v in samples.get(name, []) if all(lab.get(k) == w for k, w in labels.items())
    ]
    assert len(found) <= 1, f"{name}{labels}: {found}"
    return found[0] if found else None


Counts = dict[str, int]
ZERO: Counts = dict.fromkeys(COUNTERS, 0)


def add(a: Counts, b: Counts) -> Counts:
    return {k: a.get(k, 0) + b.get(k, 0) for k in COUNTERS}


def from_record(rec: dict[str, str]) -> Counts:
    """pppd's final counts as the ip-down hook recorded them (packets when it could)."""
    return {
        "rx_bytes": int(rec["BYTES_RCVD"]),
        "tx_bytes": int(rec["BYTES_SENT"]),
        "rx_packets": int(rec.get("RX_PACKETS") or 0),
        "tx_packets": int(rec.get("TX_PACKETS") or 0),
    }


#: Seconds the exporter reuses a kernel reading (exporter/kernel/source.py's Shared), and a
#: little more for the guest's clock.
KERNEL_READING_REUSE = 1.2


@dataclass
class Lab:
    """The guest and what the exporter must show: for each login the banked counts of
    its ended sessions plus, for each live session, the interface's counts at the
    exporter's last reading (read just before and just after it, equal)."""

    g: Guest
    t0: float = field(default_factory=time.monotonic)
    #: client -> the server-side interface of its current session
    iface: dict[int, str] = field(default_factory=dict)
    #: client -> the interface's counts at the exporter's last reading of it
    seen: dict[int, Counts] = field(default_factory=dict)
    #: login -> the banked counts of its ended sessions
    banked: dict[str, Counts] = field(default_factory=dict)
    #: client -> its session's counts once they stopped moving after its traffic
    final: dict[int, Counts] = field(default_factory=dict)
    #: client -> the PPP login and password it connects with
    logins: dict[int, tuple[str, str]] = field(default_factory=lambda: dict(LOGINS))
    #: When `observe` last fetched from the exporter (monotonic).
    fetched_at: float = 0.0

    def scrape(self) -> Samples:
        return parse(self.g.scrape())

    def sessions_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.g.scrape("/sessions?format=json"))
        return doc

    def user(self, s: Samples, login: str) -> dict[str, float | None]:
        names = {
            **{k: FAMILY[k] for k in COUNTERS},
            "sessions": "l2tp_ipsec_user_sessions",
            "logins": "l2tp_ipsec_user_logins_total",
            "logouts": "l2tp_ipsec_user_logouts_total",
            "connected": "l2tp_ipsec_user_connected_seconds_total",
            "last_login": "l2tp_ipsec_user_last_login_timestamp_seconds",
            "last_logout": "l2tp_ipsec_user_last_logout_timestamp_seconds",
        }
        return {k: value(s, n, user=login) for k, n in names.items()}

    def server_iface(self, n: int) -> str:
        st = self.g.status()
        local = (st["clients"][str(n)].get("ppp") or {}).get("local")
        found = [p["ifname"] for p in st["server"]["ppp"] if p["peer"].split("/")[0] == local]
        assert local and len(found) == 1, st
        return str(found[0])

    def counts(self, *clients: int) -> dict[int, Counts]:
        """The server interfaces' counters of these clients' sessions, in one command."""
        files = " ".join(
            f"/sys/class/net/{self.iface[n]}/statistics/{k}" for n in clients for k in COUNTERS
        )
        values = list(map(int, self.g.sh(f"cat {files}").split()))
        per = len(COUNTERS)
        return {
            n: dict(zip(COUNTERS, values[i * per : (i + 1) * per], strict=True))
            for i, n in enumerate(clients)
        }

    def settle(self, n: int) -> Counts:
        """Client n's counts once its traffic is through (the kernel's IPv6 router
        solicitations still add 48 B now and then, with growing pauses)."""
        last = self.counts(n)[n]

        def still() -> Counts | None:
            nonlocal last
            time.sleep(1.5)
            now = self.counts(n)[n]
            same, last = now == last, now
            return now if same else None

        self.final[n] = eventually(still, 30, f"{self.iface[n]}'s counters settled", step=0)
        return self.final[n]

    def observe(self, fetch: Callable[[], Any] | None = None) -> Any:
        """``fetch()`` (a scrape by default) bracketed by readings of every live
        session's counters, repeated until the two readings agree: then the exporter
        read exactly those. Returns what ``fetch`` returned (parsed, for a scrape)."""
        live = sorted(self.iface)
        for _ in range(6):
            # The exporter shares a kernel reading for a second (KernelSource's Shared):
            # a fetch within it of the last one could return a reading older than
            # `before` (seen in CI: one LCP echo, 48 B, short after a retry).
            time.sleep(max(0.0, self.fetched_at + KERNEL_READING_REUSE - time.monotonic()))
            before = self.counts(*live) if live else {}
            out = fetch() if fetch is not None else self.scrape()
            self.fetched_at = time.monotonic()
            after = self.counts(*live) if live else {}
            if before == after:
                self.seen.update(after)
                return out
        raise AssertionError(f"counters kept moving around the readings: {before} {after}")

    def expected(self, login: str) -> Counts:
        total = self.banked.get(login, ZERO)
        for n in self.iface:
            if self.logins[n][0] == login:
                total = add(total, self.seen[n])
        return total

    def ended(self, n: int, rec: dict[str, str] | None) -> Counts:
        """Client n's session ended (see bank)."""
        self.iface.pop(n)
        return self.bank(self.logins[n][0], rec, self.seen.pop(n, None))

    def bank(self, login: str, rec: dict[str, str] | None, seen: Counts | None) -> Counts:
        """What the ledger banks for an ended session: per counter the larger of its
        ended record (pppd's counts) and what it last read live; only the record when
        it never read it, only the last reading when there is no record (vanished)."""
        if rec is None:
            assert seen is not None
            got = seen
        else:
            got = from_record(rec)
            if seen is not None:
                got = {k: max(got[k], seen[k]) for k in COUNTERS}
        self.banked[login] = add(self.banked.get(login, ZERO), got)
        return got

    def connect(self, *clients: int) -> None:
        """Connect the clients at once, each as its login."""

        def one(n: int) -> None:
            user, password = self.logins[n]
            self.g.connect(n, timeout=120, ppp_user=user, ppp_password=password)

        with ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(one, clients))
        for n in clients:
            self.iface[n] = self.server_iface(n)

    def records(self) -> list[dict[str, str]]:
        """The ended records the ip-down hook wrote (name -> KEY=value)."""
        out = self.g.sh(
            f'for f in {STATE}/ended/*; do [ -f "$f" ] || continue; echo "== $f"; cat "$f"; done'
        )
        recs: list[dict[str, str]] = []
        for block in out.split("== ")[1:]:
            head, _, body = block.partition("\n")
            rec = {"_name": head.rsplit("/", 1)[-1]}
            for line in body.splitlines():
                k, sep, v = line.partition("=")
                if sep:
                    rec[k] = v
            recs.append(rec)
        return recs

    def records_of(self, login: str, count: int | None = None) -> list[dict[str, str]] | None:
        """The login's ended records (None until there are ``count`` of them)."""
        found = [r for r in self.records() if r.get("PEERNAME") == login]
        return None if count is not None and len(found) != count else found

    def scrape_when(self, login: str, key: str, want: float) -> Samples | None:
        s = self.scrape()
        return s if self.user(s, login)[key] == want else None

    def up_record(self, iface: str) -> dict[str, str]:
        rec = {}
        for line in self.g.sh(f"cat {STATE}/{iface}").splitlines():
            k, _, v = line.partition("=")
            rec[k] = v
        return rec

    def log(self, msg: str) -> None:
        sys.stderr.write(
            f"\nvmlab logins {self.g.release}: {msg} [{time.monotonic() - self.t0:.0f} s]\n"
        )


def assert_totals(lab: Lab, s: Samples, login: str) -> None:
    got = lab.user(s, login)
    want = lab.expected(login)
    assert {k: got[k] for k in COUNTERS} == {k: float(v) for k, v in want.items()}, (
        login,
        got,
        want,
        lab.banked,
        lab.seen,
    )


def assert_pppd_left_out_little(final: Counts, rec: dict[str, str]) -> None:
    """pppd's counts are the interface's minus what it counted before pppd's baseline
    (and any IPv6 chatter after the last reading of ``final``): a little, never more."""
    for key, env in (("rx_bytes", "BYTES_RCVD"), ("tx_bytes", "BYTES_SENT")):
        assert -PRE_BASELINE_MAX < final[key] - int(rec[env]) < PRE_BASELINE_MAX, (key, final, rec)


@pytest.fixture(scope="module", params=LOGINS_RELEASES)
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    release = str(request.param)
    reason = vmlab_skip_reason(release)
    if reason:
        pytest.skip(reason)
    log_dir = None
    if os.environ.get("VMLAB_LOG_DIR"):
        log_dir = Path(os.environ["VMLAB_LOG_DIR"]) / f"logins-{release}"
        log_dir.mkdir(parents=True, exist_ok=True)
    with Guest(clients=3, release=release, log_dir=log_dir) as g:
        lab = Lab(g)
        lab.log(f"booted in {g.boot_seconds} s")
        secrets = "".join(f'"{u}"\t*\t"{p}"\t*\\n' for u, p in LOGINS.values() if u != "nycmesh")
        g.sh(
            f"install -m 755 {HOOK.format('up')} /etc/ppp/ip-up.d/ && "
            f"install -m 755 {HOOK.format('down')} /etc/ppp/ip-down.d/ && "
            f"printf '{secrets}' >> /etc/ppp/chap-secrets"
        )
        # Every collector (users and the page are on by default); the strongSwan
        # snapshot every second so the page's IKE columns follow soon; nycmesh required.
        g.start_exporter(
            extra=[
                "--collector.strongswan.refresh-interval",
                "1",
                "--collector.users.required",
                "nycmesh,peer-*",
            ]
        )
        g.wait_exporter(300)  # imports over 9p under TCG: 2 min on a busy host
        lab.t0 = time.monotonic()
        yield lab
        if request.session.testsfailed:
            sys.stderr.write(f"\n--- exporter log (tail) ---\n{g.exporter_log()[-4000:]}\n")
            sys.stderr.write(f"--- server pppd.log ---\n{g.log('server/pppd.log')[-3000:]}\n")


def test_three_logins_live_counts_are_the_interfaces(lab: Lab) -> None:
    """Three clients, three logins, known traffic: while connected, each login's
    counters are exactly its ppp interface's counters; one login and session each."""
    lab.connect(1, 2, 3)
    lab.log(f"three connected: {lab.iface}")
    lab.g.traffic(1, count=20, size=1000, mode="ping")
    lab.g.traffic(2, count=15, size=600, mode="udp")
    lab.g.traffic(3, count=10, size=1200, mode="ping")
    for n in (1, 2, 3):
        lab.settle(n)
    s = lab.observe()
    for n in (1, 2, 3):
        login = LOGINS[n][0]
        got = lab.user(s, login)
        assert got["sessions"] == 1 and got["logins"] == 1 and got["logouts"] == 0, (login, got)
        assert_totals(lab, s, login)
        assert got["last_login"] and not got["last_logout"], got
        assert 0 < (got["connected"] or 0) <= time.monotonic() - lab.t0 + 5, got
    assert value(s, "l2tp_ipsec_users_tracked") == 3
    assert value(s, "l2tp_ipsec_sessions_without_login") == 0
    assert value(s, "l2tp_ipsec_required_login_up", user="nycmesh") == 1
    # The IP bytes the client sent are in there (udp: one way, from the client).
    assert lab.seen[2]["rx_bytes"] >= 15 * 628


def test_logout_and_login_again_between_two_scrapes(lab: Lab) -> None:
    """nycmesh hangs up (its first session, read by the exporter after its traffic),
    logs in again, sends, hangs up again - no scrape during the second session. Its
    totals: the first session banked from its last reading (pppd's count is a little
    less), the second whole from its ended record (pppd's count), exactly; two logins,
    two logouts. Each is within a few hundred bytes of its interface's final count."""
    g = lab.g
    first = lab.settle(1)
    seen_first = lab.seen.pop(1)
    lab.iface.pop(1)
    g.disconnect(1)
    t_first_end = time.time()
    lab.connect(1)
    g.traffic(1, count=12, size=900, mode="udp")
    g.traffic(1, count=5, size=300, mode="ping")
    second = lab.settle(1)
    lab.iface.pop(1)
    g.disconnect(1)
    lab.log("nycmesh: hung up, logged in again, hung up")
    recs = eventually(lambda: lab.records_of("nycmesh", 2), 90, "nycmesh's two ended records")
    rec1, rec2 = sorted(recs, key=lambda r: float(r["DOWN_AT"]))
    assert abs(float(rec1["DOWN_AT"]) - t_first_end) < 60, rec1  # the guest's clock is ours
    assert_pppd_left_out_little(first, rec1)
    assert_pppd_left_out_little(second, rec2)
    lab.bank("nycmesh", rec1, seen_first)
    lab.bank("nycmesh", rec2, None)  # never read live: banked whole from its record
    s = lab.observe()
    got = lab.user(s, "nycmesh")
    assert_totals(lab, s, "nycmesh")
    assert got["sessions"] == 0 and got["logins"] == 2 and got["logouts"] == 2, got
    connect_time = sum(float(r["CONNECT_TIME"]) for r in recs)
    assert connect_time - 3 <= (got["connected"] or 0) <= time.monotonic() - lab.t0 + 5, got
    assert got["last_logout"] and abs(got["last_logout"] - float(rec2["DOWN_AT"])) < 5, got
    assert value(s, "l2tp_ipsec_required_login_up", user="nycmesh") == 0
    for login in ("alice", "bob"):  # untouched
        assert_totals(lab, s, login)
    lab.log(f"nycmesh: {got}")


def test_sessions_json_lists_the_connected_clients(lab: Lab) -> None:
    """/sessions?format=json: one row per connected client with its login, IKE
    connection and identity, public and inner address, interface and bytes; the ended
    sessions with their login, address and bytes; the required login, down."""
    st = lab.g.status()["clients"]

    def joined() -> dict[str, Any] | None:
        doc: dict[str, Any] = lab.observe(lab.sessions_json)
        live = doc["live"]
        return doc if len(live) == 2 and all(r["ike_connection"] for r in live) else None

    doc = eventually(joined, 60, "two live rows with their IKE connection")
    by_iface = {r["interface"]: r for r in doc["live"]}
    assert set(by_iface) == {lab.iface[2], lab.iface[3]}, doc
    for n in (2, 3):
        row, client = by_iface[lab.iface[n]], st[str(n)]
        assert row["login"] == LOGINS[n][0], row
        assert row["ike_connection"] == CONN, row
        assert row["ike_identity"] == client["ip"], row  # IKEv1 PSK: its address
        assert row["public_address"] == client["ip"], row
        assert row["inner_address"] == client["ppp"]["local"], row
        assert row["receive_bytes"] == lab.seen[n]["rx_bytes"], (row, lab.seen[n])
        assert row["transmit_bytes"] == lab.seen[n]["tx_bytes"], (row, lab.seen[n])
        assert row["connected_since"], row
    ended = [r for r in doc["ended"] if r["login"] == "nycmesh"]
    assert len(ended) == 2 and all(r["how"] == "hook" for r in ended), doc["ended"]
    # Newest first; the first session was joined while live, the second never seen.
    assert ended[1]["public_address"] == st["1"]["ip"], ended
    assert ended[0]["public_address"] in (st["1"]["ip"], ""), ended
    assert sum(r["receive_bytes"] for r in ended) == lab.banked["nycmesh"]["rx_bytes"]
    assert doc["required"] == [{"login": "nycmesh", "up": False}], doc["required"]


class Rows(HTMLParser):
    """The text of each cell of each <tr> in the table with id ``table_id``."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.inside = False
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and dict(attrs).get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif tag == "td" and self.cell is not None and self.rows:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table(dom: str, table_id: str) -> list[list[str]]:
    p = Rows(table_id)
    p.feed(dom)
    return [r for r in p.rows if r]  # the header row has <th> only


def test_sessions_page_in_chromium(lab: Lab, tmp_path: Path) -> None:
    """The HTML page in Debian's chromium, headless, through the forwarded port: a
    screenshot, and the rendered DOM has one row per connected client (login, public
    and inner address, interface) and nycmesh's two ended sessions."""
    from tests import browser

    if reason := browser.missing():
        pytest.skip(reason)
    url = f"http://127.0.0.1:{lab.g.exporter_port}/sessions"
    st = lab.g.status()["clients"]
    dom = browser.dump_dom(url, timeout=90)
    live = table(dom, "live")
    assert len(live) == 2, live
    for n in (2, 3):
        (row,) = [r for r in live if lab.iface[n] in r]
        assert row[0] == LOGINS[n][0] and row[1] == CONN, row
        assert st[str(n)]["ip"] in row and st[str(n)]["ppp"]["local"] in row, row
    ended = table(dom, "ended")
    assert [r[0] for r in ended].count("nycmesh") == 2, ended
    assert re.search(r"Who is on: 2 connected", dom), dom[:2000]
    shot = browser.screenshot(url, tmp_path / "sessions.png", size=(1500, 700), timeout=90)
    assert shot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])
    lab.log(f"chromium: {len(live)} live rows, {len(ended)} ended; screenshot {shot}")


def test_users_dashboard_on_a_real_prometheus(lab: Lab, tmp_path: Path) -> None:
    """Every query of dashboards/users.json against Debian's prometheus scraping the
    guest's exporter every second: each returns data (two logins connected, one logged
    out, one required); and the project's rules loaded: the required login's alert fires
    for nycmesh (logged out), none for alice."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    from exporter.demo.lab.prometheus import PrometheusServer
    from tests.dashboard_queries import dashboard_queries
    from tests.integration.test_dashboards_live import generate_rules

    # The project's rules, the required-login alert with a 2 s `for`: nycmesh, required,
    # has been logged out since the second test, so it must fire live.
    rules = generate_rules(tmp_path / "rules", {"required_login_down": {"for": "2s"}})
    config = {
        "rule_files": rules,
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "l2tp-ipsec",
                # The emulated guest answers slowly under load: the longest timeout a
                # 1 s interval allows.
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [f"127.0.0.1:{lab.g.exporter_port}"]}],
            }
        ],
    }
    with PrometheusServer(json.dumps(config)) as prom:
        prom.wait_for('l2tp_ipsec_user_sessions{user="alice"} == 1', 60)
        # Traffic while Prometheus watches, so the rates and increases move.
        lab.g.traffic(2, count=10, size=500, mode="udp")
        lab.g.traffic(3, count=5, size=500, mode="ping")
        prom.wait_for('increase(l2tp_ipsec_user_receive_bytes_total{user="alice"}[1m]) > 0', 60)
        time.sleep(3)
        missing = []
        queries = dashboard_queries("users.json")
        for where, expr in queries:
            if not prom.query(expr):
                missing.append(f"{where}: {expr}")
        up = prom.query('up{job="l2tp-ipsec"}')
        firing = prom.wait_for(
            'ALERTS{alertname="L2tpIpsecRequiredLoginDown",alertstate="firing",user="nycmesh"}',
            60,
        )
        # alice is connected and not required: no alert names her.
        assert not prom.query('ALERTS{alertname="L2tpIpsecRequiredLoginDown",user="alice"}')
    assert firing, "L2tpIpsecRequiredLoginDown for nycmesh did not fire"
    assert not missing, "queries without data:\n" + "\n".join(missing)
    lab.log(f"users dashboard: {len(queries)} queries with data; up={up}")


def test_killed_client_is_ended_by_the_servers_lcp_echoes(lab: Lab) -> None:
    """alice's device vanishes (SIGKILL of its charon, xl2tpd and pppd, no goodbye).
    The server's pppd is alive: after 3 unanswered LCP echoes (5 s apart) it runs
    ip-down with the final counts, so the session ends as a logout with an ended
    record (how = hook); alice keeps the larger of pppd's counts and the last read."""
    g = lab.g
    lab.observe()
    t0 = time.monotonic()
    g.kill(2)
    (rec,) = eventually(
        lambda: lab.records_of("alice", 1), 120, "alice's ended record (ip-down)", step=2
    )
    waited = time.monotonic() - t0
    assert_pppd_left_out_little(lab.seen[2], rec)
    banked = lab.ended(2, rec)
    s = eventually(lambda: lab.scrape_when("alice", "logouts", 1), 60, "alice's logout")
    got = lab.user(s, "alice")
    assert got["sessions"] == 0 and got["logins"] == 1, got
    assert_totals(lab, s, "alice")
    (ended,) = [r for r in lab.sessions_json()["ended"] if r["login"] == "alice"]
    assert ended["how"] == "hook" and ended["receive_bytes"] == banked["rx_bytes"], ended
    lab.log(f"alice killed: ip-down record {waited:.0f} s later; counted {got}")


def test_server_pppd_killed_keeps_the_last_seen_counts(lab: Lab) -> None:
    """The only end without ip-down: the server's pppd of bob's session is SIGKILLed.
    Its interface goes at once, no ended record is written; after the ledger's grace
    (30 s) the exporter banks the counts it last read (how = vanished), a logout."""
    g = lab.g
    iface = lab.iface[3]
    pid = lab.up_record(iface)["PPPD_PID"]
    lab.observe()
    g.sh(f"kill -9 {pid}")
    t0 = time.monotonic()
    banked = lab.ended(3, None)

    def vanished() -> dict[str, Any] | None:
        rows = [r for r in lab.sessions_json()["ended"] if r["login"] == "bob"]
        return rows[0] if rows else None

    ended = eventually(vanished, 120, "bob's session in the history", step=2)
    waited = time.monotonic() - t0
    assert ended["how"] == "vanished" and ended["interface"] == iface, ended
    assert ended["receive_bytes"] == banked["rx_bytes"], (ended, banked)
    s = lab.scrape()
    got = lab.user(s, "bob")
    assert got["sessions"] == 0 and got["logins"] == 1 and got["logouts"] == 1, got
    assert_totals(lab, s, "bob")
    assert not lab.records_of("bob"), "no ip-down ran, so no ended record"
    lab.log(f"bob's pppd killed: vanished after {waited:.0f} s, counted {got}")


# --- two devices behind one NAT, same login (VMLAB_MATRIX=full only) ---------------------

NAT_WAN = "192.168.77.20"


@pytest.fixture(scope="module")
def nat_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A second guest, clients 2 and 3 behind the NAT router: only with
    VMLAB_MATRIX=full (one more boot; test_nat.py is already the slowest module)."""
    if os.environ.get("VMLAB_MATRIX") != "full":
        pytest.skip("two logins behind one NAT: VMLAB_MATRIX=full only (one more guest)")
    release = LOGINS_RELEASES[-1]
    reason = vmlab_skip_reason(release)
    if reason:
        pytest.skip(reason)
    with Guest(clients=3, natted=2, release=release) as g:
        lab = Lab(g, logins=dict.fromkeys((1, 2, 3), LOGINS[1]))  # all nycmesh
        lab.log(f"NAT guest booted in {g.boot_seconds} s")
        g.sh(
            f"install -m 755 {HOOK.format('up')} /etc/ppp/ip-up.d/ && "
            f"install -m 755 {HOOK.format('down')} /etc/ppp/ip-down.d/"
        )
        g.start_exporter(extra=["--collector.strongswan.refresh-interval", "1"])
        g.wait_exporter(300)
        yield lab
        if request.session.testsfailed:
            sys.stderr.write(f"\n--- NAT guest exporter log ---\n{g.exporter_log()[-2000:]}\n")


def test_two_devices_behind_one_nat_with_the_same_login(nat_lab: Lab) -> None:
    """Clients 2 and 3 behind one NAT address, both logging in as nycmesh (NYC Mesh's
    shared login). They never both work (test_nat.py says why), but every session
    either of them had is counted: nycmesh's totals are the sum of its sessions (the
    history lists each, from the NAT's address), the first device's with its final
    counts as seen live, each ended one at least as pppd counted it."""
    lab, g = nat_lab, nat_lab.g
    lab.connect(2)
    g.traffic(2, count=10, size=700, mode="udp")
    first = lab.settle(2)
    assert_totals(lab, lab.observe(), "nycmesh")  # read live, exactly
    with contextlib.suppress(GuestError):
        g.connect(3, timeout=60)
    time.sleep(20)  # pppd's LCP echoes (5 s x 3) end whichever lost its downstream
    for n in (2, 3):  # whichever still works sends, and is read live once more
        with contextlib.suppress(GuestError, AssertionError):
            lab.iface.clear()
            if g.traffic(n, count=5, size=400, mode="udp")["rc"] == 0:
                lab.iface[n] = lab.server_iface(n)
                lab.settle(n)
                lab.observe()
    lab.iface.clear()
    for n in (2, 3):
        with contextlib.suppress(GuestError):
            g.disconnect(n)
    eventually(
        lambda: (
            not g.status()["server"]["ppp"] and lab.user(lab.scrape(), "nycmesh")["sessions"] == 0
        ),
        150,
        "every session from the NAT ended",
        step=3,
    )
    doc = eventually(lambda: (d := lab.sessions_json())["ended"] and d, 60, "the history", step=2)
    rows = [r for r in doc["ended"] if r["login"] == "nycmesh"]
    s = lab.scrape()
    got = lab.user(s, "nycmesh")
    lab.log(f"NAT: {len(rows)} sessions of nycmesh: {rows}; totals {got}")
    # A session never seen live (it came and went between two readings) has no join.
    assert any(r["public_address"] == NAT_WAN for r in rows), rows
    assert all(r["public_address"] in (NAT_WAN, "") for r in rows), rows
    assert got["logins"] == got["logouts"] == len(rows), (got, rows)
    assert got["rx_bytes"] == sum(r["receive_bytes"] for r in rows), (got, rows)
    assert got["tx_bytes"] == sum(r["transmit_bytes"] for r in rows), (got, rows)
    assert (got["rx_bytes"] or 0) >= first["rx_bytes"] >= 10 * 728
    recs = {r["_name"]: r for r in lab.records_of("nycmesh") or []}
    for row in rows:
        if row["how"] != "hook":
            continue
        mine = [r for r in recs.values() if r.get("IFNAME") == row["interface"]]
        assert any(
            0 <= row["receive_bytes"] - int(r["BYTES_RCVD"]) < PRE_BASELINE_MAX for r in mine
        ), (row, mine)
