"""grafana/dashboard-linter's rules, as tests over every dashboard, panel and target.

The linter (a Go program) cannot be installed here, so its rules are written down again,
under the linter's names and with its semantics (lint/rule_*.go of grafana/dashboard-linter):
queries are parsed with the Prometheus grammar (promql-parser, a port of Prometheus' own
parser) after the linter's variable expansion (a variable outside a string literal becomes a
sample value, `$__rate_interval` a magic duration; inside a string, `"$job"`, it stays as
written). Where this file is stricter than the linter it says so; README's "Lint" section
lists the rules. A rule that does not fit a query on purpose is waived for that query in
EXCLUSIONS, with the reason, as the linter's `.lint` file would; a waiver whose query went
away or no longer breaks the rule fails the test.

target-promql-rule is checked twice: here with the linter's expansion (each failure named
like the others), and by `promtool` with the variables as Grafana fills them in
(tests/test_dashboards.py::test_every_query_parses, not repeated here).

Every rule is also run on a small dashboard that passes all of them, broken one way per
rule (NEGATIVE_CASES): each break must make its rule, and only its rule, fail.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from tests.dashboard_queries import label_values_selector, load, panels, variables

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))

#: What the linter's expansion puts in for Grafana's range variables: durations no query
#: writes itself, so a range is recognised as the variable after parsing.
MAGIC_DURATIONS = {"__rate_interval": "4321s", "__interval": "1234s", "__range": "98765s"}
RATE_INTERVAL = timedelta(seconds=4321)
RANGE = timedelta(seconds=98765)
#: The templated datasource as panels, targets and query variables must name it.
DATASOURCE_REFS = {"$datasource", "${datasource}"}
#: Counter names: the linter's `_total`; histogram and summary series are counters too.
COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
#: Functions a counter may be read through (the linter's three).
COUNTER_FUNCTIONS = {"rate", "irate", "increase"}
#: Panel kinds the unit and title/description rules apply to: the linter's (stat,
#: singlestat, graph, table, timeseries, gauge), and (stricter) bar gauges and state
#: timelines: every panel but rows.
VALID_UNITS = {
    # The linter's list (Grafana's value formats) as far as a dashboard of ours could use it.
    "none", "string", "short", "percent", "percentunit", "locale",
    "bytes", "decbytes", "bits", "decbits", "kbytes", "mbytes", "gbytes",
    "pps", "binBps", "Bps", "binbps", "bps", "KiBs", "Kibits", "KBs", "Kbits", "MBs", "Mbits",
    "dateTimeAsIso", "dateTimeAsIsoNoDateIfToday", "dateTimeAsUS", "dateTimeAsLocal",
    "dateTimeAsSystem", "dateTimeFromNow",
    "hertz", "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations", "dthms",
    "dtdhms", "clockms", "clocks",
    "cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "wpm",
    "bool", "bool_yes_no", "bool_on_off",
}  # fmt: skip


@dataclass(frozen=True)
class Problem:
    rule: str
    dashboard: str
    panel: str  # the panel's title, or "" for a dashboard-wide finding
    ref: str  # the target's refId, or ""
    expr: str
    message: str

    def __str__(self) -> str:
        where = self.dashboard
        if self.panel or self.ref:
            where += f", panel '{self.panel}'"
        if self.ref:
            where += f" [{self.ref}]"
        query = f", query `{self.expr}`" if self.expr else ""
        return f"{self.rule}: {where}{query}: {self.message}"


Dashboard = dict[str, Any]
Rule = Callable[[str, Dashboard], Iterator[Problem]]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn

    return register


# -- reading a dashboard the way the linter does ---------------------------------------------


def content_panels(dash: Dashboard) -> Iterator[dict[str, Any]]:
    """Every panel but rows (rows' nested panels included)."""
    return (p for p in panels(dash) if p["type"] != "row")


def targets(dash: Dashboard) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in content_panels(dash):
        for target in panel.get("targets", []):
            yield panel, target


def expand(expr: str, dash: Dashboard) -> str:
    """The linter's expandVariables: outside string literals each variable becomes a sample
    value (Grafana's range variables a magic duration, a variable with a current value that
    value, else its name); inside them (`job=~"$job"`) it stays as written."""
    values = {n: str(v.get("current", {}).get("value") or n) for n, v in variables(dash).items()}
    values.update(MAGIC_DURATIONS)

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, name)

    parts = expr.split('"')
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"\$\{(\w+)\}|\$(\w+)", value, parts[i])
    return '"'.join(parts)


def parse(expr: str, dash: Dashboard) -> promql_parser.Expr:
    return promql_parser.parse(expand(expr, dash))


def children(node: promql_parser.Expr) -> list[promql_parser.Expr]:
    found: list[promql_parser.Expr] = []
    for attr in ("lhs", "rhs", "param", "expr", "vector_selector"):
        child = getattr(node, attr, None)
        if isinstance(child, promql_parser.Expr):
            found.append(child)
    if isinstance(node, promql_parser.Call):
        found.extend(node.args)
    return found


def walk(
    node: promql_parser.Expr, parents: tuple[promql_parser.Expr, ...] = ()
) -> Iterator[tuple[promql_parser.Expr, tuple[promql_parser.Expr, ...]]]:
    """Every node with its ancestors, nearest last (Prometheus' parser.Walk)."""
    yield node, parents
    for child in children(node):
        yield from walk(child, (*parents, node))


def selector_name(selector: promql_parser.VectorSelector) -> str:
    if selector.name:
        return selector.name
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return matcher.value
    return ""


def parsed_targets(
    name: str, dash: Dashboard
) -> Iterator[tuple[dict[str, Any], dict[str, Any], promql_parser.Expr]]:
    """Targets that parse (one that does not is target-promql-rule's finding alone)."""
    for panel, target in targets(dash):
        try:
            yield panel, target, parse(target["expr"], dash)
        except ValueError:
            continue


def problem(rule_name: str, name: str, panel: dict[str, Any] | None = None,
            target: dict[str, Any] | None = None, message: str = "") -> Problem:  # fmt: skip
    return Problem(
        rule_name,
        name,
        panel["title"] if panel else "",
        target["refId"] if target else "",
        target["expr"] if target else "",
        message,
    )


# -- dashboard rules ---------------------------------------------------------------------------


@rule("template-datasource-rule")
def template_datasource(name: str, dash: Dashboard) -> Iterator[Problem]:
    """A templated datasource (a `datasource` variable of Prometheus data sources) named
    `datasource` and labeled `Data source` (the linter allows `prometheus_datasource` /
    `Prometheus data source` too; the label is a warning there, an error here)."""
    rule_name = "template-datasource-rule"
    found = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    if not found:
        yield problem(rule_name, name, message="does not have a templated data source")
    for var in found:
        kind = var.get("query", "")
        names = {f"{kind.lower()}_datasource"} | ({"datasource"} if len(found) == 1 else set())
        labels = {f"{kind.title()} data source"} | ({"Data source"} if len(found) == 1 else set())
        if kind != "prometheus":
            yield problem(rule_name, name, message=f"data source variable is of '{kind}'")
        if var["name"] not in names:
            yield problem(rule_name, name, message=f"variable '{var['name']}' not in {names}")
        if var.get("label") not in labels:
            yield problem(rule_name, name, message=f"label '{var.get('label')}' not in {labels}")


def template_problems(dash: Dashboard, var_name: str) -> list[str]:
    """The linter's checkTemplate: a Prometheus query variable on the templated datasource,
    multi-select with the allValue `.+` (and, stricter, "All" offered). Its label is a
    warning in the linter: ours say Server and Target, not Instance, and are not checked."""
    var = variables(dash).get(var_name)
    if var is None:
        return [f"is missing the {var_name} template"]
    errors = []
    if (var.get("datasource") or {}).get("uid") not in DATASOURCE_REFS:
        errors.append(f"{var_name} template should use datasource '$datasource'")
    if var["type"] != "query":
        errors.append(f"{var_name} template should be a Prometheus query, is '{var['type']}'")
    if not var.get("multi"):
        errors.append(f"{var_name} template should be a multi select")
    if not var.get("includeAll"):
        errors.append(f"{var_name} template should offer All")
    if var.get("allValue") != ".+":
        errors.append(f"{var_name} template allValue should be '.+', is '{var.get('allValue')}'")
    return errors


@rule("template-job-rule")
def template_job(name: str, dash: Dashboard) -> Iterator[Problem]:
    for message in template_problems(dash, "job"):
        yield problem("template-job-rule", name, message=message)


@rule("template-instance-rule")
def template_instance(name: str, dash: Dashboard) -> Iterator[Problem]:
    for message in template_problems(dash, "instance"):
        yield problem("template-instance-rule", name, message=message)


@rule("template-label-promql-rule")
def template_label_promql(name: str, dash: Dashboard) -> Iterator[Problem]:
    """Query variables are label_values(selector, label) (or label_names, metrics,
    query_result) of a selector that parses. The linter parses `selector, label` as one
    expression, which Prometheus' parser half accepts; here the selector is parsed alone."""
    for var in variables(dash).values():
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        selector = label_values_selector(query)
        if selector is None:
            yield problem(
                "template-label-promql-rule",
                name,
                message=f"template '{var['name']}' is not label_values: {query}",
            )
            continue
        try:
            parse(selector, dash)
        except ValueError as err:
            yield problem(
                "template-label-promql-rule",
                name,
                message=f"template '{var['name']}' invalid '{query}': {err}",
            )


@rule("template-on-time-change-reload-rule")
def template_on_time_change_reload(name: str, dash: Dashboard) -> Iterator[Problem]:
    for var in variables(dash).values():
        if var["type"] == "query" and var.get("refresh") != 2:
            yield problem(
                "template-on-time-change-reload-rule",
                name,
                message=f"variable '{var['name']}' refresh {var.get('refresh')}, "
                "should be 2 (on time range change)",
            )


# -- panel rules -------------------------------------------------------------------------------


@rule("panel-datasource-rule")
def panel_datasource(name: str, dash: Dashboard) -> Iterator[Problem]:
    """Every panel uses the templated datasource (the linter: graph, singlestat, table and
    timeseries panels; here every panel, and every target of it too)."""
    for panel in content_panels(dash):
        uid = (panel.get("datasource") or {}).get("uid")
        if uid not in DATASOURCE_REFS:
            yield problem(
                "panel-datasource-rule",
                name,
                panel,
                message=f"does not use a templated datasource, uses '{uid}'",
            )
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or {}).get("uid")
            if uid not in DATASOURCE_REFS:
                yield problem(
                    "panel-datasource-rule",
                    name,
                    panel,
                    target,
                    f"target does not use a templated datasource: '{uid}'",
                )


@rule("panel-title-description-rule")
def panel_title_description(name: str, dash: Dashboard) -> Iterator[Problem]:
    """A title and a description on every panel (the linter: stat, singlestat, graph,
    table, timeseries, gauge; here bar gauges and state timelines too), a title on rows."""
    for panel in panels(dash):
        if not panel.get("title") or (panel["type"] != "row" and not panel.get("description")):
            yield problem(
                "panel-title-description-rule",
                name,
                panel,
                message="has a missing title or description",
            )


def configured_unit(panel: dict[str, Any]) -> str:
    """The linter's getConfiguredUnit: an override's unit, else the default one."""
    config = panel.get("fieldConfig", {})
    unit = ""
    for override in config.get("overrides", []):
        for prop in override.get("properties", []):
            if prop["id"] == "unit":
                unit = prop["value"]
    return unit or config.get("defaults", {}).get("unit", "")


def has_value_mappings(panel: dict[str, Any]) -> bool:
    config = panel.get("fieldConfig", {})
    in_overrides = any(
        prop["id"] == "mappings" and prop.get("value")
        for override in config.get("overrides", [])
        for prop in override.get("properties", [])
    )
    return in_overrides or config.get("defaults", {}).get("mappings") is not None


@rule("panel-units-rule")
def panel_units(name: str, dash: Dashboard) -> Iterator[Problem]:
    """A valid unit on every panel (the linter's kinds and, stricter, bar gauges and state
    timelines), except, as in the linter, a panel whose values are mapped to text or a stat
    of non-numeric fields."""
    for panel in content_panels(dash):
        fields = panel.get("options", {}).get("reduceOptions", {}).get("fields", "")
        if has_value_mappings(panel) or (panel["type"] == "stat" and fields):
            continue
        unit = configured_unit(panel)
        if unit not in VALID_UNITS:
            yield problem(
                "panel-units-rule",
                name,
                panel,
                message=f"has no or invalid units defined: '{unit}'",
            )


@rule("panel-no-targets-rule")
def panel_no_targets(name: str, dash: Dashboard) -> Iterator[Problem]:
    for panel in content_panels(dash):
        if not panel.get("targets"):
            yield problem("panel-no-targets-rule", name, panel, message="has no targets")


# -- target rules ------------------------------------------------------------------------------


@rule("target-promql-rule")
def target_promql(name: str, dash: Dashboard) -> Iterator[Problem]:
    for panel, target in targets(dash):
        if not target.get("expr"):
            yield problem("target-promql-rule", name, panel, target, "empty query")
            continue
        try:
            parse(target["expr"], dash)
        except ValueError as err:
            yield problem("target-promql-rule", name, panel, target, f"invalid PromQL: {err}")


@rule("target-rate-interval-rule")
def target_rate_interval(name: str, dash: Dashboard) -> Iterator[Problem]:
    """rate() and irate() over `$__rate_interval` (the linter); stricter, increase() too,
    or over `$__range` (a total over the dashboard's time range; the linter lets increase()
    take any range)."""
    allowed = {
        "rate": {RATE_INTERVAL},
        "irate": {RATE_INTERVAL},
        "increase": {RATE_INTERVAL, RANGE},
    }
    for panel, target, expr in parsed_targets(name, dash):
        for node, parents in walk(expr):
            if not isinstance(node, promql_parser.MatrixSelector) or not parents:
                continue
            call = parents[-1]
            if not isinstance(call, promql_parser.Call) or call.func.name not in allowed:
                continue
            if node.range not in allowed[call.func.name]:
                yield problem(
                    "target-rate-interval-rule",
                    name,
                    panel,
                    target,
                    f"{call.func.name}() should use $__rate_interval",
                )


def required_matcher_rule(label: str) -> Rule:
    """The linter's target-job-rule / target-instance-rule: every selector of every query
    has exactly `label=~"$label"`."""
    rule_name = f"target-{label}-rule"

    def check(name: str, dash: Dashboard) -> Iterator[Problem]:
        for panel, target, expr in parsed_targets(name, dash):
            for node, _ in walk(expr):
                if not isinstance(node, promql_parser.VectorSelector):
                    continue
                matchers = [m for m in node.matchers.matchers if m.name == label]
                if not any(
                    m.op == promql_parser.MatchOp.Re and m.value == f"${label}" for m in matchers
                ):
                    yield problem(
                        rule_name,
                        name,
                        panel,
                        target,
                        f'{selector_name(node)}: no {label}=~"${label}"',
                    )

    RULES[rule_name] = check
    return check


required_matcher_rule("job")
required_matcher_rule("instance")


@rule("target-counter-agg-rule")
def target_counter_agg(name: str, dash: Dashboard) -> Iterator[Problem]:
    """A counter is read only as rate(), irate() or increase() of its range. The linter
    tests the selector's text (`foo_total{…}` does not end in _total, so it only catches
    bare names); here the metric name, with histogram and summary series as counters."""
    for panel, target, expr in parsed_targets(name, dash):
        for node, parents in walk(expr):
            if not isinstance(node, promql_parser.VectorSelector):
                continue
            metric = selector_name(node)
            if not metric.endswith(COUNTER_SUFFIXES):
                continue
            ok = (
                len(parents) >= 2
                and isinstance(parents[-1], promql_parser.MatrixSelector)
                and isinstance(parents[-2], promql_parser.Call)
                and parents[-2].func.name in COUNTER_FUNCTIONS
            )
            if not ok:
                yield problem(
                    "target-counter-agg-rule",
                    name,
                    panel,
                    target,
                    f"counter '{metric}' not in rate, irate or increase",
                )


# -- waivers -----------------------------------------------------------------------------------

#: (rule, dashboard, panel title, refId) -> why the rule does not fit that query.
EXCLUSIONS = {
    ("target-counter-agg-rule", "users-and-sessions.json", "L2TP/IPsec sessions", "C"):
        "the bytes a ppp session has carried so far: the interface's counter lives exactly "
        "as long as the session it belongs to",
    ("target-counter-agg-rule", "users-and-sessions.json", "L2TP/IPsec sessions", "D"):
        "the bytes a ppp session has carried so far (sent)",
    ("target-counter-agg-rule", "users-and-sessions.json", "IPsec users", "B"):
        "a user's bytes across rekeys and reconnects since the exporter started: the "
        "table's point is the running total",
    ("target-counter-agg-rule", "users-and-sessions.json", "IPsec users", "C"):
        "a user's bytes across rekeys and reconnects (sent)",
    ("target-counter-agg-rule", "users.json", "Who is on now", "E"):
        "a connected login's bytes since the exporter started, beside its rate: a total",
    ("target-counter-agg-rule", "users.json", "Who is on now", "F"):
        "a connected login's bytes since the exporter started (sent)",
}  # fmt: skip


def lint(name: str, dash: Dashboard, rules: list[str] | None = None) -> list[Problem]:
    return [p for r in rules or list(RULES) for p in RULES[r](name, dash)]


def waived(p: Problem) -> bool:
    return (p.rule, p.dashboard, p.panel, p.ref) in EXCLUSIONS


# -- the dashboards ----------------------------------------------------------------------------


@pytest.mark.parametrize("rule_name", sorted(RULES))
@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_passes_rule(path: Path, rule_name: str) -> None:
    problems = [p for p in lint(path.name, load(path), [rule_name]) if not waived(p)]
    assert not problems, "\n".join(str(p) for p in problems)


def test_every_exclusion_is_needed() -> None:
    """A waiver names a query that exists and breaks its rule (else it hides nothing)."""
    found = {
        (p.rule, p.dashboard, p.panel, p.ref)
        for path in DASHBOARD_FILES
        for p in lint(path.name, load(path))
    }
    stale = set(EXCLUSIONS) - found
    assert not stale, f"waivers that hide nothing: {sorted(stale)}"


def test_rules_cover_the_queries() -> None:
    """The walk reaches the queries' selectors (a walk that stopped early would pass)."""
    seen = 0
    for path in DASHBOARD_FILES:
        dash = load(path)
        for _, _, expr in parsed_targets(path.name, dash):
            seen += sum(isinstance(n, promql_parser.VectorSelector) for n, _ in walk(expr))
    assert seen > 120


# -- each rule fails on a dashboard broken for it ----------------------------------------------

SEL = 'job=~"$job", instance=~"$instance"'
GOOD_EXPR = f"sum by (instance) (rate(foo_total{{{SEL}}}[$__rate_interval]))"
DS = {"type": "prometheus", "uid": "${datasource}"}


def good_dashboard() -> Dashboard:
    def query_variable(var_name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "name": var_name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": var_name}, "refresh": 2, "multi": True,
            "includeAll": True, "allValue": ".+",
        }  # fmt: skip

    target = {"datasource": DS, "refId": "A", "expr": GOOD_EXPR}
    return {
        "templating": {
            "list": [
                {"name": "datasource", "label": "Data source", "type": "datasource",
                 "query": "prometheus"},
                query_variable("job", "Job", "label_values(up, job)"),
                query_variable("instance", "Instance", 'label_values(up{job=~"$job"}, instance)'),
            ]
        },
        "panels": [
            {"type": "row", "title": "Traffic", "panels": []},
            {"type": "timeseries", "title": "Rate", "description": "Foos per second.",
             "datasource": DS, "targets": [target], "fieldConfig": {"defaults": {"unit": "ops"}}},
        ],
    }  # fmt: skip


def set_path(dash: Dashboard, path: str, value: Any) -> Dashboard:
    """A copy of `dash` with `path` ("panels.1.targets.0.expr") set to `value` (None:
    removed)."""
    dash = copy.deepcopy(dash)
    *keys, last = path.split(".")
    node: Any = dash
    for key in keys:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return dash


def expr(text: str) -> tuple[str, str]:
    return "panels.1.targets.0.expr", text


NEGATIVE_CASES: list[tuple[str, str, tuple[str, Any]]] = [
    ("template-datasource-rule", "no datasource variable", ("templating.list.0", None)),
    ("template-datasource-rule", "renamed", ("templating.list.0.name", "ds")),
    ("template-job-rule", "no job variable", ("templating.list.1", None)),
    ("template-job-rule", "allValue .*", ("templating.list.1.allValue", ".*")),
    ("template-job-rule", "single select", ("templating.list.1.multi", False)),
    ("template-job-rule", "hard-coded data source",
     ("templating.list.1.datasource", {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"})),
    ("template-instance-rule", "custom variable", ("templating.list.2.type", "custom")),
    ("template-instance-rule", "no All", ("templating.list.2.includeAll", False)),
    ("template-label-promql-rule", "broken selector",
     ("templating.list.2.query", {"query": "label_values(up{job=~}, instance)"})),
    ("template-on-time-change-reload-rule", "refresh on load", ("templating.list.2.refresh", 1)),
    ("panel-datasource-rule", "panel data source UID",
     ("panels.1.datasource", {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"})),
    ("panel-datasource-rule", "target data source UID",
     ("panels.1.targets.0.datasource", {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"})),
    ("panel-title-description-rule", "no description", ("panels.1.description", "")),
    ("panel-title-description-rule", "no title", ("panels.1.title", "")),
    ("panel-units-rule", "no unit", ("panels.1.fieldConfig.defaults.unit", None)),
    ("panel-units-rule", "unknown unit", ("panels.1.fieldConfig.defaults.unit", "furlongs")),
    ("panel-no-targets-rule", "no targets", ("panels.1.targets", [])),
    ("target-promql-rule", "unbalanced",
     expr('sum(rate(foo_total{job=~"$job"}[$__rate_interval])')),
    ("target-rate-interval-rule", "fixed range", expr(f"rate(foo_total{{{SEL}}}[5m])")),
    ("target-rate-interval-rule", "irate over $__interval",
     expr(f"irate(foo_total{{{SEL}}}[$__interval])")),
    ("target-rate-interval-rule", "increase over a fixed range",
     expr(f"increase(foo_total{{{SEL}}}[1h])")),
    ("target-job-rule", "no job matcher",
     expr('rate(foo_total{instance=~"$instance"}[$__rate_interval])')),
    ("target-job-rule", "job equal, not regex",
     expr('rate(foo_total{job="$job", instance=~"$instance"}[$__rate_interval])')),
    ("target-job-rule", "second selector without",
     expr(f'foo{{{SEL}}} * on (instance) group_left bar{{instance=~"$instance"}}')),
    ("target-instance-rule", "no instance matcher",
     expr('rate(foo_total{job=~"$job"}[$__rate_interval])')),
    ("target-instance-rule", "another variable",
     expr('rate(foo_total{job=~"$job", instance=~"$server"}[$__rate_interval])')),
    ("target-counter-agg-rule", "raw counter", expr(f"sum(foo_total{{{SEL}}})")),
    ("target-counter-agg-rule", "counter in delta",
     expr(f"delta(foo_total{{{SEL}}}[$__rate_interval])")),
    ("target-counter-agg-rule", "histogram bucket",
     expr(f"histogram_quantile(0.9, foo_bucket{{{SEL}}})")),
]  # fmt: skip


def test_the_good_dashboard_passes() -> None:
    assert lint("good.json", good_dashboard()) == []


def test_every_rule_has_a_negative_case() -> None:
    assert {r for r, _, _ in NEGATIVE_CASES} == set(RULES)


@pytest.mark.parametrize(
    ("rule_name", "change"),
    [(r, c) for r, _, c in NEGATIVE_CASES],
    ids=[f"{r}:{what}" for r, what, _ in NEGATIVE_CASES],
)
def test_rule_fails_on_a_broken_dashboard(rule_name: str, change: tuple[str, Any]) -> None:
    broken = set_path(good_dashboard(), *change)
    problems = lint("broken.json", broken)
    assert {p.rule for p in problems} == {rule_name}, "\n".join(map(str, problems)) or "passed"
    for p in problems:
        assert str(p).startswith(f"{rule_name}: broken.json"), p
        if p.ref:  # target rules name the panel, the query and the rule
            assert "panel 'Rate' [A], query `" in str(p), p


def test_a_problem_names_dashboard_panel_query_and_rule() -> None:
    p = Problem("target-job-rule", "overview.json", "Exporter", "A", "up", "no job")
    assert str(p) == "target-job-rule: overview.json, panel 'Exporter' [A], query `up`: no job"


def test_expansion_keeps_variables_inside_strings() -> None:
    dash = good_dashboard()
    text = 'increase(a{job=~"$job"}[$__range]) and rate(b[${__rate_interval}])'
    assert expand(text, dash) == 'increase(a{job=~"$job"}[98765s]) and rate(b[4321s])'
