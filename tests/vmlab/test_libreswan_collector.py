"""The Libreswan collector on genuine Libreswan (Debian 12's 4.10, Debian 13's 5.2) with
xl2tpd and pppd in the guest, configured as hwdsl2/setup-ipsec-vpn configures it, and
strongSwan clients connecting the way Windows and macOS do (IKEv1 PSK, no XAuth, L2TP,
PPP MS-CHAPv2).

One guest per release (module scope); the tests run in order on it and each says what it
proves: detection, connect, the per-client join, traffic against `ipsec trafficstatus`,
a rekey, a polite disconnect, a client killed and found by DPD, pluto restarted under
the exporter. Every number is compared with what pluto itself prints at that moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import LIBRESWAN_RELEASES, vmlab_skip_reason
from .guest import Guest
from .scraped import eventually, samples, value

pytestmark = pytest.mark.vmlab

RELEASES = {"bookworm": "4.10", "trixie": "5.2"}
CONN = "l2tp-psk"
CLIENT_IPS = {1: "192.168.77.11", 2: "192.168.77.12"}
HOOK = "/mnt/src/contrib/ppp/ip-{}.d/l2tp-ipsec-exporter"


def traffic_lines(g: Guest) -> list[dict[str, Any]]:
    """`ipsec trafficstatus` as pluto prints it (4.x with its `006 ` prefix)."""
    out = []
    for line in g.sh("ipsec trafficstatus").splitlines():
        m = re.search(r'#(\d+): "([^"]+)"\[(\d+)\] (\S+?),.*inBytes=(\d+), outBytes=(\d+)', line)
        if m:
            out.append(
                {
                    "serial": int(m[1]),
                    "conn": m[2],
                    "instance": int(m[3]),
                    "peer": m[4],
                    "in": int(m[5]),
                    "out": int(m[6]),
                }
            )
    return out


class Lab:
    def __init__(self, g: Guest, version: str) -> None:
        self.g = g
        self.version = version
        #: The highest value each counter series was seen at: counters never go back.
        self.high: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def scrape(self) -> str:
        text = self.g.scrape()
        for fam in text_string_to_metric_families(text):
            if fam.type != "counter" or not fam.name.startswith("libreswan_"):
                continue
            for s in fam.samples:
                if not s.name.endswith("_total"):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                assert s.value >= self.high.get(key, 0), f"{key} went back to {s.value}"
                self.high[key] = s.value
        return text


@pytest.fixture(scope="module", params=LIBRESWAN_RELEASES)
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    release = str(request.param)
    reason = vmlab_skip_reason(release)
    if reason:
        pytest.skip(reason)
    log_dir = None
    if os.environ.get("VMLAB_LOG_DIR"):
        log_dir = Path(os.environ["VMLAB_LOG_DIR"]) / f"{release}-libreswan-collector"
        log_dir.mkdir(parents=True, exist_ok=True)
    # Short DPD so a killed client is found in seconds (as the other guest tests).
    g = Guest(clients=2, release=release, flavour="libreswan", log_dir=log_dir)
    with g:
        sys.stderr.write(f"\nvmlab {release}/libreswan: booted in {g.boot_seconds} s\n")
        # The shipped pppd hook, so the join knows each interface's PPP login.
        g.sh(
            f"install -m 755 {HOOK.format('up')} /etc/ppp/ip-up.d/ && "
            f"install -m 755 {HOOK.format('down')} /etc/ppp/ip-down.d/"
        )
        # No collector switch: auto must find pluto's control socket and leave charon be.
        # A longer command deadline than the default 5 s: the emulated guest shares two
        # host cores with the test run.
        g.start_exporter(extra=["--collector.libreswan.timeout", "20s"])
        # Python's start-up in the emulated guest takes 10-20 s, more on a busy host.
        g.wait_exporter(timeout=240)
        yield Lab(g, RELEASES[release])
        if request.session.testsfailed:
            with contextlib.suppress(Exception):
                sys.stderr.write(f"--- exporter log ---\n{g.exporter_log()[-4000:]}\n")


def test_detected_and_configured_connections(lab: Lab) -> None:
    text = lab.scrape()
    assert value(text, "libreswan_up") == 1, text
    assert samples(text, "libreswan_info") == [({"version": lab.version}, 1.0)]
    # A Libreswan server: the strongSwan collector is off, so no strongswan_up 0 alert.
    assert samples(text, "strongswan_up") == []
    configured = {
        lab_["conn"]: lab_ for lab_, _ in samples(text, "libreswan_connection_configured")
    }
    assert set(configured) == {"l2tp-psk", "xauth-psk"}, configured
    assert configured["l2tp-psk"]["kind"] == "template"
    assert configured["l2tp-psk"]["version"] == "ikev1"
    assert value(text, "libreswan_connection_established", conn=CONN) == 0
    assert value(text, "libreswan_connection_established", conn="xauth-psk") == 0
    # Zero series for every configured connection: the first drop is an increase.
    assert samples(text, "libreswan_ipsec_sa_events_total")


def test_connect_two_clients(lab: Lab) -> None:
    g = lab.g
    for n in CLIENT_IPS:
        g.connect(n)
    text = lab.scrape()
    assert value(text, "libreswan_connection_established", conn=CONN) == 2
    ipsec_states = {lab_["state"]: v for lab_, v in samples(text, "libreswan_ipsec_sas") if v}
    assert ipsec_states == {"STATE_QUICK_R2": 2}, ipsec_states
    ike_states = {lab_["state"]: v for lab_, v in samples(text, "libreswan_ike_sas") if v}
    assert ike_states == {"STATE_MAIN_R3": 2}, ike_states
    users = {lab_["user"]: v for lab_, v in samples(text, "libreswan_user_sessions")}
    # PSK clients without XAuth: pluto knows them by their IKE identity, their address.
    assert users == {ip: 1 for ip in CLIENT_IPS.values()}, users
    assert value(text, "libreswan_ipsec_sa_events_total", conn=CONN, event="up") == 2
    negotiated = value(
        text, "libreswan_ike_sa_negotiations_total", version="ikev1", outcome="established"
    )
    assert negotiated >= 2


def test_per_client_join_names_the_connection(lab: Lab) -> None:
    text = lab.scrape()
    sessions = {
        lab_["public_address"]: lab_ for lab_, _ in samples(text, "l2tp_ipsec_session_info")
    }
    assert set(sessions) == set(CLIENT_IPS.values()), sessions
    for ip, s in sessions.items():
        assert s["conn"] == CONN, s
        assert s["ppp_user"] == "nycmesh", s
        assert s["ike_user"] == ip, s
        assert s["user"] == "nycmesh", s
        assert s["ike_uniqueid"].isdigit(), s


def test_traffic_matches_trafficstatus(lab: Lab) -> None:
    g = lab.g
    before = lab.scrape()
    in_before = value(before, "libreswan_connection_bytes_total", conn=CONN, direction="in")
    g.traffic(1, count=20, size=1000)

    # Nothing moves between these two reads but LCP echoes every few seconds; read
    # pluto's own numbers and the exporter's back to back until they agree.
    def agree() -> bool:
        lines = traffic_lines(g)
        text = lab.scrape()
        got_in = value(text, "libreswan_connection_bytes_total", conn=CONN, direction="in")
        got_out = value(text, "libreswan_connection_bytes_total", conn=CONN, direction="out")
        return (got_in, got_out) == (sum(x["in"] for x in lines), sum(x["out"] for x in lines))

    eventually(agree, 30, "libreswan_connection_bytes_total equal to ipsec trafficstatus")
    after = lab.scrape()
    in_after = value(after, "libreswan_connection_bytes_total", conn=CONN, direction="in")
    # 20 pings of 1028 IP bytes, inside PPP, L2TP, UDP and ESP.
    assert in_after - in_before >= 20 * 1028, (in_before, in_after)
    per_user = value(
        after, "libreswan_user_bytes_total", conn=CONN, user=CLIENT_IPS[1], direction="in"
    )
    assert per_user >= 20 * 1028


def test_overview_dashboard_and_rules_on_a_real_prometheus(lab: Lab, tmp_path: Path) -> None:
    """Debian's prometheus on the host scrapes the guest's exporter every second (through
    the port the lab forwards) with the project's rules loaded: every query of
    dashboards/overview.json that is not strongSwan-only returns data; every rule
    evaluates without error; LibreswanRequiredConnectionDown fires for `xauth-psk`, made
    a required connection here and with no client, not for `l2tp-psk` (required too, one
    client connected at least); no Strongswan* alert fires. Run after the traffic test,
    with clients 1 and 2 connected; run alone (`-k`), it connects client 1 itself."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    from exporter.demo.lab.prometheus import PrometheusServer
    from tests.dashboard_queries import dashboard_queries
    from tests.integration.test_dashboards_live import generate_rules
    from tests.test_dashboards import metric_names

    g = lab.g
    if value(lab.scrape(), "libreswan_connection_established", conn=CONN) == 0:
        g.connect(1)  # run alone: the module's earlier tests did not connect anyone
        eventually(
            lambda: value(lab.scrape(), "libreswan_connection_established", conn=CONN) >= 1,
            30,
            "client 1 connected",
        )
    rules = generate_rules(
        tmp_path / "rules",
        {
            "selectors": {"required_connections": f"xauth-psk|{CONN}"},
            "required_connection_down": {"for": "2s"},
        },
    )
    config = {
        "rule_files": rules,
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "l2tp-ipsec",
                # A Libreswan round in the emulated guest (ipsec commands on one TCG
                # vCPU) can take over a second: 2 s apart, 2 s to answer.
                "scrape_interval": "2s",
                "scrape_timeout": "2s",
                "static_configs": [{"targets": [f"127.0.0.1:{g.exporter_port}"]}],
            }
        ],
    }
    # A query that reads strongswan_* and no libreswan_* is strongSwan-only (charon's
    # uptime, pools, certificates, threads, counters plugin, event stream): nothing to
    # show on a Libreswan server. Every other one reads libreswan_* or only
    # daemon-neutral families (up, kernel, the exporter's own) and must have data.
    queries = [
        (where, expr)
        for where, expr in dashboard_queries("overview.json")
        if not (
            any(n.startswith("strongswan_") for n in metric_names(expr))
            and not any(n.startswith("libreswan_") for n in metric_names(expr))
        )
    ]
    assert len(queries) >= 25, queries
    t0 = time.monotonic()
    with PrometheusServer(json.dumps(config)) as prom:
        prom.wait_for('libreswan_up{job="l2tp-ipsec"} == 1', 60)
        # Traffic while Prometheus watches, so the rates move.
        g.traffic(1, count=10, size=500)
        prom.wait_for(f'increase(libreswan_connection_bytes_total{{conn="{CONN}"}}[1m]) > 0', 60)
        firing = prom.wait_for(
            'ALERTS{alertname="LibreswanRequiredConnectionDown",alertstate="firing",'
            'conn="xauth-psk"}',
            60,
        )
        missing = [f"{where}: {expr}" for where, expr in queries if not prom.query(expr)]

        def evaluated() -> list[dict[str, Any]] | None:
            found = [r for grp in prom.api("rules")["groups"] for r in grp["rules"]]
            return found if all(r["health"] != "unknown" for r in found) else None

        evaluated_rules = eventually(evaluated, 30, "every rule evaluated once")
        unhealthy = [
            f"{r['name']}: {r['health']} {r.get('lastError', '')}"
            for r in evaluated_rules
            if r["health"] != "ok"
        ]
        # Every alert that fired at any time while Prometheus ran, and the share of
        # scrapes that answered.
        fired = prom.query('max_over_time(ALERTS{alertstate="firing"}[10m])')
        scraped = prom.query('avg_over_time(up{job="l2tp-ipsec"}[10m])')
    names = {a["metric"]["alertname"] for a in fired}
    assert firing, "LibreswanRequiredConnectionDown for xauth-psk did not fire"
    assert not [a["metric"] for a in fired if a["metric"].get("conn") == CONN], fired
    assert not [n for n in names if n.startswith("Strongswan")], names
    assert not missing, "queries without data:\n" + "\n".join(missing)
    assert len(evaluated_rules) > 30 and not unhealthy, unhealthy
    sys.stderr.write(
        f"\noverview on prometheus: {len(queries)} queries with data, "
        f"{len(evaluated_rules)} rules ok, fired {sorted(names)}, "
        f"up {[x['value'][1] for x in scraped]}, "
        f"{time.monotonic() - t0:.0f} s\n"
    )


def _client_vici(n: int) -> str:
    return f"unix:///tmp/vmlab/c{n}/run/charon.vici"


def test_rekey_is_counted_as_a_rekey_and_keeps_the_bytes(lab: Lab) -> None:
    g = lab.g
    before = lab.scrape()
    total_in = value(before, "libreswan_connection_bytes_total", conn=CONN, direction="in")
    old = {x["serial"] for x in traffic_lines(g) if x["peer"] == CLIENT_IPS[1]}
    # The client rekeys its IPsec SA (Quick Mode under the same ISAKMP SA) and then
    # deletes the old one, as Windows does (strongSwan itself would keep a rekeyed IKEv1
    # CHILD SA until it expires); pluto removes the old SA on the peer's Delete.
    # (`whack --rekey-child` is IKEv2 only: on an IKEv1 instance 5.2's pluto dies.)
    g.sh(f"swanctl --rekey --child l2tp --uri {_client_vici(1)}", timeout=90)

    def rekeyed_child() -> str | None:
        listing = g.sh(f"swanctl --list-sas --uri {_client_vici(1)}")
        found = re.search(r"l2tp: #(\d+), reqid \d+, REKEYED", listing)
        return found.group(1) if found else None

    old_child = eventually(rekeyed_child, 30, "client 1's old CHILD SA marked REKEYED")
    g.sh(f"swanctl --terminate --child-id {old_child} --uri {_client_vici(1)}", timeout=60)

    def rekeyed() -> bool:
        now = {x["serial"] for x in traffic_lines(g) if x["peer"] == CLIENT_IPS[1]}
        return bool(now) and not (now & old)

    eventually(rekeyed, 30, "a new IPsec SA serial for client 1 and the old one gone")
    text = lab.scrape()
    assert value(text, "libreswan_ipsec_sa_events_total", conn=CONN, event="rekey") == 1
    assert value(text, "libreswan_ipsec_sa_events_total", conn=CONN, event="down") == 0
    # The old SA's bytes stay in the total (lab.scrape checks it never goes back).
    assert value(text, "libreswan_connection_bytes_total", conn=CONN, direction="in") >= total_in


def test_polite_disconnect_is_a_drop(lab: Lab) -> None:
    g = lab.g
    g.disconnect(2)
    eventually(
        lambda: not [x for x in traffic_lines(g) if x["peer"] == CLIENT_IPS[2]],
        30,
        "client 2's IPsec SA gone from trafficstatus",
    )
    text = lab.scrape()
    assert value(text, "libreswan_ipsec_sa_events_total", conn=CONN, event="down") == 1
    assert value(text, "libreswan_connection_established", conn=CONN) == 1


def test_a_client_that_comes_and_goes_between_two_scrapes_is_counted(lab: Lab) -> None:
    """No scrape while client 2 is connected: the kernel's XFRM notifications make the
    exporter ask pluto a round when the SA is installed, so the ledger sees it, and
    again when it is deleted."""
    g = lab.g
    before = lab.scrape()
    ups = value(before, "libreswan_ipsec_sa_events_total", conn=CONN, event="up")
    downs = value(before, "libreswan_ipsec_sa_events_total", conn=CONN, event="down")
    g.connect(2)
    # Ten seconds up: on a real server a round takes milliseconds; in the emulated guest,
    # while a client's charon and pluto do their Diffie-Hellman on the one emulated CPU,
    # a single ipsec command took up to 11 s.
    time.sleep(10)
    g.disconnect(2)
    eventually(
        lambda: not [x for x in traffic_lines(g) if x["peer"] == CLIENT_IPS[2]],
        30,
        "client 2's IPsec SA gone again",
    )
    time.sleep(2)  # the round the delete asked for
    text = lab.scrape()
    assert value(text, "libreswan_ipsec_sa_events_total", conn=CONN, event="up") == ups + 1
    assert value(text, "libreswan_ipsec_sa_events_total", conn=CONN, event="down") == downs + 1
    assert value(text, "libreswan_xfrm_events_subscribed") == 1


def test_killed_client_is_found_by_dpd_and_counted_once(lab: Lab) -> None:
    g = lab.g
    g.kill(1)
    # DPD: 3 s delay, 9 s timeout in the guest.
    eventually(lambda: not traffic_lines(g), 60, "client 1's IPsec SA cleared by DPD")
    text = lab.scrape()
    assert value(text, "libreswan_ipsec_sa_events_total", conn=CONN, event="down") == 3
    assert value(text, "libreswan_connection_established", conn=CONN) == 0
    # Scraped again: still counted once.
    assert value(lab.scrape(), "libreswan_ipsec_sa_events_total", conn=CONN, event="down") == 3


ROUND_AS_NOBODY = (
    "cd /tmp && setpriv --reuid=65534 --regid=65534 --clear-groups "
    "env PYTHONPATH=/mnt/src:/mnt/pydeps python3 -c '"
    "import asyncio, sys\n"
    "from exporter.libreswan.source import PlutoSource\n"
    "from exporter.libreswan.options import LibreswanOptions\n"
    "try:\n"
    "    s = asyncio.run(PlutoSource(LibreswanOptions())())\n"
    '    print("ok", s.version, len(s.connections))\n'
    "except Exception as e:\n"
    '    print("error", e)\n'
    "'"
)


def test_least_privilege_is_access_to_the_control_socket(lab: Lab) -> None:
    """pluto's control socket is root's alone (Debian's build: mode 0700, no pluto group):
    an unprivileged exporter gets one clear error. Handing the socket to the exporter's
    group (what contrib/systemd's ipsec.service drop-in does after pluto starts) is all
    it needs: no root, no capability."""
    g = lab.g
    mode = g.sh("stat -c '%a %U' /run/pluto/pluto.ctl").split()
    assert mode[1] == "root" and mode[0].endswith("00"), mode
    denied = g.sh(ROUND_AS_NOBODY).strip()
    assert denied.startswith("error"), denied
    assert "no permission to use pluto's control socket /run/pluto/pluto.ctl" in denied, denied
    g.sh("chgrp 65534 /run/pluto/pluto.ctl && chmod 770 /run/pluto/pluto.ctl")
    try:
        allowed = g.sh(ROUND_AS_NOBODY).strip()
        assert allowed == f"ok {lab.version} " + allowed.split()[-1], allowed
        assert int(allowed.split()[-1]) >= 2, allowed  # l2tp-psk and xauth-psk at least
    finally:
        g.sh("chgrp root /run/pluto/pluto.ctl && chmod 700 /run/pluto/pluto.ctl")


def test_pluto_restarted_under_the_exporter(lab: Lab) -> None:
    g = lab.g
    g.connect(2)
    eventually(
        lambda: value(lab.scrape(), "libreswan_connection_established", conn=CONN) == 1,
        30,
        "client 2 back",
    )

    def failure_lines() -> list[str]:
        return [
            x
            for x in g.exporter_log().splitlines()
            if "collector failed" in x and "collector=libreswan" in x
        ]

    before = len(failure_lines())
    pid = g.sh("cat /run/pluto/pluto.pid").strip()
    g.sh(f"kill -9 {pid}; rm -f /run/pluto/pluto.ctl /run/pluto/pluto.pid")

    def down() -> str | None:
        text = lab.scrape()
        return text if value(text, "libreswan_up") == 0 else None

    text = eventually(down, 20, "libreswan_up 0 while pluto is gone")
    assert samples(text, "libreswan_info") == []
    lab.scrape()
    lab.scrape()
    # One log line when pluto goes, naming what is wrong; not one per scrape.
    lines = failure_lines()[before:]
    assert len(lines) == 1, lines
    assert "pluto is not running" in lines[0], lines
    g.sh(
        "setsid /usr/libexec/ipsec/pluto --config /etc/ipsec.conf --nofork "
        ">/tmp/vmlab/server/pluto-restarted.out 2>&1 < /dev/null & "
        "for i in $(seq 100); do [ -S /run/pluto/pluto.ctl ] && break; sleep 0.2; done"
    )
    eventually(lambda: value(lab.scrape(), "libreswan_up") == 1, 60, "libreswan_up 1 again")
    # The client's SA died with pluto: counted as a drop once the exporter sees it gone.
    text = lab.scrape()
    assert value(text, "libreswan_ipsec_sa_events_total", conn=CONN, event="down") == 4
