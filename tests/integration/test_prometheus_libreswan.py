"""The dashboards and rules on a real Prometheus scraping a Libreswan server's /metrics.

pluto itself is not here (the live guest test scrapes the exporter on a genuine Libreswan
server): a loopback HTTP server answers /metrics with what the Libreswan collector renders
for a pluto state (tests/test_dashboards.libreswan_families), written by the exporter's
own exposition writer, and the test changes that state as pluto's would change. Debian's
`prometheus` scrapes it with the project's generated rules (short windows) loaded, so what
is proven is what Prometheus does with those series: its `instance` relabelling, the
rules' evaluation, the alerts' states. No root, no network outside loopback.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.collectors.libreswan import up_family
from exporter.demo.lab.prometheus import PrometheusServer, free_loopback_port, scrape_config
from exporter.exposition import render_text
from tests.conftest import REPO
from tests.test_dashboards import (
    STRONGSWAN_ONLY,
    libreswan_families,
    reads,
    server_queries,
    substitute,
)

pytestmark = [
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed"),
]

THRESHOLDS = {
    "required_connection_down": {"for": "2s"},
    "connection_flapping": {"window": "1m", "drops": 2, "for": "1s"},
    "many_users_dropped": {
        "window": "1m", "lookback": "2m", "min_drops": 2, "ratio": 0.25, "for": "1s",
    },
    "libreswan_down": {"for": "2s"},
}  # fmt: skip


class FakeExporter:
    """/metrics of a Libreswan server; `state` is what the next scrape shows."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.pluto_up = True
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if owner.pluto_up:
                    families = libreswan_families(**owner.state)
                else:
                    families = [up_family(False)]
                body = render_text(families)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_loopback_port()), Handler)
        self.target = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def generate_rules(out: Path) -> list[str]:
    spec = importlib.util.spec_from_file_location(
        "alerts_generate_libreswan", REPO / "alerts" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generator
    spec.loader.exec_module(generator)
    out.mkdir(parents=True)
    thresholds = out / "thresholds.yml"
    thresholds.write_text(yaml.safe_dump(THRESHOLDS))
    assert generator.main(["--thresholds", str(thresholds), "--out", str(out)]) == 0
    return sorted(str(p) for p in out.glob("*.rules.yml"))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[FakeExporter, PrometheusServer, list[str]]]:
    exporter = FakeExporter()
    rules = generate_rules(tmp_path / "rules")
    try:
        with PrometheusServer(scrape_config([exporter.target], rule_files=rules)) as prom:
            yield exporter, prom, rules
    finally:
        exporter.close()


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s: {what}")


#: Every alert name seen pending or firing during the test.
SEEN: set[str] = set()


def firing(prom: PrometheusServer) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for alert in prom.api("alerts")["alerts"]:
        SEEN.add(alert["labels"]["alertname"])
        if alert["state"] == "firing":
            out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
    return out


def value(prom: PrometheusServer, expr: str) -> float:
    result = prom.query(expr)
    assert len(result) == 1, f"{expr}: {result}"
    return float(result[0]["value"][1])


def test_dashboards_rules_and_alerts_serve_a_libreswan_server(
    stack: tuple[FakeExporter, PrometheusServer, list[str]],
) -> None:
    exporter, prom, rule_files = stack
    SEEN.clear()
    prom.wait_for('up{job="l2tp-ipsec"} == 1')
    prom.wait_for("libreswan_up == 1")
    time.sleep(4)  # a few samples for every rate() over $__rate_interval (20 s here)

    # -- every daemon query of the server dashboards has data (the kernel ones are the
    # same for both daemons and proven elsewhere; the strongSwan-only ones have none)
    missing = [
        f"{dashboard}: {where}: {substitute(expr)}"
        for dashboard, where, expr in server_queries()
        if reads(expr, "libreswan_")
        and where not in STRONGSWAN_ONLY
        and not prom.query(substitute(expr))
    ]
    assert not missing, "queries without data:\n" + "\n".join(missing)
    # The per-SA table shows the SA's connection instance (conn_instance: a label named
    # instance would clash with Prometheus' target label).
    sa = prom.query('libreswan_ipsec_sa_info{conn="l2tp-psk"}')
    assert {r["metric"]["instance"] for r in sa} == {exporter.target}
    assert {r["metric"]["conn_instance"] for r in sa} == {"1", "2", "3"}

    # -- every rule evaluates cleanly; the daemon-neutral recording rules have data
    def rules() -> list[dict[str, Any]]:
        return [r for g in prom.api("rules")["groups"] for r in g["rules"]]

    wait_until(
        lambda: all(r.get("lastEvaluation", "").startswith("20") for r in rules()),
        10, "every rule evaluated",
    )  # fmt: skip
    bad = [(r["name"], r.get("lastError")) for r in rules() if r["health"] != "ok"]
    assert not bad, bad
    expected = [
        rule["record"]
        for path in rule_files
        for group in yaml.safe_load(Path(path).read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]
    neutral = [r for r in expected if "strongswan" not in r and "probe" not in r]
    assert len(neutral) == 4, neutral
    for record in neutral:
        assert prom.wait_for(record, 10), record
    assert value(prom, 'l2tp_ipsec:ike_daemon:up{daemon="libreswan"}') == 1
    assert value(prom, "instance:connection_established:sum") == 4  # 3 clients + peer-nyc
    assert value(prom, 'l2tp_ipsec:required_connection:established{conn="peer-nyc"}') == 1
    assert value(prom, "instance:ike_sa_drops:increase1m") == 0
    assert not firing(prom)

    # -- the peering link goes down and comes back twice: down, then flapping
    exporter.state = {"peer_up": False, "peer_drops": 1}
    alerts = wait_until(
        lambda: (f := firing(prom)).get("LibreswanRequiredConnectionDown") and f,
        20, "LibreswanRequiredConnectionDown firing",
    )  # fmt: skip
    assert [a["conn"] for a in alerts["LibreswanRequiredConnectionDown"]] == ["peer-nyc"]
    time.sleep(3)  # StrongswanRequiredConnectionDown has the same `for:`: it would fire now
    assert "StrongswanRequiredConnectionDown" not in firing(prom)
    exporter.state = {"peer_up": True, "peer_drops": 1}
    time.sleep(2)
    exporter.state = {"peer_up": True, "peer_drops": 2}
    alerts = wait_until(
        lambda: (f := firing(prom)).get("LibreswanConnectionFlapping") and f,
        20, "LibreswanConnectionFlapping firing",
    )  # fmt: skip
    assert [a["conn"] for a in alerts["LibreswanConnectionFlapping"]] == ["peer-nyc"]

    # -- two of three L2TP/IPsec clients drop at once: a mass drop
    exporter.state = {"peer_drops": 2, "drops": 2, "established": 1}
    alerts = wait_until(
        lambda: (f := firing(prom)).get("LibreswanManyUsersDropped") and f,
        20, "LibreswanManyUsersDropped firing",
    )  # fmt: skip
    assert value(prom, "instance:ike_sa_drops:increase1m") >= 2

    # -- pluto stops answering
    exporter.pluto_up = False
    alerts = wait_until(
        lambda: (f := firing(prom)).get("LibreswanDown") and f, 20, "LibreswanDown firing"
    )
    assert value(prom, 'l2tp_ipsec:ike_daemon:up{daemon="libreswan"}') == 0

    # Never a strongSwan alert for this server, pending or firing, at any check: each
    # concern fired its Libreswan twin.
    firing(prom)
    assert {name for name in SEEN if name.startswith("Strongswan")} == set(), SEEN
    assert {
        "LibreswanRequiredConnectionDown", "LibreswanConnectionFlapping",
        "LibreswanManyUsersDropped", "LibreswanDown",
    } <= SEEN  # fmt: skip
