"""`l2tp-ipsec-exporter demo`: real numbers in one command, and nothing left behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.demo import run as demo_run
from exporter.demo.lab.alertmanager import find_binary
from tests.conftest import REPO, Scrape, exporter_argv, exporter_env, free_port

pytestmark = pytest.mark.lab


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def lab_processes() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "l2x-"], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def temp_entries() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("l2x-")}


def scrape(url: str) -> Scrape | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return Scrape(response.read().decode())
    except OSError:
        return None


def total(scrape: Scrape, name: str) -> float:
    return sum(s.value for s in scrape.samples(name))


def check_prometheus(output: Any, deadline: float) -> None:
    """The demo's Prometheus scrapes it and has the project's alert rules, all healthy."""
    import json
    import urllib.request

    output.seek(0)
    match = re.search(rb"prometheus: (http://127\.0\.0\.1:\d+)", output.read())
    assert match, "the demo printed no Prometheus URL"
    base = match.group(1).decode()
    groups: list[Any] = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(base + "/api/v1/rules", timeout=5) as response:
            groups = json.load(response)["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules):
            break
        time.sleep(1)
    rules = [r for g in groups for r in g["rules"]]
    assert any(r["type"] == "alerting" for r in rules), "no alert rules loaded"
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    query = base + "/api/v1/query?query=strongswan_up"
    while time.monotonic() < deadline:
        with urllib.request.urlopen(query, timeout=5) as response:
            if json.load(response)["data"]["result"]:
                return
        time.sleep(1)
    raise AssertionError("the demo's Prometheus never scraped the exporter")


def check_alert_delivery(output: Any, deadline: float) -> None:
    """The demo's Alertmanager gets the never-up site-b's alert from its Prometheus, and
    the demo prints the notification its recorder received."""
    import json
    import urllib.request

    output.seek(0)
    match = re.search(rb"alertmanager: (http://127\.0\.0\.1:\d+)", output.read())
    assert match, "the demo printed no Alertmanager URL"
    base = match.group(1).decode()
    alerts: list[Any] = []
    printed = False
    while time.monotonic() < deadline:
        with urllib.request.urlopen(base + "/api/v2/alerts", timeout=5) as response:
            alerts = [
                a for a in json.load(response)
                if a["labels"]["alertname"] == "StrongswanRequiredConnectionDown"
            ]  # fmt: skip
        output.seek(0)
        printed = re.search(
            rb"alert notification: \[FIRING:1\] StrongswanRequiredConnectionDown "
            rb"127\.0\.0\.1:\d+ to pager: Connection site-b is down",
            output.read(),
        ) is not None  # fmt: skip
        if alerts and printed:
            break
        time.sleep(1)
    assert [a["labels"]["conn"] for a in alerts] == ["site-b"], alerts
    assert printed, "the demo did not print the notification"


def test_demo_serves_moving_metrics_and_cleans_up(lab_available: Any) -> None:
    before = (namespaces(), lab_processes(), temp_entries())
    port = free_port()
    with_prometheus = shutil.which("prometheus") is not None
    with_alertmanager = with_prometheus and find_binary() is not None
    args = exporter_argv(
        "demo", "--web.listen-address", f"127.0.0.1:{port}", "--churn-interval", "0.5",
        "--seed", "7", "--required-down-for", "3s",
        *(["--with-prometheus"] if with_prometheus else []),
    )  # fmt: skip
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(args, cwd=REPO, env=exporter_env(), stdout=output, stderr=output)
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            deadline = time.monotonic() + 60
            first = None
            while time.monotonic() < deadline and first is None:
                first = scrape(url)
                time.sleep(0.5)
            assert first is not None, "the demo never served metrics"
            assert first.value("strongswan_up") == 1
            assert total(first, "strongswan_connection_established") >= 1
            moving = None
            while time.monotonic() < deadline:
                time.sleep(1)
                now = scrape(url)
                assert now is not None
                if total(now, "strongswan_child_sa_bytes_total") > total(
                    first, "strongswan_child_sa_bytes_total"
                ) and total(now, "strongswan_ike_sa_events_total") > total(
                    first, "strongswan_ike_sa_events_total"
                ):
                    moving = now
                    break
            assert moving is not None, "traffic and event counters did not move"
            if with_prometheus:
                check_prometheus(output, deadline)
            if with_alertmanager:
                check_alert_delivery(output, time.monotonic() + 60)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail("the demo did not stop within 60 s of SIGTERM")
            output.seek(0)
            text = output.read().decode(errors="replace")
    assert proc.returncode == 0, text
    assert f"metrics: http://127.0.0.1:{port}/metrics" in text
    assert "demo stopped" in text
    match = re.search(r"msg=\"lab started\" lab=(l2x-[0-9a-f]+-)", text)
    assert match, text
    prefix = match.group(1)  # other labs may run beside this test; only the demo's count
    time.sleep(0.5)
    assert {n for n in namespaces() - before[0] if n.startswith(prefix)} == set()
    assert {p for p in lab_processes() - before[1] if prefix in cmdline(p)} == set()
    assert {t for t in temp_entries() - before[2] if t.startswith(prefix)} == set()


def test_demo_refuses_without_root_and_says_why() -> None:
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the demo as an unprivileged user")
    args = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *exporter_argv("demo")]
    result = subprocess.run(args, cwd="/", env=exporter_env(), capture_output=True, text=True)
    assert result.returncode == 1
    assert "needs root" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_demo_names_missing_debian_packages() -> None:
    if os.geteuid() != 0:
        pytest.skip("the package check comes after the root check")
    env = exporter_env()
    env["PATH"] = "/nonexistent"  # swanctl, ip, unshare and prometheus are not found
    result = subprocess.run(
        [*exporter_argv("demo", "--with-prometheus")],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert "strongswan-swanctl" in result.stderr
    assert "apt-get install prometheus" in result.stderr


def test_demo_goes_on_without_alertmanager_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_run, "find_binary", lambda: None)
    delivery = demo_run.AlertDelivery()
    problem = delivery.start()
    assert problem is not None
    assert "apt-get install prometheus-alertmanager" in problem
    assert "goes on without alert delivery" in problem
    assert delivery.server is None and delivery.recorder is None
    delivery.stop()
