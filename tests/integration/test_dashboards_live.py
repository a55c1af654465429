"""Every dashboard query and every rule on a real Prometheus scraping the real exporter.

The exporter watches a real charon lab (IKEv1 PSK+XAuth and IKEv2 clients, the never-up
site-to-site connection `site-b`, a certificate); /probe runs real IKE probes inside the
lab (one module against a silent address, so it fails); Debian's `prometheus` scrapes both
every second and loads the project's rules, generated with short windows and `for:`. Then:
every dashboard query parses and returns data (or is listed in EXPECTED_EMPTY with the
reason), every rule evaluates without error, and disconnecting most clients makes
StrongswanManyUsersDropped go pending and firing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.demo.lab.prometheus import PrometheusServer, free_loopback_port
from tests.conftest import REPO
from tests.probes.helpers import ProbeServer, probe_namespace
from tests.test_dashboards import all_queries, metric_names, substitute

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed"),
]

SERVER = "10.99.0.1"
SILENT = "10.99.0.250"  # on the lab subnet, nobody answers there
PROBE_MODULES = {
    "ike_v1": {"prober": "ike", "timeout": "3s", "ike": {"version": 1}},
    "ike_v2": {"prober": "ike", "timeout": "3s", "ike": {"version": 2}},
    "ike_silent": {"prober": "ike", "timeout": "1s", "ike": {"version": 2}},
}
#: Short windows and waits so alerts move within seconds (the rest: alerts/thresholds.yml).
LIVE_THRESHOLDS = {
    "required_connection_down": {"for": "3s"},
    "probe_failing": {"for": "3s"},
    "many_users_dropped": {
        "window": "1m", "lookback": "2m", "min_drops": 2, "ratio": 0.25, "for": "2s",
    },
}  # fmt: skip

KERNEL_PREFIXES = (
    "ppp_",
    "l2tp_tunnel",
    "l2tp_session",
    "l2tp_sessions",
    "xfrm_",
    "l2tp_ipsec_session",
    # The users collector's per-login families (issue 18) count PPP sessions: none in this
    # lab (no ppp); the Users dashboard has data in the guest (tests/vmlab).
    "l2tp_ipsec_user",
    "l2tp_ipsec_required_login",
    "l2tp_ipsec_login_records",
)
#: Queries that may rightly return nothing in this scenario, and why.
EXPECTED_EMPTY = {
    "kernel": "this machine's kernel has no L2TP, PPP or ESP (docs/LAB.md): the kernel "
    "panels are proven in the emulated guest (vmlab); here they only have to parse",
    "Series left out by the limit [A]": "the lab stays far below the series limit",
    "LCP echo round trip through the tunnel [A]": "no login module here: the login prober "
    "needs xl2tpd and a probe-side charon (tests/probes/test_lab_probes.py covers it)",
    "Login left charon clean [A]": "no login module here (see above)",
    "Connections that must be up (peering links) [B]": "site-b never changed state in the "
    "lab, so it has no last-change timestamp",
}


def is_kernel_query(expr: str) -> bool:
    return any(name.startswith(KERNEL_PREFIXES) for name in metric_names(substitute(expr)))


# -- /probe over TCP: the probes run inside the lab namespace, Prometheus is outside -------


class _ProbeProxy(BaseHTTPRequestHandler):
    probe_server: ProbeServer

    def do_GET(self) -> None:
        timeout = self.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": timeout} if timeout else {}
        answer = self.probe_server.get(self.path, headers=headers, timeout=30)
        body = answer.text.encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_probe_proxy(probe_server: ProbeServer) -> tuple[ThreadingHTTPServer, str]:
    handler = type("Proxy", (_ProbeProxy,), {"probe_server": probe_server})
    httpd = ThreadingHTTPServer(("127.0.0.1", free_loopback_port()), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"127.0.0.1:{httpd.server_address[1]}"


# -- Prometheus config and rules ---------------------------------------------------------------


def generate_rules(out: Path, live_thresholds: dict[str, Any] | None = None) -> list[str]:
    """The project's rules with short windows (default LIVE_THRESHOLDS; the rest as
    alerts/thresholds.yml has them), written under `out`."""
    spec = importlib.util.spec_from_file_location(
        "alerts_generate", REPO / "alerts" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generator
    spec.loader.exec_module(generator)
    out.mkdir(parents=True, exist_ok=True)
    thresholds = out / "live-thresholds.yml"
    thresholds.write_text(yaml.safe_dump(live_thresholds or LIVE_THRESHOLDS))
    assert generator.main(["--thresholds", str(thresholds), "--out", str(out)]) == 0
    return sorted(str(p) for p in out.glob("*.rules.yml"))


def prometheus_config(exporter: str, probe_proxy: str, rule_files: list[str]) -> str:
    probe_targets = [
        {"targets": [SERVER], "labels": {"module": "ike_v1"}},
        {"targets": [SERVER], "labels": {"module": "ike_v2"}},
        {"targets": [SILENT], "labels": {"module": "ike_silent"}},
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "scrape_configs": [
            {
                "job_name": "l2tp-ipsec",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [exporter]}],
            },
            {
                # examples/prometheus-probes.yml's relabelling, pointed at the proxy.
                "job_name": "l2tp_ipsec_probe",
                "metrics_path": "/probe",
                "scrape_interval": "4s",
                "scrape_timeout": "3s",
                "static_configs": probe_targets,
                "relabel_configs": [
                    {"source_labels": ["module"], "target_label": "__param_module"},
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": probe_proxy},
                ],
            },
        ],
    }
    return json.dumps(config, indent=2)


def query(prom: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    try:
        return prom.query(expr)
    except urllib.error.HTTPError as err:
        raise AssertionError(f"Prometheus refused {expr!r}: {err.read().decode()}") from None


def alert_states(prom: PrometheusServer) -> dict[str, set[str]]:
    states: dict[str, set[str]] = {}
    for alert in prom.api("alerts")["alerts"]:
        states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
    return states


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s: {what}")


# -- the test ----------------------------------------------------------------------------------


@pytest.fixture
def stack(make_lab: Any, start_exporter: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    lab = make_lab(["nycmesh"] * 4 + ["ikev2-psk"], with_cert=True)
    exporter = start_exporter(
        lab.server_uri,
        "--collector.strongswan.sa-details",
        "--collector.strongswan.reauth-grace", "0",  # count a drop at once
        # Live CHILD SA counts move at every listing (kernel-libipsec here): the panels'
        # short windows need them every second.
        "--collector.strongswan.sa-refresh-interval", "1",
    )  # fmt: skip
    rules = generate_rules(tmp_path / "rules")
    with probe_namespace(lab) as (netns_name, _):
        probe_server = ProbeServer(netns_name, PROBE_MODULES, tmp_path)
        httpd, proxy = serve_probe_proxy(probe_server)
        target = exporter.url.removeprefix("http://")
        try:
            with PrometheusServer(prometheus_config(target, proxy, rules)) as prom:
                yield {"lab": lab, "prom": prom, "exporter": exporter, "rules": rules}
        finally:
            httpd.shutdown()
            probe_server.close()


def test_dashboards_and_rules_on_a_real_prometheus(stack: dict[str, Any]) -> None:
    lab, prom = stack["lab"], stack["prom"]
    # Prometheus has samples before the traffic: with a listing every second the bytes
    # show at once, and a counter first sampled after them would have no rate.
    prom.wait_for('up{job="l2tp-ipsec"} == 1')
    for client in lab.clients:
        client.ping(count=2)
    prom.wait_for('probe_success{module="ike_v1"} == 1', 30)
    prom.wait_for('probe_success{module="ike_silent"} == 0', 30)
    prom.wait_for("rate(strongswan_child_sa_bytes_total[20s]) > 0", 30)
    time.sleep(3)  # a few more samples for every range query

    # -- every dashboard query: parses, and has data unless listed with a reason
    missing, kernel_with_data = [], []
    for dashboard, where, expr in all_queries():
        result = query(prom, substitute(expr))
        if is_kernel_query(expr):
            if result:
                kernel_with_data.append(where)
            continue
        if not result and where not in EXPECTED_EMPTY:
            missing.append(f"{dashboard}: {where}: {substitute(expr)}")
    assert not missing, "queries without data:\n" + "\n".join(missing)
    wheres = {where for _, where, _ in all_queries()}
    assert set(EXPECTED_EMPTY) - {"kernel"} <= wheres, "EXPECTED_EMPTY names a gone query"
    print(f"kernel queries with data on this machine: {kernel_with_data}")

    # -- every rule loaded and evaluating cleanly; the recording rules have data
    groups = prom.api("rules")["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    expected = [
        rule
        for path in map(Path, stack["rules"])
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
    assert len(loaded) == len(expected)
    wait_until(
        lambda: all(r.get("lastEvaluation", "").startswith("20") for r in _rules(prom)),
        10, "every rule evaluated",
    )  # fmt: skip
    bad = [(r["name"], r.get("lastError")) for r in _rules(prom) if r["health"] != "ok"]
    assert not bad, bad
    for rule in expected:
        if "record" in rule and rule["record"] != "instance:strongswan_ike_sa_drops:increase1m":
            assert query(prom, rule["record"]), f"recording rule {rule['record']} has no data"

    # -- the alerts this scenario must raise: site-b never up, the silent probe target
    states = wait_until(
        lambda: (s := alert_states(prom)).get("StrongswanRequiredConnectionDown") == {"firing"}
        and "firing" in s.get("L2tpIpsecProbeFailing", set())
        and s,
        30, "StrongswanRequiredConnectionDown and L2tpIpsecProbeFailing firing",
    )  # fmt: skip
    assert "StrongswanManyUsersDropped" not in states
    for alert in prom.api("alerts")["alerts"]:
        if alert["labels"]["alertname"] == "L2tpIpsecProbeFailing":
            assert alert["labels"]["instance"] == SILENT
            assert alert["labels"]["phase"] == "ike"
        if alert["labels"]["alertname"] == "StrongswanRequiredConnectionDown":
            assert alert["labels"]["conn"] == "site-b"

    # -- an induced drop: three of five users go away at once
    for client in [c for c in lab.clients if c.conn == "nycmesh"][:3]:
        client.disconnect()
    seen: set[str] = set()

    def dropped() -> bool:
        seen.update(alert_states(prom).get("StrongswanManyUsersDropped", set()))
        return "firing" in seen

    wait_until(dropped, 30, f"StrongswanManyUsersDropped firing (states seen: {seen})")
    assert seen == {"pending", "firing"} or seen == {"firing"}, seen
    drops = query(prom, "instance:strongswan_ike_sa_drops:increase1m")
    assert drops and float(drops[0]["value"][1]) >= 2


def _rules(prom: PrometheusServer) -> list[dict[str, Any]]:
    return [rule for group in prom.api("rules")["groups"] for rule in group["rules"]]
