"""The PromQL of the Grafana dashboards, as Grafana would send it.

Standard library only, so a test can run it where the repository's test dependencies are
not installed (`python3 tests/dashboard_queries.py users.json` prints the queries as JSON).

    from tests.dashboard_queries import dashboard_queries
    for where, expr in dashboard_queries("users.json", {"__range": "15m"}):
        prometheus.query(expr)

Every panel target and the series selector of every `label_values()` variable, with the
dashboard variables replaced by VARIABLE_VALUES (every multi-value variable by its "All"
regex, the time ranges by fixed windows), or by the values given.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"

#: What Grafana puts in for its variables, for running a query outside Grafana: every
#: multi-value variable as its "All" regex, the time ranges as fixed windows.
VARIABLE_VALUES = {
    "__rate_interval": "20s",
    "__interval": "5s",
    "__range": "10m",
    "job": ".+",  # the allValue of job and instance (grafana/dashboard-linter)
    "instance": ".+",
    "conn": ".*",
    "module": ".*",
    "user": ".*",
    "required": "site-.*|peer-.*|peering-.*",
}


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


def substitute(expr: str, values: Mapping[str, str] | None = None) -> str:
    """The query as Grafana sends it, with `values` over VARIABLE_VALUES."""
    table = {**VARIABLE_VALUES, **(values or {})}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in table:
            raise KeyError(f"unknown dashboard variable ${name} in {expr}")
        return table[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def dashboard_queries(
    name: str = "users.json", values: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """(where, PromQL ready for Prometheus) of every query of dashboards/`name`: panel
    title and refId (or `variable $name`), the query with its variables substituted."""
    return [(where, substitute(expr, values)) for where, expr in queries(load(DASHBOARDS / name))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dashboard", nargs="?", default="users.json", help="file in dashboards/")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a variable's value"
    )
    args = parser.parse_args(argv)
    values = dict(item.split("=", 1) for item in args.set)
    found = dashboard_queries(args.dashboard, values)
    json.dump([{"where": w, "expr": e} for w, e in found], sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
