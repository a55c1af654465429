"""Static checks of the Grafana dashboards (and the metric names the alert rules use).

Importable, provisioning-ready, current schema; every panel on the `${datasource}`
variable; unique panel ids; every query parses (promtool) and names only metrics the
exporter writes (golden exposition files, the ledger's and prober's families, the Libreswan
collector's). The daemon panels serve a Libreswan server too: every query that reads
strongswan_* reads libreswan_* as well (or is listed as strongSwan-only with a reason), and
promtool evaluates each of them on what Prometheus stores from a Libreswan server's
exporter. The live tests run the same queries on a real Prometheus: with a charon lab
(tests/integration/test_dashboards_live.py) and with Libreswan-shaped scrapes
(tests/integration/test_prometheus_libreswan.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.dashboard_queries import VARIABLE_VALUES, load, panels, queries, variables
from tests.dashboard_queries import dashboard_queries as dashboard_queries  # the live tests'
from tests.dashboard_queries import substitute as substitute  # the live tests'

if TYPE_CHECKING:
    from prometheus_client.core import Metric

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "dashboards"
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))
EXPECTED_UIDS = {
    "overview.json": "l2tp-ipsec-overview",
    "users-and-sessions.json": "l2tp-ipsec-users",
    "users.json": "l2tp-ipsec-logins",
    "probes.json": "l2tp-ipsec-probes",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
MIN_SCHEMA_VERSION = 39

PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


# -- reading dashboards: tests/dashboard_queries.py ---------------------------------------


def all_queries() -> list[tuple[str, str, str]]:
    return [(p.name, where, expr) for p in DASHBOARD_FILES for where, expr in queries(load(p))]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a small tokenizer, enough for ours)."""
    names: set[str] = set()
    for match in re.finditer(r'__name__=~?"([a-zA-Z0-9_:|]+)"', expr):
        names.update(match.group(1).split("|"))  # {__name__=~"a|b"}: plain alternatives
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
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


def libreswan_families(
    drops: int = 0, established: int = 3, peer_up: bool = True, peer_drops: int = 0
) -> list[Metric]:
    """What the Libreswan collector writes for a small server shaped like hwdsl2's setup
    (the l2tp-psk and xauth-psk templates, L2TP/IPsec clients) plus a peering link
    `peer-nyc`, per-SA details and per-user metrics on: the collector's own rendering of a
    pluto snapshot and ledger readings. `drops` tunnels of l2tp-psk have gone down,
    `established` of its clients are connected, `peer_up` says whether peer-nyc is and
    `peer_drops` how often it went down."""
    from exporter.collectors.libreswan import global_counters, render, render_ledger, up_family
    from exporter.collectors.limits import SeriesLimiter
    from exporter.libreswan.ledger import LedgerReadings, Traffic
    from exporter.libreswan.model import Connection, IkeSa, IpsecSa, PlutoSnapshot
    from exporter.libreswan.options import LibreswanOptions

    # (connection, instance, peer, IKE serial): serials of IPsec SAs follow their IKE SA's.
    tunnels: list[tuple[str, int | None, str, int]] = [
        ("l2tp-psk", n + 1, f"192.168.77.{11 + n}", 2 * n + 1) for n in range(established)
    ]
    if peer_up:
        tunnels.append(("peer-nyc", None, "203.0.113.9", 90))
    ike = [
        IkeSa(serial, conn, inst, peer, 500, "STATE_MAIN_R3", "ikev1", established=True)
        for conn, inst, peer, serial in tunnels
    ]
    ipsec = [
        IpsecSa(
            serial + 1, conn, inst, peer, None, peer, None, 1.796e9 + serial, 1000 * serial,
            2000 * serial, ike_serial=serial, state="STATE_QUICK_R2",
        )
        for conn, inst, peer, serial in tunnels
    ]  # fmt: skip
    connections = [
        Connection("l2tp-psk", None, "template", "ikev1", 0, 0),
        Connection("xauth-psk", None, "template", "ikev1", 0, 0),
        Connection("peer-nyc", None, "permanent", "ikev1", 90 * peer_up, 91 * peer_up),
    ]
    connections += [
        Connection(conn, inst, "instance", "ikev1", serial, serial + 1)
        for conn, inst, _, serial in tunnels
        if inst is not None
    ]
    counters = {
        "total.ike.ikev1.established": 4 + drops, "total.ike.ikev1.failed": 1,
        "total.ike.dpd.sent": 15, "total.ike.dpd.recv": 15, "total.ike.dpd.replied": 2,
        "total.ike.traffic.in": 4464, "total.ike.traffic.out": 4116,
        "current.states.iketype.halfopen": 0,
    }  # fmt: skip
    snapshot = PlutoSnapshot(1.796e9, "5.2", tuple(ipsec), tuple(ike), tuple(connections), counters)
    readings = LedgerReadings(
        events={
            ("l2tp-psk", "up"): 3 + drops,
            ("l2tp-psk", "down"): drops,
            ("peer-nyc", "up"): 1 + peer_drops,
            ("peer-nyc", "down"): peer_drops,
        },
        connection_traffic={"l2tp-psk": Traffic(6000, 12000), "peer-nyc": Traffic(5, 7)},
        user_traffic={("l2tp-psk", peer): Traffic(1000, 2000) for _, _, peer, _ in tunnels},
        last_change={"l2tp-psk": 1.796e9, "peer-nyc": 1.796e9},
        untracked_users=0,
        global_counters=counters,
    )
    options = LibreswanOptions(sa_details=True, user_metrics=True)
    limiter = SeriesLimiter(1000)
    families = [
        up_family(True),
        *render(snapshot, options, limiter),
        *global_counters(readings.global_counters),
    ]
    return families + render_ledger(readings, snapshot, options, limiter)


def stored_series(families: list[Metric], job: str, instance: str) -> list[tuple[str, bool]]:
    """(series as promtool writes it, is a counter) for what Prometheus stores when it
    scrapes `families` as target `instance` of `job`: its own job and instance labels, the
    exporter's own `instance` label, if one had any, kept as `exported_instance`, empty
    labels gone."""
    out = []
    for family in families:
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if v != ""}
            if "instance" in labels:
                labels["exported_instance"] = labels.pop("instance")
            labels = {"job": job, "instance": instance, **labels}
            matchers = ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
            out.append((f"{sample.name}{{{matchers}}}", family.type == "counter"))
    return out


def _libreswan_names() -> set[str]:
    families = libreswan_families()
    return _family_names(families) | {s.name for f in families for s in f.samples}


def exporter_metric_names() -> set[str]:
    return _golden_names() | _ledger_names() | _source_names() | _libreswan_names() | {"up"}


# -- tests -------------------------------------------------------------------------------------


def test_the_dashboards_exist() -> None:
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
        assert var[name]["includeAll"] and var[name]["allValue"] == ".+"  # dashboard-linter


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


#: Grafana's $__rate_interval is at least four scrape intervals (15 s: Prometheus's usual).
RATE_WINDOW = 4 * 15.0


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_rates_of_listed_counters_need_no_min_interval(path: Path) -> None:
    """A rate over a counter that moves once per listing needs two listings in its
    window, else the panel draws zeros and spikes. With the kernel's counts (kernel-netlink)
    these counters move at every scrape; without them (kernel-libipsec) a small server is
    listed every --collector.strongswan.sa-refresh-min by default: two of those fit in
    $__rate_interval, so the traffic panels set no min interval of their own (one of 4m
    made every server's traffic a 4-minute staircase)."""
    from exporter.config import StrongswanOptions

    options = StrongswanOptions()
    assert options.sa_refresh_interval is None, "the listing interval is auto by default"
    assert 2 * options.sa_refresh_min <= RATE_WINDOW
    found = 0
    for panel in panels(load(path)):
        if any(LISTED_COUNTERS.search(t["expr"]) for t in panel.get("targets", [])):
            found += 1
            interval = panel.get("interval", "")
            assert not interval or seconds(interval) <= RATE_WINDOW, panel["title"]
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


#: The two dashboards of servers: their daemon panels serve charon and pluto alike.
SERVER_DASHBOARDS = ("overview.json", "users-and-sessions.json")

#: Queries of SERVER_DASHBOARDS that read strongSwan only, and why.
STRONGSWAN_ONLY = {
    "charon uptime [A]": "pluto does not say when it started",
    "Drops, rekeys and new SAs per minute [A]": "charon's IKE SA events; pluto's are counted "
    "per tunnel (IPsec SAs), drawn by [B]",
    "Pool usage [A]": "charon's address pools; Libreswan's L2TP clients get xl2tpd's ip range",
    "Certificates: time left [A]": "the Libreswan collector does not read pluto's certificates",
    "Worker threads and job queue [A]": "charon's thread pool; pluto has no such counters",
    "Worker threads and job queue [B]": "charon's job queue",
    "Worker threads and job queue [C]": "charon's scheduler",
    "IKE messages and invalid ones [B]": "charon's counters plugin",
    "IKE messages and invalid ones [C]": "charon's counters plugin",
    "Collectors [B]": "charon's event stream; pluto is asked at each scrape, there is no stream",
}


def server_queries() -> list[tuple[str, str, str]]:
    return [q for q in all_queries() if q[0] in SERVER_DASHBOARDS]


def reads(expr: str, prefix: str) -> bool:
    return any(name.startswith(prefix) for name in metric_names(substitute(expr)))


def test_every_strongswan_query_serves_libreswan_too() -> None:
    """Each query of the server dashboards that reads strongswan_* also reads libreswan_*
    (`or`), unless it is listed strongSwan-only with its reason."""
    wheres = {where for _, where, _ in server_queries()}
    assert set(STRONGSWAN_ONLY) <= wheres, "STRONGSWAN_ONLY names a gone query"
    for dashboard, where, expr in server_queries():
        if reads(expr, "strongswan_") and where not in STRONGSWAN_ONLY:
            assert reads(expr, "libreswan_"), f"{dashboard} {where} reads strongSwan only"
        if where in STRONGSWAN_ONLY:
            assert not reads(expr, "libreswan_"), f"{where} is not strongSwan-only any more"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing")
@pytest.mark.promtool
def test_daemon_queries_have_data_for_a_libreswan_server(tmp_path: Path) -> None:
    """promtool evaluates every daemon query of the server dashboards (all but the
    strongSwan-only ones) on what Prometheus stores from a Libreswan server's exporter,
    rendered by the Libreswan collector: each returns at least one series. The same
    queries with data from charon: tests/integration/test_dashboards_live.py."""
    checked = [
        (f"{dashboard}: {where}", substitute(expr))
        for dashboard, where, expr in server_queries()
        if (reads(expr, "strongswan_") or reads(expr, "libreswan_"))
        and where not in STRONGSWAN_ONLY
    ]
    assert len(checked) > 20
    series = stored_series(libreswan_families(), "l2tp-ipsec", "vpn3:9945")
    inputs = [{"series": s, "values": "100+1x120" if counter else "1x120"} for s, counter in series]
    assert_queries_have_data(checked, inputs, tmp_path)


def assert_queries_have_data(
    checked: list[tuple[str, str]], inputs: list[dict[str, str]], tmp_path: Path
) -> None:
    """promtool evaluates each (where, query) at 10m of `inputs` (promtool input series,
    10 s apart): every query must return at least one series."""
    rules = [
        {"alert": "DashboardQueryHasData", "expr": f"count({expr}) > 0", "labels": {"where": where}}
        for where, expr in checked
    ]
    (tmp_path / "queries.rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]})
    )
    case = {
        "interval": "10s",
        "input_series": inputs,
        "alert_rule_test": [
            {
                "eval_time": "10m",
                "alertname": "DashboardQueryHasData",
                "exp_alerts": [{"exp_labels": {"where": where}} for where, _ in checked],
            }
        ],
    }
    test_file = tmp_path / "dashboards-have-data.yml"
    suite = {"rule_files": ["queries.rules.yml"], "evaluation_interval": "10s", "tests": [case]}
    test_file.write_text(yaml.safe_dump(suite))
    result = subprocess.run(
        ["promtool", "test", "rules", test_file.name],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr


def users_families() -> list[Metric]:
    """What the users collector writes for a server with the logins alice (two sessions
    now), bob (logged out), peer-sn1 (a required login, connected) and the required login
    peer-sn2 (never seen): the collector's own rendering of a ledger view."""
    from exporter.collectors.limits import SeriesLimiter
    from exporter.collectors.users import render_users
    from exporter.logins.model import LoginsView, LoginTotals

    def totals(login: str, sessions: int, logins: int, logged_out: bool) -> LoginTotals:
        return LoginTotals(
            login, sessions, logins, logins - sessions, 3600.0 * logins, 10**6 * logins,
            10**7 * logins, 10**3 * logins, 10**4 * logins, 1.796e9 + logins,
            1.796e9 if logged_out else None, 1.795e9,
        )  # fmt: skip

    view = LoginsView(
        at=1.796e9,
        live=(),
        ended=(),
        totals=(
            totals("alice", 2, 5, True),
            totals("bob", 0, 1, True),
            totals("peer-sn1", 1, 3, True),
        ),
        required=(("peer-sn1", True), ("peer-sn2", False)),
        without_login=1,
    )
    return render_users(view, SeriesLimiter(1000), {}, created=lambda family: False)


def users_series() -> list[dict[str, str]]:
    """promtool input series of what Prometheus stores, 10 s apart, from users_families()
    on a strongSwan server: gauges stay, every counter moves."""
    inputs = [
        {"series": 'strongswan_up{job="l2tp-ipsec", instance="vpn1:9945"}', "values": "1x60"}
    ]  # the $job and $instance lists
    for family in users_families():
        for sample in family.samples:
            labels = {"job": "l2tp-ipsec", "instance": "vpn1:9945", **sample.labels}
            matchers = ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
            step = "+7" if family.type == "counter" else ""
            inputs.append(
                {"series": f"{sample.name}{{{matchers}}}", "values": f"{sample.value:g}{step}x60"}
            )
    return inputs


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing")
@pytest.mark.promtool
def test_users_dashboard_queries_have_data(tmp_path: Path) -> None:
    """promtool evaluates every query of the Users dashboard (dashboard_queries, as the
    guest's live test runs them) on what Prometheus stores from the users collector: each
    returns at least one series (who is on: alice; required logins: both peers)."""
    checked = [(f"users.json: {where}", expr) for where, expr in dashboard_queries("users.json")]
    assert len(checked) > 20
    assert_queries_have_data(checked, users_series(), tmp_path)


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
