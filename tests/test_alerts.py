"""The alert and recording rules: promtool-clean, unit-tested, generated from thresholds.yml.

`promtool check rules` and `promtool test rules` (Debian package `prometheus`) run on the
committed files; the rule files must match what alerts/generate.py makes of the templates
and thresholds; every alert has a firing and a not-firing unit test and its annotations.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ALERTS = REPO / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml"))
UNIT_TESTS = sorted((ALERTS / "tests").glob("*.yml"))

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: apt-get install prometheus"
)


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("alerts_generate", ALERTS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def test_there_are_rule_files_and_unit_tests() -> None:
    names = {p.name for p in RULE_FILES}
    assert names == {"l2tp-ipsec.rules.yml", "l2tp-ipsec.recording.rules.yml"}
    assert UNIT_TESTS


@needs_promtool
@pytest.mark.promtool
def test_promtool_check_rules() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.promtool
def test_promtool_unit_tests() -> None:
    result = subprocess.run(
        ["promtool", "test", "rules", *map(str, UNIT_TESTS)],
        capture_output=True, text=True, cwd=ALERTS / "tests",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_rule_files_are_generated_from_thresholds() -> None:
    generator = load_generator()
    files = generator.render(generator.load_thresholds())
    for name, text in files.items():
        assert (ALERTS / name).read_text() == text, f"{name} is stale: python3 alerts/generate.py"


def test_generator_overrides_and_refuses_typos(tmp_path: Path) -> None:
    generator = load_generator()
    custom = generator.render(generator.load_thresholds({"pool": {"warning_ratio": 0.8}}))
    assert "pool:strongswan_pool_online:ratio >= 0.8 < 1" in custom["l2tp-ipsec.rules.yml"]
    with pytest.raises(generator.ThresholdError, match=r"pool\.warning_ration"):
        generator.load_thresholds({"pool": {"warning_ration": 0.8}})
    override = tmp_path / "mine.yml"
    override.write_text("selectors:\n  required_connections: 'gw-.*'\n")
    assert generator.main(["--thresholds", str(override), "--out", str(tmp_path)]) == 0
    written = (tmp_path / "l2tp-ipsec.recording.rules.yml").read_text()
    assert 'conn=~"gw-.*"' in written
    assert generator.main(["--check", "--out", str(ALERTS)]) == 0


def test_login_alerts_take_their_thresholds() -> None:
    generator = load_generator()
    override = {
        "required_login_down": {"for": "10m"},
        "login_flapping": {"window": "1h", "max_logins": 6, "users": "peer-.*", "for": "5m"},
    }
    text = generator.render(generator.load_thresholds(override))["l2tp-ipsec.rules.yml"]
    by_name = {
        rule["alert"]: rule
        for group in yaml.safe_load(text)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    down = by_name["L2tpIpsecRequiredLoginDown"]
    assert down["expr"] == "l2tp_ipsec_required_login_up == 0"
    assert down["for"] == "10m" and down["labels"]["severity"] == "critical"
    assert "for 10m" in down["annotations"]["description"]
    flapping = by_name["L2tpIpsecLoginFlapping"]
    assert flapping["expr"] == (
        'floor(increase(l2tp_ipsec_user_logins_total{user=~"peer-.*"}[1h])) > 6'
    )
    assert flapping["for"] == "5m" and flapping["labels"]["severity"] == "warning"
    assert "within the last 1h" in flapping["annotations"]["description"]


def test_every_threshold_is_used_and_documented() -> None:
    generator = load_generator()
    thresholds = generator.load_thresholds()
    generator.render(thresholds)  # raises on an unused or unknown threshold
    runbook = (REPO / "docs" / "alerts.md").read_text()
    for section in {key.split(".")[0] for key in thresholds}:
        assert f"`{section}" in runbook, f"docs/alerts.md does not mention threshold {section}"


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_has_severity_annotations_and_a_runbook_section(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"warning", "critical"}
    annotations = alert["annotations"]
    assert {"summary", "description", "runbook", "runbook_url"} <= set(annotations)
    assert "\n" not in annotations["runbook"], "runbook is one line"
    anchor = alert["alert"].lower()
    assert annotations["runbook_url"].endswith(f"#{anchor}")
    runbook = (REPO / "docs" / "alerts.md").read_text()
    assert f"\n## {alert['alert']}\n" in runbook, f"docs/alerts.md has no section {alert['alert']}"
    assert "for" in alert, "every alert waits before firing"


def unit_cases() -> list[tuple[str, bool]]:
    """(alertname, fires) for every alert_rule_test in the unit tests."""
    cases = []
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.append((case["alertname"], bool(case.get("exp_alerts"))))
    return cases


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_has_firing_and_quiet_unit_tests(alert: dict[str, Any]) -> None:
    cases = unit_cases()
    assert (alert["alert"], True) in cases, f"no unit test where {alert['alert']} fires"
    assert (alert["alert"], False) in cases, f"no unit test where {alert['alert']} stays quiet"


def test_every_recording_rule_has_a_unit_test() -> None:
    tested = ""
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            tested += " ".join(case["expr"] for case in test.get("promql_expr_test", []))
    for rule in rules():
        if "record" in rule:
            assert rule["record"] in tested, f"no promql_expr_test for {rule['record']}"
