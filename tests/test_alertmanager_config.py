"""alerts/alertmanager.example.yml: valid for amtool, routes every project alert by its
severity, and groups and inhibits as documented on a real Alertmanager.

The real Alertmanager (Debian's `prometheus-alertmanager`, on 127.0.0.1 with its own
storage) gets alerts posted the way Prometheus posts them; its receivers are pointed at a
local recorder. The whole path from a charon lab is tests/integration/test_alert_delivery.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from exporter.demo.lab.alertmanager import (
    AlertmanagerServer,
    Notification,
    WebhookRecorder,
    find_binary,
    local_config,
)
from tests.conftest import REPO
from tests.test_alerts import alerts

EXAMPLE = REPO / "alerts" / "alertmanager.example.yml"
RECEIVER_BY_SEVERITY = {"critical": "pager", "warning": "team-mail"}

needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="amtool missing: apt-get install prometheus-alertmanager",
)
needs_alertmanager = pytest.mark.skipif(
    find_binary() is None, reason="alertmanager missing: apt-get install prometheus-alertmanager"
)


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=30)


@needs_amtool
def test_amtool_check_config() -> None:
    result = amtool("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert " - 3 inhibit rules" in result.stdout
    assert " - 3 receivers" in result.stdout


@needs_amtool
def test_every_alert_is_routed_by_its_severity() -> None:
    """Each alert of the project's rules, with its labels, reaches the receiver of its
    severity (amtool walks the shipped routing tree)."""
    for rule in alerts():
        labels = [f"alertname={rule['alert']}", f"severity={rule['labels']['severity']}"]
        labels += ["job=l2tp-ipsec", "instance=vpn1:9945"]
        result = amtool("config", "routes", "test", f"--config.file={EXAMPLE}", *labels)
        assert result.returncode == 0, result.stdout + result.stderr
        expected = RECEIVER_BY_SEVERITY[rule["labels"]["severity"]]
        assert result.stdout.strip() == expected, (rule["alert"], result.stdout)
    result = amtool("config", "routes", "test", f"--config.file={EXAMPLE}", "alertname=Other")
    assert result.stdout.strip() == "team-chat"


def test_placeholders_are_marked_and_reach_nobody() -> None:
    text = EXAMPLE.read_text()
    config = yaml.safe_load(text)
    addresses = [config["global"]["smtp_smarthost"], config["global"]["smtp_from"]]
    for receiver in config["receivers"]:
        for kind, configs in receiver.items():
            if kind.endswith("_configs"):
                addresses += [c.get("url") or c.get("to") for c in configs]
    assert addresses and all(re.search(r"[.@]example\.invalid\b", a) for a in addresses), addresses
    # Every placeholder line has a CHANGE ME comment within the three lines above it.
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if "example.invalid" in line:
            assert any("CHANGE ME" in above for above in lines[max(0, number - 3) : number])
    assert re.search(r"group_by: \[alertname, job, instance\]", text)


def _alert(name: str, severity: str, instance: str, **labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {
            "alertname": name, "severity": severity, "job": "l2tp-ipsec",
            "instance": instance, **labels,
        },
        "annotations": {"summary": f"{name} on {instance}"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
    }  # fmt: skip


@needs_alertmanager
def test_grouping_and_inhibition_on_a_real_alertmanager() -> None:
    """charon down on vpn1 silences its connection alerts; on vpn2 two links and five
    peering logins down arrive as one message per alert name, not one per link or user."""
    down = [
        _alert("StrongswanDown", "critical", "vpn1:9945"),
        _alert("StrongswanRequiredConnectionDown", "critical", "vpn1:9945", conn="site-a"),
        _alert("StrongswanRequiredConnectionDown", "critical", "vpn1:9945", conn="peer-b"),
        _alert("StrongswanManyUsersDropped", "warning", "vpn1:9945"),
        _alert("StrongswanRequiredConnectionDown", "critical", "vpn2:9945", conn="site-a"),
        _alert("StrongswanRequiredConnectionDown", "critical", "vpn2:9945", conn="peer-b"),
        *(
            _alert("L2tpIpsecRequiredLoginDown", "critical", "vpn2:9945", user=f"peer-{i}")
            for i in range(5)
        ),
    ]
    with WebhookRecorder() as recorder:
        config = local_config(
            yaml.safe_load(EXAMPLE.read_text()), recorder.url,
            group_wait="1s", group_interval="2s",
        )  # fmt: skip
        with AlertmanagerServer(yaml.safe_dump(config)) as am:
            am.post_alerts(down)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(recorder.received()) < 3:
                time.sleep(0.2)
            time.sleep(4)  # two group_intervals: anything split or late shows up
            got: list[Notification] = recorder.received()
            states = {
                (a["labels"]["alertname"], a["labels"]["instance"], a["labels"].get("conn")): a[
                    "status"
                ]["state"]
                for a in am.alerts()
            }
    lines = "\n".join(n.summary_line() for n in got)
    by_group = {
        (n.body["groupLabels"]["alertname"], n.body["groupLabels"]["instance"]): n for n in got
    }
    assert len(got) == 3 and len(by_group) == 3, lines
    assert set(by_group) == {
        ("StrongswanDown", "vpn1:9945"),
        ("StrongswanRequiredConnectionDown", "vpn2:9945"),
        ("L2tpIpsecRequiredLoginDown", "vpn2:9945"),
    }, lines
    links = by_group[("StrongswanRequiredConnectionDown", "vpn2:9945")]
    assert sorted(a["labels"]["conn"] for a in links.alerts) == ["peer-b", "site-a"]
    assert links.receiver == "pager"
    logins = by_group[("L2tpIpsecRequiredLoginDown", "vpn2:9945")]
    assert len(logins.alerts) == 5
    assert states[("StrongswanRequiredConnectionDown", "vpn1:9945", "site-a")] == "suppressed"
    assert states[("StrongswanManyUsersDropped", "vpn1:9945", None)] == "suppressed"
    assert states[("StrongswanRequiredConnectionDown", "vpn2:9945", "site-a")] == "active"
