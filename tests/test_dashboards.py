"""Static checks of the Grafana dashboards (and the metric names the alert rules use).

Importable, provisioning-ready, current schema; every panel on the `${datasource}`
variable; unique panel ids; every query parses (promtool) and names only metrics the
exporter writes (golden exposition files, the ledger's and prober's families). The live
test (tests/integration/test_dashboards_live.py) runs the same queries on a real Prometheus.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "dashboards"
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))
EXPECTED_UIDS = {
    "overview.json": "l2tp-ipsec-overview",
    "users-and-sessions.json": "l2tp-ipsec-users",
    "probes.json": "l2tp-ipsec-probes",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
MIN_SCHEMA_VERSION = 39

#: What Grafana puts in for its variables, for running a query outside Grafana: every
#: multi-value variable as its "All" regex, the time ranges as fixed windows.
VARIABLE_VALUES = {
    "__rate_interval": "20s",
    "__interval": "5s",
    "__range": "10m",
    "job": ".*",
    "instance": ".*",
    "conn": ".*",
    "module": ".*",
    "required": "site-.*|peer-.*|peering-.*",
}

PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


# -- reading dashboards ----------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def label_values_selector(query: str) -> str | None:
    """The series selector of a `label_values(selector, label)` variable query."""
    match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip())
    return match.group(1) if match else None


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every label_values variable."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
    for var in variables(dashboard).values():
        if var["type"] == "query":
            selector = label_values_selector(var["query"]["query"])
            assert selector, f"variable {var['name']}: expected label_values(selector, label)"
            found.append((f"variable ${var['name']}", selector))
    return found


def all_queries() -> list[tuple[str, str, str]]:
    return [(p.name, where, expr) for p in DASHBOARD_FILES for where, expr in queries(load(p))]


def substitute(expr: str) -> str:
    """The query as Grafana sends it, with the variables of VARIABLE_VALUES."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in VARIABLE_VALUES:
            raise KeyError(f"unknown dashboard variable ${name} in {expr}")
        return VARIABLE_VALUES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a small tokenizer, enough for ours)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function or a keyword
        if match.start() > 0 and text[match.start() - 1].isdigit():
            continue  # the unit of a duration or a number like 1e3
        names.add(word)
    return names


# -- what the exporter writes ------------------------------------------------------------------


def _golden_names() -> set[str]:
    names = set()
    for path in (REPO / "tests" / "golden").glob("*.prom"):
        for line in path.read_text().splitlines():
            if line.startswith("# TYPE "):
                name, kind = line.split()[2:4]
                names.add(name + "_total" if kind == "counter" else name)
            elif line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _family_names(families: list[Any]) -> set[str]:
    return {f.name + "_total" if f.type == "counter" else f.name for f in families}


def _ledger_names() -> set[str]:
    from exporter.collectors.limits import SeriesLimiter
    from exporter.collectors.strongswan_ledger import render_ledger, render_stream
    from exporter.strongswan.ledger import SaLedger

    families = render_ledger(SaLedger(), [], SeriesLimiter(10), True)
    stream = SimpleNamespace(up=True, reconnects=0, events_received=0)
    families += render_stream(stream)  # type: ignore[arg-type]
    return _family_names(families)


def _source_names() -> set[str]:
    """Probe and exporter-self metrics, and the background state's ages: literal names in
    the source (their registries are only filled by a real probe or scrape; the ages only
    in background mode, which the golden files do not render)."""
    names = set()
    for path in (REPO / "exporter").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r'"((?:probe|l2tp_ipsec_exporter)_[a-z0-9_]+)"', text))
        names |= set(re.findall(r'"(strongswan_[a-z0-9_]+_age_seconds)"', text))
    return names


def exporter_metric_names() -> set[str]:
    return _golden_names() | _ledger_names() | _source_names() | {"up"}


# -- tests -------------------------------------------------------------------------------------


def test_the_three_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARD_FILES} == set(EXPECTED_UIDS)


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_generate", DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_committed_json_is_what_the_generator_makes() -> None:
    built = load_generator().build()
    for name, text in built.items():
        assert (DASHBOARDS / name).read_text() == text, (
            f"{name} stale: python3 dashboards/generate.py"
        )


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_is_importable_and_provisioning_ready(path: Path) -> None:
    dash = load(path)
    assert dash["uid"] == EXPECTED_UIDS[path.name]
    assert len(dash["uid"]) <= 40
    assert dash["schemaVersion"] >= MIN_SCHEMA_VERSION
    assert dash.get("id") is None, "an id ties the JSON to one Grafana database"
    assert dash["title"] and "__inputs" not in dash and "__requires" not in dash
    var = variables(dash)
    assert var["datasource"]["type"] == "datasource"
    assert var["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert var[name]["type"] == "query"
        assert var[name]["datasource"] == DATASOURCE
        assert var[name]["includeAll"] and var[name]["allValue"] == ".*"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_no_datasource_uid_but_the_variable(path: Path) -> None:
    text = path.read_text()
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', text))
    assert uids <= {"${datasource}", "-- Grafana --", EXPECTED_UIDS[path.name]}, uids


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_panels_have_unique_ids_the_datasource_variable_and_a_tidy_grid(path: Path) -> None:
    dash = load(path)
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels(dash):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_queries_use_only_the_dashboards_variables(path: Path) -> None:
    dash = load(path)
    declared = set(variables(dash)) | {"__rate_interval", "__interval", "__range"}
    for where, expr in queries(dash):
        used = {a or b for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", expr)}
        assert used <= declared, f"{path.name} {where}: undeclared {used - declared}"
        assert used <= set(VARIABLE_VALUES), f"{where}: add {used} to VARIABLE_VALUES"


#: Counters that only move at each background list-sas.
LISTED_COUNTERS = re.compile(r"rate\((strongswan_child_sa|strongswan_user)_(bytes|packets)_total\b")


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match is not None, f"not a duration: {duration}"
    number, unit = match.groups()
    return float(number) * {"s": 1, "m": 60, "h": 3600}[unit]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_rates_of_listed_counters_step_wider_than_two_listings(path: Path) -> None:
    """A rate over a counter that moves once per listing needs two listings in its window,
    else the panel draws zeros and spikes: the panel's min interval must be at least twice
    the default --collector.strongswan.sa-refresh-interval."""
    from exporter.config import StrongswanOptions

    listing = StrongswanOptions().sa_refresh_interval
    found = 0
    for panel in panels(load(path)):
        if any(LISTED_COUNTERS.search(t["expr"]) for t in panel.get("targets", [])):
            found += 1
            interval = panel.get("interval", "")
            assert interval and seconds(interval) >= 2 * listing, panel["title"]
    if path.name in ("overview.json", "users-and-sessions.json"):
        assert found, "the traffic panels moved?"


@pytest.mark.parametrize(
    ("dashboard", "where", "expr"), all_queries(), ids=[f"{d}:{w}" for d, w, _ in all_queries()]
)
def test_query_names_only_metrics_the_exporter_writes(
    dashboard: str, where: str, expr: str
) -> None:
    names = metric_names(substitute(expr))
    assert names, f"{where}: no metric found in {expr}"
    unknown = names - exporter_metric_names()
    assert not unknown, f"{dashboard} {where}: not written by the exporter: {unknown}"


def test_alert_rules_name_only_metrics_the_exporter_writes() -> None:
    known = exporter_metric_names()
    rules = [
        rule
        for path in sorted((REPO / "alerts").glob("*.rules.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    for rule in rules:
        unknown = metric_names(rule["expr"]) - known - recorded
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown}"


def test_metric_name_tokenizer() -> None:
    expr = (
        'sum by (instance, conn) (rate(a_total{job=~"x|y", conn="by"}[5m])) * 8 '
        "/ on (job) group_left (version) b > 1e3 and time() - c offset 5m"
    )
    assert metric_names(expr) == {"a_total", "b", "c"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing")
@pytest.mark.promtool
def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule) with the variables filled in."""
    rules = [
        {"record": f"dashboard:query{i}", "expr": substitute(expr)}
        for i, (_, _, expr) in enumerate(all_queries())
    ]
    path = tmp_path / "dashboard-queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
