#!/usr/bin/env python3
"""Write the Grafana dashboards (dashboards/*.json) from the panel lists below.

    python3 dashboards/generate.py           # rewrite the JSON files
    python3 dashboards/generate.py --check   # exit 1 when a committed file is stale

Code, not hand-edited JSON: every panel gets the `${datasource}` variable, a unique id and
a grid position without anyone counting; the queries sit together, one line each, where a
reviewer reads them; tests/test_dashboards.py checks the committed JSON is what this
script makes. Only the standard library is needed.
"""

# One PromQL query per line reads (and diffs) better than queries broken across lines.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39  # Grafana 11
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: The connections that must always be up; the same default as alerts/thresholds.yml.
REQUIRED_CONNECTIONS = "site-.*|peer-.*|peering-.*"

#: The IKE daemon's up series: strongSwan's or Libreswan's (a server exports one of them).
DAEMON_UP = '__name__=~"strongswan_up|libreswan_up"'

# Label matchers every exporter query carries.
SEL = 'job=~"$job", instance=~"$instance"'
CONN = f'{SEL}, conn=~"$conn"'
PROBE = 'job=~"$job", instance=~"$instance", module=~"$module"'
RATE = "[$__rate_interval]"
#: Panels over strongSwan counters that move at every scrape with the kernel's counts
#: (kernel-netlink), and at each background listing without them (kernel-libipsec: a
#: small server every 10 s by default, a large one less often).
LISTED_NOTE = " strongSwan: fresh at every scrape where the kernel holds the SAs (kernel-netlink); with kernel-libipsec they move at each background listing (--collector.strongswan.sa-refresh-interval)."


@dataclass
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def instant(expr: str, legend: str = "") -> Query:
    return Query(expr, legend, instant=True, table=True)


@dataclass
class Panel:
    kind: str  # timeseries, stat, table, bargauge, state-timeline, row
    title: str
    queries: list[Query] = field(default_factory=list)
    width: int = 12
    height: int = 8
    unit: str = "short"
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    transformations: list[dict[str, Any]] = field(default_factory=list)
    #: Grafana's "Min interval": the smallest step (and $__interval) of the queries.
    min_interval: str = ""


def row(title: str) -> Panel:
    return Panel("row", title, width=24, height=1)


def timeseries(title: str, *queries: Query, unit: str = "short", **kw: Any) -> Panel:
    return Panel("timeseries", title, list(queries), unit=unit, **kw)


def stat(title: str, *queries: Query, unit: str = "short", width: int = 4, **kw: Any) -> Panel:
    kw.setdefault("height", 4)
    return Panel("stat", title, list(queries), width=width, unit=unit, **kw)


def table(title: str, *queries: Query, **kw: Any) -> Panel:
    return Panel("table", title, list(queries), **kw)


UP_DOWN = [
    {
        "type": "value",
        "options": {
            "0": {"text": "DOWN", "color": "red", "index": 0},
            "1": {"text": "UP", "color": "green", "index": 1},
        },
    }
]


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def merge_tables(hide: list[str], rename: dict[str, str]) -> list[dict[str, Any]]:
    """Join the instant queries of a table on their common labels; tidy the columns."""
    return [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {
                "excludeByName": {name: True for name in ["Time", *hide]},
                "renameByName": rename,
            },
        },
    ]


# -- variables --------------------------------------------------------------------------------


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
    }


def query_variable(
    name: str, label: str, query: str, *, multi: bool = True, all_value: str = ".*"
) -> dict[str, Any]:
    """A multi-select query variable with "All". `all_value` is what "All" sends: `.+` for
    job and instance (grafana/dashboard-linter's template-job-rule and
    template-instance-rule; every series has both labels), `.*` for the others."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "current": {},
        "hide": 0,
        "refresh": 2,  # on time range change: servers and connections come and go
        "includeAll": multi,
        "multi": multi,
        "allValue": all_value if multi else None,
        "sort": 1,
        "regex": "",
    }


def textbox_variable(name: str, label: str, default: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "textbox",
        "query": default,
        "current": {"text": default, "value": default},
        "options": [{"selected": True, "text": default, "value": default}],
        "description": description,
        "hide": 0,
    }


def server_variables() -> list[dict[str, Any]]:
    return [
        datasource_variable(),
        query_variable("job", "Job", f"label_values({{{DAEMON_UP}}}, job)", all_value=".+"),
        query_variable(
            "instance",
            "Server",
            f'label_values({{{DAEMON_UP}, job=~"$job"}}, instance)',
            all_value=".+",
        ),
    ]


# -- dashboards -------------------------------------------------------------------------------


def overview() -> tuple[dict[str, Any], list[Panel]]:
    bits = "bps"
    panels = [
        row("Now"),
        stat("Exporter", q(f"up{{{SEL}}}", "{{instance}}"), defaults={"mappings": UP_DOWN},
             description="Prometheus scrapes the exporter (up)."),
        stat("IKE daemon", q(f"strongswan_up{{{SEL}}} or libreswan_up{{{SEL}}}", "{{instance}}"),
             defaults={"mappings": UP_DOWN},
             description="The exporter talks to the IKE daemon: charon (strongSwan) over VICI, or pluto (Libreswan) through its ipsec commands."),
        stat("Users connected", q(f"count(strongswan_user_sessions{{{SEL}}} > 0 or libreswan_user_sessions{{{SEL}}} > 0) or vector(0)"),
             description="Distinct users with an established IKE SA (strongSwan) or IPsec tunnel (Libreswan)."),
        stat("IKE SAs", q(f"sum(strongswan_connection_established{{{SEL}}} or libreswan_connection_established{{{SEL}}})"),
             description="Established IKE SAs, charon's or pluto's."),
        stat("L2TP sessions", q(f"sum(l2tp_sessions{{{SEL}}})"),
             description="Kernel L2TP sessions (ppp over L2TP over IPsec)."),
        stat("charon uptime", q(f"time() - strongswan_start_time_seconds{{{SEL}}}", "{{instance}}"),
             unit="s", description="strongSwan only: pluto does not tell when it started."),
        row("Traffic"),
        timeseries(
            "Throughput per server",
            q(f'sum by (instance) (rate(strongswan_child_sa_bytes_total{{{SEL}, direction="in"}}{RATE}) or rate(libreswan_connection_bytes_total{{{SEL}, direction="in"}}{RATE})) * 8', "{{instance}} in"),
            q(f'-sum by (instance) (rate(strongswan_child_sa_bytes_total{{{SEL}, direction="out"}}{RATE}) or rate(libreswan_connection_bytes_total{{{SEL}, direction="out"}}{RATE})) * 8', "{{instance}} out"),
            unit=bits, description="Through all CHILD SAs (strongSwan) or IPsec SAs (Libreswan), rekeys included; out is drawn below zero." + LISTED_NOTE,
        ),
        timeseries(
            "Throughput per connection",
            q(f"sum by (instance, conn, direction) (rate(strongswan_child_sa_bytes_total{{{SEL}}}{RATE}) or rate(libreswan_connection_bytes_total{{{SEL}}}{RATE})) * 8", "{{conn}} {{direction}} ({{instance}})"),
            unit=bits, description=LISTED_NOTE.strip(),
        ),
        timeseries(
            "Users and tunnels",
            q(f"sum by (instance) (strongswan_connection_established{{{SEL}}} or libreswan_connection_established{{{SEL}}})", "IKE SAs {{instance}}"),
            q(f'sum by (instance) (strongswan_child_sas{{{SEL}, state="INSTALLED"}} or libreswan_ipsec_sas{{{SEL}}})', "CHILD/IPsec SAs {{instance}}"),
            q(f"sum by (instance) (l2tp_tunnels{{{SEL}}})", "L2TP tunnels {{instance}}"),
            q(f"sum by (instance) (ppp_interfaces{{{SEL}}})", "ppp interfaces {{instance}}"),
            description="Per server over time: established IKE SAs, installed CHILD SAs (Libreswan: IPsec SAs), kernel L2TP tunnels and ppp interfaces (one per connected L2TP client).",
        ),
        timeseries(
            "Drops, rekeys and new SAs per minute",
            q(f"sum by (instance, event) (rate(strongswan_ike_sa_events_total{{{SEL}}}{RATE})) * 60", "IKE {{event}} {{instance}}"),
            q(f"sum by (instance, event) (rate(strongswan_child_sa_events_total{{{SEL}}}{RATE}) or rate(libreswan_ipsec_sa_events_total{{{SEL}}}{RATE})) * 60", "CHILD/IPsec {{event}} {{instance}}"),
            unit="short", description="down = an SA that went away without a replacement (a drop); rekey includes reauthentication. Libreswan counts tunnels (the IPsec SAs of one connection instance and peer): its drops are the ones the alerts count.",
        ),
        row("Capacity"),
        Panel(
            "bargauge", "Pool usage",
            [instant(f'sum without (state) (strongswan_pool_addresses{{{SEL}, state="online"}}) / (strongswan_pool_size{{{SEL}}} > 0)', "{{pool}} ({{instance}})")],
            width=8, unit="percentunit",
            defaults={"min": 0, "max": 1, "thresholds": thresholds((None, "green"), (0.75, "yellow"), (0.9, "red"))},
            options={"displayMode": "gradient", "orientation": "horizontal"},
            description="Online leases / pool size. Offline leases are handed out again when the pool is full. strongSwan only.",
        ),
        table(
            "Certificates: time left",
            instant(f"strongswan_certificate_expiry_timestamp_seconds{{{SEL}}} - time()"),
            width=16, unit="s", description="Certificates charon holds (strongSwan only).",
            defaults={"thresholds": thresholds((None, "red"), (3 * 86400, "orange"), (21 * 86400, "green")),
                      "custom": {"cellOptions": {"type": "color-background"}}},
            transformations=merge_tables(["__name__", "job"], {"Value": "time left"}),
        ),
        row("Daemon load"),
        timeseries(
            "Worker threads and job queue",
            q(f"sum by (instance, state) (strongswan_workers{{{SEL}}})", "workers {{state}} {{instance}}"),
            q(f"sum by (instance, priority) (strongswan_job_queue{{{SEL}}})", "queued {{priority}} {{instance}}"),
            q(f"strongswan_scheduled_jobs{{{SEL}}}", "scheduled {{instance}}"),
            width=8, description="charon's threads and queues (strongSwan only).",
        ),
        timeseries(
            "Half-open IKE SAs",
            q(f"strongswan_ike_sas_half_open{{{SEL}}} or libreswan_ike_sas_half_open{{{SEL}}}", "{{instance}}"),
            width=8, description="IKE_SA_INIT answered, never authenticated (pluto: its half-open count). A surge hints at a DoS.",
        ),
        timeseries(
            "IKE messages and invalid ones",
            q(f'sum by (instance, exchange, direction) (rate(strongswan_ike_messages_total{{{SEL}}}{RATE})) or label_join(sum by (instance, version, outcome) (rate(libreswan_ike_sa_negotiations_total{{{SEL}}}{RATE})), "exchange", " ", "version", "outcome") or label_join(label_replace(sum by (instance, kind) (rate(libreswan_dpd_messages_total{{{SEL}}}{RATE})), "exchange", "DPD", "", ""), "exchange", " ", "exchange", "kind")', "{{exchange}} {{direction}} {{instance}}"),
            q(f"rate(strongswan_invalid_messages_total{{{SEL}}}{RATE})", "invalid {{instance}}"),
            q(f"rate(strongswan_invalid_spi_messages_total{{{SEL}}}{RATE})", "invalid SPI {{instance}}"),
            width=8, unit="pps", description="strongSwan: the counters plugin (IKEv2 exchanges only), invalid messages. Libreswan: IKE SA negotiations by version and outcome, DPD messages sent, received, replied (globalstatus).",
        ),
        row("Kernel"),
        timeseries(
            "XFRM errors",
            q(f"sum by (instance, reason) (rate(xfrm_errors_total{{{SEL}}}{RATE}))", "{{reason}} {{instance}}"),
            width=8, unit="pps", description="/proc/net/xfrm_stat; docs/alerts.md explains the reasons.",
        ),
        timeseries(
            "ESP integrity and replay errors per SA",
            q(f"sum by (instance, spi) (rate(xfrm_state_integrity_errors_total{{{SEL}}}{RATE}))", "integrity {{spi}} {{instance}}"),
            q(f"sum by (instance, spi) (rate(xfrm_state_replay_errors_total{{{SEL}}}{RATE}))", "replay {{spi}} {{instance}}"),
            q(f"sum by (instance, spi) (rate(xfrm_state_replay_window_errors_total{{{SEL}}}{RATE}))", "replay window {{spi}} {{instance}}"),
            width=8, unit="pps",
            description="Per SA (SPI) from the kernel's XFRM state statistics: packets that failed the integrity check (wrong key, corruption), replayed packets, packets outside the replay window.",
        ),
        timeseries(
            "XFRM states and policies",
            q(f"sum by (instance, proto, mode) (xfrm_states{{{SEL}}})", "states {{proto}} {{mode}} {{instance}}"),
            q(f"sum by (instance, direction) (xfrm_policies{{{SEL}}})", "policies {{direction}} {{instance}}"),
            width=8, description="The kernel's IPsec SAs (XFRM states) by protocol and mode, and its policies by direction: an L2TP/IPsec client has a transport-mode ESP state each way.",
        ),
        timeseries(
            "ppp throughput",
            q(f"sum by (instance) (rate(ppp_interface_receive_bytes_total{{{SEL}}}{RATE})) * 8", "{{instance}} receive"),
            q(f"-sum by (instance) (rate(ppp_interface_transmit_bytes_total{{{SEL}}}{RATE})) * 8", "{{instance}} transmit"),
            unit=bits, description="Inside the tunnels (ppp interfaces): what users send and get.",
        ),
        timeseries(
            "L2TP and ppp errors",
            q(f"sum by (instance) (rate(l2tp_tunnel_receive_errors_total{{{SEL}}}{RATE}) + rate(l2tp_tunnel_transmit_errors_total{{{SEL}}}{RATE}))", "L2TP {{instance}}"),
            q(f"sum by (instance) (rate(ppp_interface_receive_errors_total{{{SEL}}}{RATE}) + rate(ppp_interface_transmit_errors_total{{{SEL}}}{RATE}))", "ppp errors {{instance}}"),
            q(f"sum by (instance) (rate(ppp_interface_receive_drops_total{{{SEL}}}{RATE}) + rate(ppp_interface_transmit_drops_total{{{SEL}}}{RATE}))", "ppp drops {{instance}}"),
            unit="pps", description="Receive and transmit errors of the kernel's L2TP tunnels, errors and drops of the ppp interfaces, per server.",
        ),
        row("Exporter"),
        timeseries(
            "Collectors",
            q(f"l2tp_ipsec_exporter_collector_success{{{SEL}}}", "{{collector}} ok {{instance}}"),
            q(f"strongswan_event_stream_up{{{SEL}}}", "event stream {{instance}}"),
            width=8, defaults={"min": 0, "max": 1},
            description="1 when a collector read its source in the scrape (0: the exporter logs why); charon's event stream up (strongSwan only).",
        ),
        timeseries(
            "Collector duration",
            q(f"l2tp_ipsec_exporter_collector_duration_seconds{{{SEL}}}", "{{collector}} {{instance}}"),
            width=8, unit="s", description="Time each collector took in the scrape.",
        ),
        timeseries(
            "Series left out by the limit",
            q(f"sum by (instance, family) (increase(l2tp_ipsec_exporter_series_dropped_total{{{SEL}}}{RATE}))", "{{family}} {{instance}}"),
            width=8, description="Raise the series limit (--collector.strongswan.series-limit) if this is not 0.",
        ),
    ]  # fmt: skip
    meta = {
        "uid": "l2tp-ipsec-overview",
        "title": "L2TP/IPsec: overview",
        "description": "VPN servers watched by l2tp-ipsec-exporter: health, users, traffic, "
        "drops, capacity, daemon load, kernel errors.",
        "templating": {"list": server_variables()},
    }
    return meta, panels


def users_and_sessions() -> tuple[dict[str, Any], list[Panel]]:
    panels = [
        row("Who is connected"),
        table(
            "L2TP/IPsec sessions",
            instant(f"l2tp_ipsec_session_info{{{SEL}}}"),
            instant(f"l2tp_ipsec_session_start_timestamp_seconds{{{SEL}}} * 1000"),
            instant(f"ppp_interface_receive_bytes_total{{{SEL}}}"),
            instant(f"ppp_interface_transmit_bytes_total{{{SEL}}}"),
            width=24, height=10,
            description="One row per ppp session (kernel collectors): who, from where, inner address, since when, traffic.",
            transformations=merge_tables(
                ["__name__", "job", "Value #A", "ike_uniqueid"],
                {"Value #B": "since", "Value #C": "received", "Value #D": "sent",
                 "public_address": "public address", "inner_address": "inner address"},
            ),
            overrides=[
                {"matcher": {"id": "byName", "options": "since"},
                 "properties": [{"id": "unit", "value": "dateTimeAsIso"}]},
                {"matcher": {"id": "byRegexp", "options": "received|sent"},
                 "properties": [{"id": "unit", "value": "bytes"}]},
            ],
        ),
        table(
            "IPsec users",
            instant(f"strongswan_user_sessions{{{CONN}}} or libreswan_user_sessions{{{CONN}}}"),
            instant(f'sum by (job, instance, conn, user) (strongswan_user_bytes_total{{{CONN}, direction="in"}} or libreswan_user_bytes_total{{{CONN}, direction="in"}})'),
            instant(f'sum by (job, instance, conn, user) (strongswan_user_bytes_total{{{CONN}, direction="out"}} or libreswan_user_bytes_total{{{CONN}, direction="out"}})'),
            width=24, height=8,
            description="Per user (XAuth/EAP identity, else IKE identity; Libreswan: else the peer's address) as the IKE daemon sees them; sessions are IKE SAs (strongSwan) or tunnels (Libreswan); bytes across rekeys and reconnects.",
            transformations=merge_tables(
                ["__name__", "job"],
                {"Value #A": "sessions", "Value #B": "bytes in", "Value #C": "bytes out"},
            ),
            overrides=[{"matcher": {"id": "byRegexp", "options": "bytes.*"},
                        "properties": [{"id": "unit", "value": "bytes"}]}],
        ),
        table(
            "IKE SAs, Libreswan's IPsec SAs (needs --collector.strongswan|libreswan.sa-details)",
            instant(f"strongswan_ike_sa_established_timestamp_seconds{{{CONN}}} * 1000 or libreswan_ipsec_sa_added_timestamp_seconds{{{CONN}}} * on (job, instance, conn, serial) group_left (conn_instance, remote_host, user, identity, state) libreswan_ipsec_sa_info{{{CONN}}} * 1000"),
            width=24, height=8,
            description="strongSwan: one row per IKE SA. Libreswan: one row per IPsec SA (pluto's serial, the connection instance, peer, user) since it was installed.",
            transformations=merge_tables(["__name__", "job"], {"Value": "established", "conn_instance": "conn instance"}),
            overrides=[{"matcher": {"id": "byName", "options": "established"},
                        "properties": [{"id": "unit", "value": "dateTimeAsIso"}]}],
        ),
        row("Traffic per user"),
        timeseries(
            "Traffic per IPsec user",
            q(f"topk(20, sum by (conn, user, direction) (rate(strongswan_user_bytes_total{{{CONN}}}{RATE}) or rate(libreswan_user_bytes_total{{{CONN}}}{RATE})) * 8)", "{{user}} {{direction}} ({{conn}})"),
            unit="bps", description="The 20 busiest at each point in time." + LISTED_NOTE,
        ),
        timeseries(
            "Traffic per ppp session",
            q(f"sum by (instance, interface, user) (rate(ppp_interface_receive_bytes_total{{{SEL}}}{RATE}) * on (job, instance, interface) group_left (user) l2tp_ipsec_session_info{{{SEL}}}) * 8", "{{user}} {{interface}} receive"),
            q(f"-sum by (instance, interface, user) (rate(ppp_interface_transmit_bytes_total{{{SEL}}}{RATE}) * on (job, instance, interface) group_left (user) l2tp_ipsec_session_info{{{SEL}}}) * 8", "{{user}} {{interface}} transmit"),
            unit="bps", description="ppp interface counters joined with the session's user; transmit below zero.",
        ),
        row("Connections"),
        table(
            "Connections that must be up (peering links)",
            instant(f'strongswan_connection_established{{{SEL}, conn=~"$required"}} or libreswan_connection_established{{{SEL}, conn=~"$required"}}'),
            instant(f'(time() - strongswan_connection_last_change_timestamp_seconds{{{SEL}, conn=~"$required"}}) or (time() - libreswan_connection_last_change_timestamp_seconds{{{SEL}, conn=~"$required"}})'),
            width=12,
            description="Chosen by the 'Must be up' regex (the alerts' selectors.required_connections). Red: down.",
            transformations=merge_tables(["__name__", "job"], {"Value #A": "established IKE SAs", "Value #B": "since last change"}),
            overrides=[
                {"matcher": {"id": "byName", "options": "established IKE SAs"},
                 "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}},
                                {"id": "thresholds", "value": thresholds((None, "red"), (1, "green"))}]},
                {"matcher": {"id": "byName", "options": "since last change"},
                 "properties": [{"id": "unit", "value": "s"}]},
            ],
        ),
        table(
            "All configured connections",
            instant(f"strongswan_connection_established{{{CONN}}} * on (job, instance, conn) group_left (version) strongswan_connection_configured{{{CONN}}} or libreswan_connection_established{{{CONN}}} * on (job, instance, conn) group_left (version, kind) libreswan_connection_configured{{{CONN}}}"),
            width=12,
            description="Every connection the IKE daemon has loaded, with its IKE version (Libreswan: and kind, template or permanent) and its established IKE SAs now.",
            transformations=merge_tables(["__name__", "job"], {"Value": "established IKE SAs"}),
        ),
        timeseries(
            "Established IKE SAs per connection",
            q(f"sum by (instance, conn) (strongswan_connection_established{{{CONN}}} or libreswan_connection_established{{{CONN}}})", "{{conn}} ({{instance}})"),
            width=8, description="Established IKE SAs of each connection (the Connection variable) over time.",
        ),
        timeseries(
            "CHILD SAs per connection and state",
            q(f"sum by (conn, child, state) (strongswan_child_sas{{{CONN}}} or libreswan_ipsec_sas{{{CONN}}})", "{{conn}}/{{child}} {{state}}"),
            width=8, description="strongSwan's CHILD SAs per child; Libreswan's IPsec SAs by pluto's state name (no child).",
        ),
        timeseries(
            "Drops and rekeys per connection, per minute",
            q(f"sum by (conn, event) (rate(strongswan_ike_sa_events_total{{{CONN}}}{RATE}) or rate(libreswan_ipsec_sa_events_total{{{CONN}}}{RATE})) * 60", "{{conn}} {{event}}"),
            width=8, description="strongSwan's IKE SAs, Libreswan's tunnels: down = a drop, the count the alerts use.",
        ),
        timeseries(
            "Throughput per connection",
            q(f"sum by (conn, child, direction) (rate(strongswan_child_sa_bytes_total{{{CONN}}}{RATE}) or rate(libreswan_connection_bytes_total{{{CONN}}}{RATE})) * 8", "{{conn}}/{{child}} {{direction}}"),
            width=24, unit="bps", description="strongSwan per child, Libreswan per connection." + LISTED_NOTE,
        ),
    ]  # fmt: skip
    variables = [
        *server_variables(),
        query_variable(
            "conn",
            "Connection",
            'label_values({__name__=~"strongswan_connection_configured|libreswan_connection_configured", '
            'job=~"$job", instance=~"$instance"}, conn)',
        ),
        textbox_variable(
            "required",
            "Must be up",
            REQUIRED_CONNECTIONS,
            "Regex of the connections that must always be up (site-to-site, peering).",
        ),
    ]
    meta = {
        "uid": "l2tp-ipsec-users",
        "title": "L2TP/IPsec: users and sessions",
        "description": "Who is connected, their traffic, and per-connection drill-down.",
        "templating": {"list": variables},
    }
    return meta, panels


#: Label matchers of the per-login queries (the users collector's families).
LOGIN = f'{SEL}, user=~"$user"'
#: The per-login tables join their columns on these labels.
BY_LOGIN = "(job, instance, user)"
#: How many logins the top-N panels show.
TOP = 10


def users() -> tuple[dict[str, Any], list[Panel]]:
    """Per PPP login (the users collector, issue 18): counters that survive reconnects."""
    connected = f"l2tp_ipsec_user_sessions{{{LOGIN}}} > 0"
    panels = [
        row("Now"),
        stat("Logins connected", q(f"count({connected}) or vector(0)"),
             description="Logins with at least one PPP session now."),
        stat("Sessions", q(f"sum(l2tp_ipsec_user_sessions{{{LOGIN}}}) or vector(0)"),
             description="PPP sessions of those logins (one login may connect from several devices)."),
        stat("Sessions without a login", q(f"sum(l2tp_ipsec_sessions_without_login{{{SEL}}})"),
             defaults={"thresholds": thresholds((None, "green"), (1, "orange"))},
             description="Connected sessions the exporter cannot put a login on (no ip-up hook record, no IKE user): their traffic is in no login's counters. Install the pppd hooks (contrib/ppp)."),
        stat("Required logins down", q(f"count(l2tp_ipsec_required_login_up{{{SEL}}} == 0) or vector(0)"),
             defaults={"thresholds": thresholds((None, "green"), (1, "red"))},
             description="Logins that must always be connected (--collector.users.required) with no session now; L2tpIpsecRequiredLoginDown fires after required_login_down.for."),
        stat("Logins over the time range", q(f"sum(increase(l2tp_ipsec_user_logins_total{{{LOGIN}}}[$__range])) or vector(0)"),
             description="Session starts of all logins within the dashboard's time range."),
        stat("Logins tracked", q(f"sum(l2tp_ipsec_users_tracked{{{SEL}}})"),
             description="Logins the exporter keeps counters for (at most --collector.users.max; idle ones are forgotten after --collector.users.idle-expiry)."),
        table(
            "Who is on now",
            instant(connected),
            instant(f"l2tp_ipsec_user_last_login_timestamp_seconds{{{LOGIN}}} * 1000 and on {BY_LOGIN} {connected}"),
            instant(f"sum by {BY_LOGIN} (rate(l2tp_ipsec_user_receive_bytes_total{{{LOGIN}}}[$__rate_interval])) * 8 and on {BY_LOGIN} {connected}"),
            instant(f"sum by {BY_LOGIN} (rate(l2tp_ipsec_user_transmit_bytes_total{{{LOGIN}}}[$__rate_interval])) * 8 and on {BY_LOGIN} {connected}"),
            instant(f"l2tp_ipsec_user_receive_bytes_total{{{LOGIN}}} and on {BY_LOGIN} {connected}"),
            instant(f"l2tp_ipsec_user_transmit_bytes_total{{{LOGIN}}} and on {BY_LOGIN} {connected}"),
            width=16, height=10,
            description="One row per connected login: its sessions, when it last logged in, its rate now and its bytes since the exporter started (receive = from the client). Per-session detail (addresses, interfaces): the exporter's /sessions page and the 'users and sessions' dashboard.",
            transformations=merge_tables(
                ["__name__", "job"],
                {"Value #A": "sessions", "Value #B": "last login", "Value #C": "receiving",
                 "Value #D": "sending", "Value #E": "received", "Value #F": "sent"},
            ),
            overrides=[
                {"matcher": {"id": "byName", "options": "last login"},
                 "properties": [{"id": "unit", "value": "dateTimeAsIso"}]},
                {"matcher": {"id": "byRegexp", "options": "receiving|sending"},
                 "properties": [{"id": "unit", "value": "bps"}]},
                {"matcher": {"id": "byRegexp", "options": "received|sent"},
                 "properties": [{"id": "unit", "value": "bytes"}]},
            ],
        ),
        table(
            "Required logins",
            instant(f"l2tp_ipsec_required_login_up{{{SEL}}}"),
            instant(f"l2tp_ipsec_user_last_logout_timestamp_seconds{{{SEL}}} * 1000 and on {BY_LOGIN} l2tp_ipsec_required_login_up{{{SEL}}}"),
            width=8, height=10,
            description="Logins that must always be connected (--collector.users.required: peering routers), UP or DOWN, and when each last logged out.",
            transformations=merge_tables(["__name__", "job"], {"Value #A": "state", "Value #B": "last logout"}),
            overrides=[
                {"matcher": {"id": "byName", "options": "state"},
                 "properties": [{"id": "mappings", "value": UP_DOWN},
                                {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
                {"matcher": {"id": "byName", "options": "last logout"},
                 "properties": [{"id": "unit", "value": "dateTimeAsIso"}]},
            ],
        ),
        Panel(
            "state-timeline", "Required logins up", [q(f"l2tp_ipsec_required_login_up{{{SEL}}}", "{{user}} ({{instance}})")],
            width=24, height=6, defaults={"mappings": UP_DOWN},
            description="Each required login over time: red while it had no session.",
        ),
        row("Over the time range"),
        Panel(
            "bargauge", f"Top {TOP} logins by traffic",
            [instant(f"topk({TOP}, sum by (user) (increase(l2tp_ipsec_user_receive_bytes_total{{{LOGIN}}}[$__range]) + increase(l2tp_ipsec_user_transmit_bytes_total{{{LOGIN}}}[$__range])))", "{{user}}")],
            width=12, height=8, unit="bytes", options={"displayMode": "gradient", "orientation": "horizontal"},
            description="Bytes received from and sent to each login within the dashboard's time range, over all its sessions and servers (reconnects and exporter restarts included).",
        ),
        Panel(
            "bargauge", f"Top {TOP} logins by connected time",
            [instant(f"topk({TOP}, sum by (user) (increase(l2tp_ipsec_user_connected_seconds_total{{{LOGIN}}}[$__range])))", "{{user}}")],
            width=12, height=8, unit="s", options={"displayMode": "gradient", "orientation": "horizontal"},
            description="Time each login had a session within the time range (two sessions at once count twice).",
        ),
        table(
            "Per login over the time range",
            instant(f"sum by (user) (increase(l2tp_ipsec_user_logins_total{{{LOGIN}}}[$__range]))"),
            instant(f"sum by (user) (increase(l2tp_ipsec_user_logouts_total{{{LOGIN}}}[$__range]))"),
            instant(f"sum by (user) (increase(l2tp_ipsec_user_connected_seconds_total{{{LOGIN}}}[$__range]))"),
            instant(f"sum by (user) (increase(l2tp_ipsec_user_receive_bytes_total{{{LOGIN}}}[$__range]))"),
            instant(f"sum by (user) (increase(l2tp_ipsec_user_transmit_bytes_total{{{LOGIN}}}[$__range]))"),
            width=24, height=8,
            description="Every login's logins, logouts, connected time and bytes within the time range (set the range to a month for a monthly bill). increase() extrapolates to the range's edges, so counts read as fractions.",
            transformations=merge_tables(
                [],
                {"Value #A": "logins", "Value #B": "logouts", "Value #C": "connected",
                 "Value #D": "received", "Value #E": "sent"},
            ),
            overrides=[
                {"matcher": {"id": "byName", "options": "connected"},
                 "properties": [{"id": "unit", "value": "s"}]},
                {"matcher": {"id": "byRegexp", "options": "received|sent"},
                 "properties": [{"id": "unit", "value": "bytes"}]},
                {"matcher": {"id": "byRegexp", "options": "logins|logouts"},
                 "properties": [{"id": "decimals", "value": 0}]},
            ],
        ),
        row("Over time"),
        timeseries(
            "Logins and logouts per hour",
            q(f"sum by (instance) (rate(l2tp_ipsec_user_logins_total{{{LOGIN}}}[$__rate_interval])) * 3600", "logins {{instance}}"),
            q(f"-sum by (instance) (rate(l2tp_ipsec_user_logouts_total{{{LOGIN}}}[$__rate_interval])) * 3600", "logouts {{instance}}"),
            description="Session starts and ends, as a rate per hour; logouts are drawn below zero.",
        ),
        timeseries(
            f"Logins per hour, top {TOP} logins",
            q(f"topk({TOP}, sum by (user) (rate(l2tp_ipsec_user_logins_total{{{LOGIN}}}[$__rate_interval]))) * 3600", "{{user}}"),
            description="Who reconnects most; L2tpIpsecLoginFlapping fires for more than login_flapping.max_logins logins within login_flapping.window.",
        ),
        timeseries(
            f"Traffic per login, top {TOP}",
            q(f"topk({TOP}, sum by (user) (rate(l2tp_ipsec_user_receive_bytes_total{{{LOGIN}}}[$__rate_interval]))) * 8", "{{user}} receive"),
            q(f"-topk({TOP}, sum by (user) (rate(l2tp_ipsec_user_transmit_bytes_total{{{LOGIN}}}[$__rate_interval]))) * 8", "{{user}} transmit"),
            unit="bps", description="The busiest logins at each point in time, over all their sessions; transmit (to the client) below zero.",
        ),
        timeseries(
            "Sessions per login",
            q(f"sum by (user) (l2tp_ipsec_user_sessions{{{LOGIN}}}) > 0", "{{user}}"),
            description="Connected sessions of each login over time.",
        ),
        row("Bookkeeping"),
        timeseries(
            "Logins tracked and sessions without a login",
            q(f"l2tp_ipsec_users_tracked{{{SEL}}}", "tracked {{instance}}"),
            q(f"l2tp_ipsec_sessions_without_login{{{SEL}}}", "without a login {{instance}}"),
            width=8, description="Logins the exporter keeps counters for, and connected sessions it cannot put a login on (their traffic is in no login's counters), per server.",
        ),
        timeseries(
            "Logins forgotten per hour",
            q(f"sum by (instance, reason) (rate(l2tp_ipsec_users_forgotten_total{{{SEL}}}[$__rate_interval])) * 3600", "{{reason}} {{instance}}"),
            width=8, description="idle: no session for --collector.users.idle-expiry; limit: --collector.users.max reached (raise it if this is not 0). A forgotten login's counters start again from zero.",
        ),
        timeseries(
            "Hook records rejected per hour",
            q(f"sum by (instance, reason) (rate(l2tp_ipsec_login_records_rejected_total{{{SEL}}}[$__rate_interval])) * 3600", "{{reason}} {{instance}}"),
            width=8, description="pppd hook records the exporter ignored (too large, not UTF-8, written by another user, malformed); the exporter logs each one.",
        ),
    ]  # fmt: skip
    variables = [
        *server_variables(),
        query_variable(
            "user",
            "Login",
            'label_values(l2tp_ipsec_user_sessions{job=~"$job", instance=~"$instance"}, user)',
        ),
    ]
    meta = {
        "uid": "l2tp-ipsec-logins",
        "title": "L2TP/IPsec: users (per login)",
        "description": "Per PPP login across reconnects: who is on now, traffic, logins and "
        "connected time over the time range, logins that must be up.",
        "templating": {"list": variables},
    }
    return meta, panels


def probes() -> tuple[dict[str, Any], list[Panel]]:
    panels = [
        row("Results"),
        stat(
            "Success now", q(f"probe_success{{{PROBE}}}", "{{instance}} {{module}}"),
            width=8, description="The latest probe of each target and module: OK or FAIL.", defaults={"mappings": [{"type": "value", "options": {
                "0": {"text": "FAIL", "color": "red", "index": 0},
                "1": {"text": "OK", "color": "green", "index": 1}}}]},
        ),
        stat(
            "Success over the time range", q(f"avg_over_time(probe_success{{{PROBE}}}[$__range])", "{{instance}} {{module}}"),
            width=8, unit="percentunit",
            defaults={"thresholds": thresholds((None, "red"), (0.95, "orange"), (0.999, "green"))},
            description="Share of the probes within the dashboard's time range that succeeded.",
        ),
        Panel(
            "bargauge", "Failures by phase over the time range",
            [instant(f"sum by (instance, module, phase) (sum_over_time(probe_failed_phase{{{PROBE}}}[$__range])) > 0", "{{instance}} {{module}} {{phase}}")],
            width=8, height=4, options={"displayMode": "basic", "orientation": "horizontal"},
            description="Probe runs that failed in each phase.",
        ),
        Panel(
            "state-timeline", "Success", [q(f"probe_success{{{PROBE}}}", "{{instance}} {{module}}")],
            width=24, height=6, description="Each target and module's probe result over time.",
            defaults={"mappings": [{"type": "value", "options": {
                "0": {"text": "FAIL", "color": "red", "index": 0},
                "1": {"text": "OK", "color": "green", "index": 1}}}]},
        ),
        timeseries(
            "Failed phase", q(f"probe_failed_phase{{{PROBE}}} == 1", "{{instance}} {{module}} {{phase}}"),
            width=24, height=6, options={"legend": {"displayMode": "table", "placement": "right"}},
            description="The phase a failing probe failed in (probe_failed_phase), over time.",
        ),
        row("Timings"),
        timeseries("Probe duration", q(f"probe_duration_seconds{{{PROBE}}}", "{{instance}} {{module}}"), unit="s",
                   description="Wall time of the whole probe."),
        timeseries(
            "Phase durations", q(f"probe_phase_duration_seconds{{{PROBE}}}", "{{instance}} {{module}} {{phase}}"),
            unit="s", defaults={"custom": {"stacking": {"mode": "normal", "group": "A"}, "drawStyle": "bars", "fillOpacity": 60}},
            description="Time spent in each phase that ran, stacked.",
        ),
        timeseries(
            "IKE round trip", q(f"probe_ike_rtt_seconds{{{PROBE}}}", "{{instance}} {{module}}"),
            unit="s", width=8, description="Round trip of the IKE request the responder answered.",
        ),
        timeseries(
            "LCP echo round trip through the tunnel", q(f"probe_login_lcp_echo_rtt_seconds{{{PROBE}}}", "{{instance}} {{module}}"),
            unit="s", width=8, description="Login modules: round trip of a PPP LCP echo through the L2TP/IPsec tunnel the probe built.",
        ),
        timeseries(
            "Login left charon clean", q(f"probe_login_teardown_clean{{{PROBE}}}", "{{instance}} {{module}}"),
            width=8, defaults={"min": 0, "max": 1},
            description="Login modules: 1 when the probe left charon as it found it (its SAs gone).",
        ),
        table(
            "How the IKE responder answered",
            instant(f"probe_ike_answer_info{{{PROBE}}}"),
            width=24, description="The IKE responder's answer to the latest probe: proposal accepted, a notify (which one), a cookie, silence, unreachable or malformed.", transformations=merge_tables(["__name__", "Value"], {}),
        ),
    ]  # fmt: skip
    variables = [
        datasource_variable(),
        query_variable("job", "Job", "label_values(probe_success, job)", all_value=".+"),
        query_variable(
            "instance",
            "Target",
            'label_values(probe_success{job=~"$job"}, instance)',
            all_value=".+",
        ),
        query_variable(
            "module",
            "Module",
            'label_values(probe_success{job=~"$job", instance=~"$instance"}, module)',
        ),
    ]
    meta = {
        "uid": "l2tp-ipsec-probes",
        "title": "L2TP/IPsec: probes",
        "description": "Blackbox-style /probe results: success and phase timings per target "
        "and module, failures by phase.",
        "templating": {"list": variables},
    }
    return meta, panels


DASHBOARDS = {
    "overview.json": overview,
    "users-and-sessions.json": users_and_sessions,
    "users.json": users,
    "probes.json": probes,
}


# -- rendering --------------------------------------------------------------------------------


def render_panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
    }
    if panel.kind == "row":
        out.update({"collapsed": False, "panels": []})
        return out
    if panel.description:
        out["description"] = panel.description
    out["datasource"] = DATASOURCE
    if panel.min_interval:
        out["interval"] = panel.min_interval
    targets = []
    for index, query in enumerate(panel.queries):
        target: dict[str, Any] = {
            "datasource": DATASOURCE,
            "refId": chr(ord("A") + index),
            "expr": query.expr,
            "legendFormat": query.legend or "__auto",
            "range": not query.instant,
            "instant": query.instant,
        }
        if query.table:
            target["format"] = "table"
        targets.append(target)
    out["targets"] = targets
    out["fieldConfig"] = {
        "defaults": {"unit": panel.unit, **panel.defaults},
        "overrides": panel.overrides,
    }
    options = dict(panel.options)
    if panel.kind == "timeseries":
        options.setdefault("legend", {"displayMode": "list", "placement": "bottom"})
        options.setdefault("tooltip", {"mode": "multi", "sort": "desc"})
    if panel.kind == "stat":
        options.setdefault(
            "reduceOptions", {"calcs": ["lastNotNull"], "fields": "", "values": False}
        )
        options.setdefault("colorMode", "background")
    out["options"] = options
    if panel.transformations:
        out["transformations"] = panel.transformations
    return out


def render(meta: dict[str, Any], panels: list[Panel]) -> dict[str, Any]:
    rendered = []
    x = y = row_height = 0
    for panel_id, panel in enumerate(panels, start=1):
        if x + panel.width > 24 or panel.kind == "row":
            if x:
                y += row_height
            x, row_height = 0, 0
        rendered.append(render_panel(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
        if panel.kind == "row":
            y, x, row_height = y + 1, 0, 0
    return {
        **meta,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "editable": True,
        "graphTooltip": 1,
        "links": [
            {
                "title": "L2TP/IPsec",
                "type": "dashboards",
                "tags": ["l2tp-ipsec"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": rendered,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["l2tp-ipsec", "strongswan", "libreswan", "vpn"],
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "version": 1,
        "weekStart": "",
    }


def build() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        name: json.dumps(render(*make()), indent=2, sort_keys=False) + "\n"
        for name, make in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the files")
    args = parser.parse_args(argv)
    stale = []
    for name, text in build().items():
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale, run python3 dashboards/generate.py: " + " ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
