"""Libreswan's pluto, read through its `ipsec` commands, as Prometheus metrics.

Names follow the strongSwan collector's where the meaning is the same (`conn`, `state`,
`user`, `_connection_established`, `_user_sessions`), so the recording rules in
alerts/ serve both daemons. README.md lists the families.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.collectors.base import Collection
from exporter.collectors.limits import SeriesLimiter
from exporter.libreswan.ledger import EVENTS, LedgerReadings, user_of
from exporter.libreswan.model import PlutoSnapshot
from exporter.libreswan.options import LibreswanOptions
from exporter.libreswan.view import PlutoView
from exporter.table_family import TableFamily, gauge_table

log = logging.getLogger("exporter.collectors.libreswan")

SA_LABELS = ("conn", "conn_instance", "serial", "remote_host", "user", "identity", "state")

#: globalstatus keys → (family, label values); families below.
_IKE_OUTCOMES = {
    f"total.ike.{version}.{outcome}": (version, outcome)
    for version in ("ikev1", "ikev2")
    for outcome in ("established", "failed", "completed")
}
_DPD = {f"total.ike.dpd.{kind}": kind for kind in ("sent", "recv", "replied")}
_IKE_TRAFFIC = {"total.ike.traffic.in": "in", "total.ike.traffic.out": "out"}


def up_family(up: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "libreswan_up",
        "1 when pluto answered the last round of ipsec commands, else 0.",
        value=1 if up else 0,
    )


class LibreswanCollector:
    """Asks pluto one round per scrape (through the view) and renders it."""

    name = "libreswan"

    def __init__(self, view: PlutoView, options: LibreswanOptions, limiter: SeriesLimiter) -> None:
        self._view = view
        self._options = options
        self._limiter = limiter
        self._render_failing = False

    def reconfigure(self, options: LibreswanOptions) -> None:
        self._options = options

    async def collect(self) -> Collection:
        view = self._view
        await view.refresh()
        try:
            families: list[Metric] = [up_family(view.up)]
            snapshot = view.current()
            readings = view.readings()
            if snapshot is not None:
                families += render(snapshot, self._options, self._limiter)
                families += global_counters(readings.global_counters)
            families += render_ledger(readings, view.last(), self._options, self._limiter)
            stats = view.kernel_stats()
            if stats is not None:
                families += kernel_families(stats.subscribed, stats.overflows)
        except Exception as err:  # libreswan_up stays there for the alerts
            if not self._render_failing:
                log.exception("cannot render what pluto said")
            self._render_failing = True
            return Collection(
                [up_family(False)], success=False, error=f"{type(err).__name__}: {err}"
            )
        self._render_failing = False
        return Collection(families, success=view.up, error=view.error)


def render(snap: PlutoSnapshot, options: LibreswanOptions, limiter: SeriesLimiter) -> list[Metric]:
    families: list[Metric] = []
    info = GaugeMetricFamily(
        "libreswan_info", "The running pluto's version; always 1.", labels=["version"]
    )
    info.add_metric([snap.version], 1)
    families.append(info)
    families += _sas(snap)
    families += _connections(snap)
    if options.user_metrics:
        families += _users(snap, limiter)
    if options.sa_details:
        families += _sa_details(snap, limiter)
    return families


def _sas(snap: PlutoSnapshot) -> Iterable[Metric]:
    ike = Counter((sa.connection, sa.state) for sa in snap.ike_sas)
    ike_family = GaugeMetricFamily(
        "libreswan_ike_sas",
        "IKE SAs (IKEv1 ISAKMP SAs and IKEv2 IKE SAs) by connection and pluto's state name.",
        labels=["conn", "state"],
    )
    for (conn, state), n in sorted(ike.items()):
        ike_family.add_metric([conn, state], n)
    yield ike_family
    ipsec = Counter((sa.connection, sa.state or "") for sa in snap.ipsec_sas)
    ipsec_family = GaugeMetricFamily(
        "libreswan_ipsec_sas",
        "IPsec SAs (strongSwan's CHILD SAs) by connection and pluto's state name (empty "
        "when showstates did not name it).",
        labels=["conn", "state"],
    )
    for (conn, state), n in sorted(ipsec.items()):
        ipsec_family.add_metric([conn, state], n)
    yield ipsec_family
    half_open = snap.global_counters.get("current.states.iketype.halfopen")
    if half_open is not None:
        yield GaugeMetricFamily(
            "libreswan_ike_sas_half_open",
            "IKE SAs still being negotiated (pluto's half-open count).",
            value=half_open,
        )


def _connections(snap: PlutoSnapshot) -> Iterable[Metric]:
    configured = GaugeMetricFamily(
        "libreswan_connection_configured",
        "1 for every connection loaded in pluto (templates and permanent connections, not "
        "the instances a template spawns); kind is template or permanent.",
        labels=["conn", "kind", "version"],
    )
    established = GaugeMetricFamily(
        "libreswan_connection_established",
        "Established IKE SAs of a loaded connection, its instances included (0 when it is down).",
        labels=["conn"],
    )
    up = Counter(sa.connection for sa in snap.ike_sas if sa.established)
    seen: set[str] = set()
    for conn in sorted(snap.connections, key=lambda c: (c.name, c.instance or 0)):
        if conn.kind == "instance" or conn.name in seen:
            continue
        seen.add(conn.name)
        configured.add_metric([conn.name, conn.kind, conn.version], 1)
        established.add_metric([conn.name], up.get(conn.name, 0))
    yield configured
    yield established


def _tunnels_by_user(snap: PlutoSnapshot) -> Counter[tuple[str, str]]:
    # An instance in the middle of a rekey has two IPsec SAs; it is one session.
    tunnels = {(sa.connection, sa.instance, sa.peer): sa for sa in snap.ipsec_sas}
    return Counter((conn, user_of(sa)) for (conn, _, _), sa in tunnels.items())


def _users(snap: PlutoSnapshot, limiter: SeriesLimiter) -> Iterable[Metric]:
    family = gauge_table(
        "libreswan_user_sessions",
        "Connected tunnels (connection instances with an IPsec SA) per connection and user "
        "(XAuth user name, else IKE identity, else the peer's address).",
        ["conn", "user"],
    )
    rows = sorted(_tunnels_by_user(snap).items())
    family.extend(
        ((conn, user), n) for (conn, user), n in limiter.take("libreswan_user_sessions", rows)
    )
    yield family


def _sa_details(snap: PlutoSnapshot, limiter: SeriesLimiter) -> Iterable[Metric]:
    info = gauge_table(
        "libreswan_ipsec_sa_info",
        "One series per IPsec SA with its connection, instance, peer and identity; always 1.",
        SA_LABELS,
    )
    current = gauge_table(
        "libreswan_ipsec_sa_current_bytes",
        "Bytes through one IPsec SA so far (trafficstatus inBytes/outBytes).",
        ["conn", "serial", "direction"],
    )
    since = gauge_table(
        "libreswan_ipsec_sa_added_timestamp_seconds",
        "When the IPsec SA was installed (trafficstatus add_time).",
        ["conn", "serial"],
    )
    sas = sorted(snap.ipsec_sas, key=lambda sa: (sa.connection, sa.serial))
    for sa in limiter.take("libreswan_ipsec_sa_info", sas):
        serial = str(sa.serial)
        instance = "" if sa.instance is None else str(sa.instance)
        info.add(
            (
                sa.connection,
                instance,
                serial,
                sa.peer,
                user_of(sa),
                sa.identity or "",
                sa.state or "",
            ),
            1,
        )
        current.add((sa.connection, serial, "in"), sa.in_bytes)
        current.add((sa.connection, serial, "out"), sa.out_bytes)
        if sa.added_at is not None:
            since.add((sa.connection, serial), sa.added_at)
    yield info
    yield current
    yield since


def global_counters(counters: dict[str, int]) -> list[Metric]:
    """pluto's `globalstatus` totals (carried over its restarts by the ledger)."""
    ike = CounterMetricFamily(
        "libreswan_ike_sa_negotiations",
        "IKE SA negotiations by IKE version and outcome (globalstatus "
        "total.ike.<version>.established|failed|completed, continued across pluto restarts).",
        labels=["version", "outcome"],
    )
    for key, (version, outcome) in _IKE_OUTCOMES.items():
        if key in counters:
            ike.add_metric([version, outcome], counters[key])
    dpd = CounterMetricFamily(
        "libreswan_dpd_messages",
        "Dead peer detection messages (globalstatus total.ike.dpd.*, continued across pluto "
        "restarts): sent, recv(eived) and replied.",
        labels=["kind"],
    )
    for key, kind in _DPD.items():
        if key in counters:
            dpd.add_metric([kind], counters[key])
    traffic = CounterMetricFamily(
        "libreswan_ike_traffic_bytes",
        "Bytes of IKE messages (globalstatus total.ike.traffic.*, continued across pluto "
        "restarts).",
        labels=["direction"],
    )
    for key, direction in _IKE_TRAFFIC.items():
        if key in counters:
            traffic.add_metric([direction], counters[key])
    return [ike, dpd, traffic]


def kernel_families(subscribed: bool, overflows: int) -> list[Metric]:
    return [
        GaugeMetricFamily(
            "libreswan_xfrm_events_subscribed",
            "1 while the exporter follows the kernel's XFRM SA notifications (a round at "
            "every SA change, final byte counts of ended SAs), else 0.",
            value=1 if subscribed else 0,
        ),
        CounterMetricFamily(
            "libreswan_xfrm_events_overflows",
            "Times the kernel dropped XFRM notifications because the exporter read them too "
            "slowly (ENOBUFS); SAs that came and went in such a burst may be missed.",
            value=overflows,
        ),
    ]


def render_ledger(
    ledger: LedgerReadings,
    snap: PlutoSnapshot | None,
    options: LibreswanOptions,
    limiter: SeriesLimiter,
) -> list[Metric]:
    """Counts since the exporter started; `snap` (the last good round) gives every
    configured connection zero series, so the first drop is an increase."""
    events = {(c.name, e): 0 for c in (snap.connections if snap else ()) for e in EVENTS}
    events = {k: v for k, v in events.items() if k[0]}  # instances share their name
    events.update(ledger.events)
    family = CounterMetricFamily(
        "libreswan_ipsec_sa_events",
        "IPsec SAs that came up, went down (drops: no newer SA of the same connection "
        "instance and peer) or were rekeyed, while the exporter ran.",
        labels=["conn", "event"],
    )
    for (conn, event), n in sorted(events.items()):
        family.add_metric([conn, event], n)
    last_change = GaugeMetricFamily(
        "libreswan_connection_last_change_timestamp_seconds",
        "When an IPsec SA of the connection last came up or went down.",
        labels=["conn"],
    )
    for conn, at in sorted(ledger.last_change.items()):
        last_change.add_metric([conn], at)
    conn_bytes = CounterMetricFamily(
        "libreswan_connection_bytes",
        "Bytes through the connection's IPsec SAs while the exporter ran: ended SAs' final "
        "counts plus the live ones'; rekeys and reconnects never lower it.",
        labels=["conn", "direction"],
    )
    for conn, traffic in sorted(ledger.connection_traffic.items()):
        conn_bytes.add_metric([conn, "in"], traffic.in_bytes)
        conn_bytes.add_metric([conn, "out"], traffic.out_bytes)
    families: list[Metric] = [family, last_change, conn_bytes]
    if options.user_metrics:
        user_bytes = TableFamily(
            "libreswan_user_bytes",
            "Bytes per connection and user while the exporter ran (ended SAs' final counts "
            "plus live ones').",
            "counter",
            ["conn", "user", "direction"],
        )
        rows = sorted(ledger.user_traffic.items())
        for (conn, user), traffic in limiter.take("libreswan_user_bytes", rows):
            user_bytes.add((conn, user, "in"), traffic.in_bytes)
            user_bytes.add((conn, user, "out"), traffic.out_bytes)
        families.append(user_bytes)
        families.append(
            CounterMetricFamily(
                "libreswan_users_untracked",
                "Users whose traffic totals were not kept because the ledger was full.",
                value=ledger.untracked_users,
            )
        )
    return families
