"""The ledger's counts as metric families: events, rekey-proof traffic, the stream's health."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.order import SortedKeys, take_in_order
from exporter.strongswan.ledger import LedgerReadings, Traffic
from exporter.strongswan.snapshot import Connection
from exporter.strongswan.view import StreamHealth
from exporter.table_family import counter_table

EVENT_KINDS = ("up", "down", "rekey")


def render_ledger(
    ledger: LedgerReadings,
    connections: Iterable[Connection],
    limiter: SeriesLimiter,
    user_metrics: bool,
    user_order: SortedKeys[tuple[str, str]] | None = None,
) -> list[Metric]:
    """`connections` (the loaded ones) get zero series, so the first drop is an increase."""
    conns = list(connections)
    ike = dict.fromkeys(((c.name, e) for c in conns for e in EVENT_KINDS), 0)
    ike.update(ledger.ike_events)
    child = dict.fromkeys(
        ((c.name, ch, e) for c in conns for ch in c.children for e in EVENT_KINDS), 0
    )
    child.update(ledger.child_events)

    ike_family = CounterMetricFamily(
        "strongswan_ike_sa_events",
        "IKE SAs that came up, went down (drops) or were rekeyed/reauthenticated, while the "
        "exporter ran.",
        labels=["conn", "event"],
    )
    for (conn, event), n in sorted(ike.items()):
        ike_family.add_metric([conn, event], n)
    child_family = CounterMetricFamily(
        "strongswan_child_sa_events",
        "CHILD SAs that came up, went down or were rekeyed, while the exporter ran.",
        labels=["conn", "child", "event"],
    )
    for (conn, name, event), n in sorted(child.items()):
        child_family.add_metric([conn, name, event], n)
    last_change = GaugeMetricFamily(
        "strongswan_connection_last_change_timestamp_seconds",
        "When an IKE SA of the connection last came up or went down.",
        labels=["conn"],
    )
    for conn, at in sorted(ledger.last_change.items()):
        last_change.add_metric([conn], at)

    families: list[Metric] = [
        ike_family,
        child_family,
        last_change,
        untracked_family(ledger.untracked),
    ]
    families += _traffic(
        "strongswan_child_sa",
        "through the connection's CHILD SAs, rekeys included",
        ["conn", "child"],
        sorted(ledger.traffic_totals().items()),
    )
    if user_metrics:
        order = user_order or SortedKeys()
        users = take_in_order(limiter, "strongswan_user_bytes_total", order, ledger.user_totals())
        families += _traffic(
            "strongswan_user",
            "through the user's CHILD SAs, rekeys and reconnects included",
            ["conn", "user"],
            users,
        )
    return families


def _traffic(
    prefix: str,
    what: str,
    labels: list[str],
    totals: Iterable[tuple[tuple[str, str], Traffic]],
) -> list[Metric]:
    octets = counter_table(f"{prefix}_bytes", f"Bytes {what}.", [*labels, "direction"])
    packets = counter_table(f"{prefix}_packets", f"Packets {what}.", [*labels, "direction"])
    octet_rows, packet_rows = octets.rows, packets.rows
    for (a, b), t in totals:
        octet_rows.append(((a, b, "in"), t.bytes_in))
        octet_rows.append(((a, b, "out"), t.bytes_out))
        packet_rows.append(((a, b, "in"), t.packets_in))
        packet_rows.append(((a, b, "out"), t.packets_out))
    return [octets, packets]


def render_stream(stream: StreamHealth) -> list[Metric]:
    return [
        GaugeMetricFamily(
            "strongswan_event_stream_up",
            "1 while the exporter is subscribed to charon's event stream.",
            value=1 if stream.up else 0,
        ),
        CounterMetricFamily(
            "strongswan_event_stream_reconnects",
            "Times the event stream was connected again after it was lost.",
            value=stream.reconnects,
        ),
        CounterMetricFamily(
            "strongswan_event_stream_events",
            "Events received from charon's event stream.",
            value=stream.events_received,
        ),
    ]


def untracked_family(count: int) -> CounterMetricFamily:
    """`strongswan_sas_untracked_total`: from the ledger with events on, else from the SA
    table (which then only listings fill)."""
    return CounterMetricFamily(
        "strongswan_sas_untracked",
        "SAs charon announced (events, listings) while the exporter tracked "
        "--collector.strongswan.max-sas IKE SAs already: left out of the SA metrics and the "
        "event and traffic counts; a listing counts each such SA again.",
        value=count,
    )
