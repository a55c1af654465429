"""strongSwan's state over VICI as Prometheus metrics.

The metric names here are the contract dashboards and alerts rely on; README.md lists them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.collectors.base import Collection
from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.order import SeriesOrders, take_in_order
from exporter.collectors.strongswan_kernel_traffic import kernel_traffic
from exporter.collectors.strongswan_ledger import (
    render_ledger,
    render_stream,
    untracked_family,
)
from exporter.config import StrongswanOptions
from exporter.kernel.source import KernelSource
from exporter.strongswan.ledger import Traffic
from exporter.strongswan.parse import PRIORITIES
from exporter.strongswan.snapshot import ChildSA, IkeSA, StrongswanSnapshot
from exporter.strongswan.view import CharonView
from exporter.table_family import gauge_table

log = logging.getLogger("exporter.collectors.strongswan")

IKE_SA_LABELS = (
    "conn",
    "uniqueid",
    "version",
    "remote_host",
    "remote_id",
    "user",
    "encr_alg",
    "integ_alg",
    "prf_alg",
    "dh_group",
)

#: get-counters names → (exchange, direction, kind) of strongswan_ike_messages_total.
_MESSAGE_COUNTERS = {
    f"{exchange}-{direction}-{kind}": (exchange.replace("-", "_"), direction, kind)
    for exchange in ("ike-init", "ike-auth", "create-child", "info")
    for direction in ("in", "out")
    for kind in ("req", "resp")
}
_KIND_NAMES = {"req": "request", "resp": "response"}


def up_family(up: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "strongswan_up",
        "1 when the last exchange with charon over VICI worked, else 0.",
        value=1 if up else 0,
    )


class StrongswanCollector:
    """Renders the live view of charon (`CharonView`); it reads, never drives, the view
    (but for the per-scrape refresh of synchronous mode, and the kernel's CHILD SA counts
    it hands the view's ledger at each scrape)."""

    name = "strongswan"

    def __init__(
        self,
        view: CharonView,
        options: StrongswanOptions,
        limiter: SeriesLimiter | None = None,
        kernel: KernelSource | None = None,
    ) -> None:
        """`limiter` is the scrape layer's, shared by every collector (the daemon passes
        `Scraper.limiter`); without one, the collector bounds its series alone. `kernel`:
        the reader of the kernel's tables the kernel collectors share (one XFRM dump per
        scrape); with it, the CHILD SA byte and packet counts come from the kernel's XFRM
        states whenever it holds charon's CHILD SAs (`strongswan_kernel_traffic`)."""
        self._view = view
        self._options = options
        self._limiter = limiter if limiter is not None else SeriesLimiter(options.series_limit)
        self._orders = SeriesOrders()
        #: A render failure was logged with its traceback (once, not at every scrape).
        self._render_failing = False
        self._kernel = kernel
        #: The kernel's last counts of the live CHILD SAs, by uniqueid.
        self._kernel_counts: dict[str, Traffic] = {}
        #: Monotonic time of the last XFRM dump read since the kernel first held charon's
        #: CHILD SAs (None: never; kernel-libipsec).
        self._kernel_read_at: float | None = None
        #: The XFRM dump failed at the last try (logged once, not at every scrape).
        self._kernel_failing = False

    def reconfigure(self, options: StrongswanOptions) -> None:
        # The series limit belongs to the limiter's owner, the Scraper.
        self._options = options

    async def collect(self) -> Collection:
        view = self._view
        try:
            if not view.background:
                # Synchronous mode: every scrape asks charon (bounded by the VICI timeout).
                # In background mode a scrape never waits on charon, not even before its
                # first answer: until then it says strongswan_up 0.
                await view.refresh()
            traffic = await self._kernel_traffic(view)
            return self._render(view, traffic)
        except Exception as err:  # whatever breaks, strongswan_up is there for the alerts
            if not self._render_failing:
                log.exception("cannot render what charon said")
            self._render_failing = True
            families: list[Metric] = [up_family(False)]
            return Collection(families, success=False, error=f"{type(err).__name__}: {err}")

    async def _kernel_traffic(self, view: CharonView) -> Mapping[str, Traffic]:
        """The kernel's counts of charon's live CHILD SAs, by uniqueid, also handed to the
        ledger (`observe_traffic`) so its totals are as fresh; empty when the kernel holds
        none of them. A failed dump leaves the last counts (their age is
        `strongswan_kernel_traffic_age_seconds`)."""
        snapshot = view.current()
        if self._kernel is None or snapshot is None or not view.up:
            return {}
        try:
            xfrm = await self._kernel.xfrm()
        except (OSError, TimeoutError) as err:
            if not self._kernel_failing:
                log.warning(
                    "cannot read the kernel's XFRM states; CHILD SA traffic stays as last "
                    "read, or as charon last listed it",
                    extra={"err": str(err) or type(err).__name__},
                )
            self._kernel_failing = True
            live = {c.uniqueid for sa in snapshot.ike_sas for c in sa.children}
            self._kernel_counts = {k: t for k, t in self._kernel_counts.items() if k in live}
            return self._kernel_counts
        if self._kernel_failing:
            log.info("the kernel's XFRM states can be read again")
        self._kernel_failing = False
        seen = kernel_traffic(snapshot.ike_sas, xfrm.states)
        if seen or self._kernel_read_at is not None:
            self._kernel_read_at = time.monotonic()
        self._kernel_counts = seen
        if seen:
            # The kernel holds charon's CHILD SAs: a REKEYED one with no state left was
            # deleted (charon sends no event for it), else it would linger until the next
            # listing, minutes away with kernel counts.
            gone = [
                (sa.uniqueid, c.uniqueid)
                for sa in snapshot.ike_sas
                for c in sa.children
                if c.state == "REKEYED" and c.uniqueid not in seen
            ]
            view.observe_traffic(seen, gone)
        return seen

    def kernel_traffic_age(self) -> float | None:
        """Seconds since the kernel's XFRM states were last read, once they have held
        charon's CHILD SAs (None: never, the counts come from listings)."""
        at = self._kernel_read_at
        return None if at is None else time.monotonic() - at

    def _render(self, view: CharonView, traffic: Mapping[str, Traffic] | None = None) -> Collection:
        snapshot = view.current()
        up = view.up
        families: list[Metric] = [up_family(up)]
        if up and snapshot is not None:
            families += render(
                snapshot, self._options, self._limiter, self._orders, traffic=traffic
            )
        families += self._ledger_families(view, snapshot)
        age = view.age()
        if age is not None:
            families.append(
                GaugeMetricFamily(
                    "strongswan_snapshot_age_seconds",
                    "Seconds since charon last answered the background questions (stats, "
                    "connections, pools, certificates, counters); SAs coming and going in "
                    "between are known from events.",
                    value=age,
                )
            )
        listing_age = view.listing_age()
        if listing_age is not None:
            families.append(
                GaugeMetricFamily(
                    "strongswan_sa_listing_age_seconds",
                    "Seconds since charon last listed every SA (list-sas): how old the CHILD "
                    "SA byte and packet counts of live SAs can be when the kernel does not "
                    "give them (strongswan_kernel_traffic_age_seconds).",
                    value=listing_age,
                )
            )
        listing_seconds = view.listing_seconds()
        if listing_seconds is not None:
            families.append(
                GaugeMetricFamily(
                    "strongswan_sa_listing_duration_seconds",
                    "Seconds the last background round with list-sas took, as the exporter "
                    "saw it (what --collector.strongswan.sa-refresh-interval auto scales).",
                    value=listing_seconds,
                )
            )
        if view.background:
            families.append(
                GaugeMetricFamily(
                    "strongswan_sa_listing_interval_seconds",
                    "Seconds between background listings now: --collector.strongswan."
                    "sa-refresh-interval, or what auto picked from the last listing's "
                    "duration and whether the kernel gives the CHILD SA counts.",
                    value=view.listing_interval(),
                )
            )
        kernel_age = self.kernel_traffic_age()
        if kernel_age is not None:
            families.append(
                GaugeMetricFamily(
                    "strongswan_kernel_traffic_age_seconds",
                    "Seconds since the kernel's XFRM states last gave the CHILD SA byte and "
                    "packet counts (read at every scrape; older when the XFRM dump fails). "
                    "Absent while the kernel has held none of charon's CHILD SAs "
                    "(kernel-libipsec).",
                    value=kernel_age,
                )
            )
        self._render_failing = False
        return Collection(families=families, success=up, error=view.error)

    def _ledger_families(
        self, view: CharonView, snapshot: StrongswanSnapshot | None
    ) -> list[Metric]:
        families: list[Metric] = []
        ledger = view.ledger_readings()
        if ledger is not None:
            connections = snapshot.connections if snapshot is not None else ()
            families += render_ledger(
                ledger,
                connections,
                self._limiter,
                self._options.user_metrics,
                self._orders.user_traffic,
            )
        else:
            # Events off: no ledger, so the SA table's cap is the one that counts.
            families.append(untracked_family(view.untracked))
        stream = view.stream_health()
        if stream is not None:
            families += render_stream(stream)
        return families


def render(
    snapshot: StrongswanSnapshot,
    options: StrongswanOptions,
    limiter: SeriesLimiter,
    orders: SeriesOrders | None = None,
    traffic: Mapping[str, Traffic] | None = None,
) -> list[Metric]:
    """All strongSwan families for one snapshot (except `strongswan_up`). `orders` keeps
    the sorted order of the big families from one scrape to the next; `traffic`: fresher
    counts of CHILD SAs by uniqueid (the kernel's) than the snapshot's."""
    orders = orders or SeriesOrders()
    families: list[Metric] = []
    families += _daemon(snapshot)
    families += _sa_counts(snapshot)
    families += _connections(snapshot)
    if options.user_metrics:
        families += _users(snapshot, limiter, orders)
    if options.sa_details:
        families += _sa_details(snapshot, limiter, orders, traffic or {})
    families += _pools(snapshot)
    families += _certificates(snapshot)
    if snapshot.counters is not None:
        families += _counters(snapshot.counters)
    return families


def _daemon(snap: StrongswanSnapshot) -> Iterable[Metric]:
    info = GaugeMetricFamily(
        "strongswan_info",
        "Version of the IKE daemon and its operating system; always 1.",
        labels=["daemon", "version", "sysname", "release"],
    )
    v = snap.version
    info.add_metric([v.daemon, v.version, v.sysname, v.release], 1)
    yield info
    if snap.stats.start_time is not None:
        yield GaugeMetricFamily(
            "strongswan_start_time_seconds",
            "When charon started, in seconds since the epoch.",
            value=snap.stats.start_time,
        )
    stats = snap.stats
    workers = GaugeMetricFamily(
        "strongswan_workers", "charon worker threads by state.", labels=["state"]
    )
    workers.add_metric(["idle"], stats.workers_idle)
    workers.add_metric(["active"], stats.workers_total - stats.workers_idle)
    yield workers
    active = GaugeMetricFamily(
        "strongswan_workers_active",
        "charon worker threads busy with a job, by job priority.",
        labels=["priority"],
    )
    queue = GaugeMetricFamily(
        "strongswan_job_queue",
        "Jobs waiting for a worker thread, by priority.",
        labels=["priority"],
    )
    for priority in PRIORITIES:
        active.add_metric([priority], stats.workers_active.get(priority, 0))
        queue.add_metric([priority], stats.queued_jobs.get(priority, 0))
    yield active
    yield queue
    yield GaugeMetricFamily(
        "strongswan_scheduled_jobs",
        "Jobs scheduled for timed execution (rekeys, DPD, timeouts).",
        value=stats.scheduled_jobs,
    )
    yield GaugeMetricFamily(
        "strongswan_ike_sas_half_open",
        "IKE SAs in the half-open state (IKE_SA_INIT answered, not yet authenticated).",
        value=stats.ike_sas_half_open,
    )


def _sa_counts(snap: StrongswanSnapshot) -> Iterable[Metric]:
    # Counted from generators: Counter does that in C, several times faster per SA.
    ike = Counter((sa.conn, sa.state) for sa in snap.ike_sas)
    child = Counter((sa.conn, c.name, c.state) for sa in snap.ike_sas for c in sa.children)
    for conn in snap.connections:
        ike.setdefault((conn.name, "ESTABLISHED"), 0)
        for child_name in conn.children:
            child.setdefault((conn.name, child_name, "INSTALLED"), 0)
    ike_family = GaugeMetricFamily(
        "strongswan_ike_sas",
        "IKE SAs by connection and state (ESTABLISHED is shown for every loaded connection).",
        labels=["conn", "state"],
    )
    for (conn_name, state), count in sorted(ike.items()):
        ike_family.add_metric([conn_name, state], count)
    yield ike_family
    child_family = GaugeMetricFamily(
        "strongswan_child_sas",
        "CHILD SAs by connection, child and state (INSTALLED is shown for every loaded child).",
        labels=["conn", "child", "state"],
    )
    for (conn_name, child_name, state), count in sorted(child.items()):
        child_family.add_metric([conn_name, child_name, state], count)
    yield child_family


def _connections(snap: StrongswanSnapshot) -> Iterable[Metric]:
    configured = GaugeMetricFamily(
        "strongswan_connection_configured",
        "1 for every connection loaded in charon; version is IKEv1, IKEv2 or IKEv1/2.",
        labels=["conn", "version"],
    )
    established = GaugeMetricFamily(
        "strongswan_connection_established",
        "Established IKE SAs of a loaded connection (0 when it is down).",
        labels=["conn"],
    )
    up = Counter(sa.conn for sa in snap.ike_sas if sa.state == "ESTABLISHED")
    for conn in sorted(snap.connections, key=lambda c: c.name):
        configured.add_metric([conn.name, conn.version], 1)
        established.add_metric([conn.name], up.get(conn.name, 0))
    yield configured
    yield established


def _users(
    snap: StrongswanSnapshot, limiter: SeriesLimiter, orders: SeriesOrders
) -> Iterable[Metric]:
    sessions = Counter((sa.conn, sa.user) for sa in snap.ike_sas if sa.state == "ESTABLISHED")
    family = gauge_table(
        "strongswan_user_sessions",
        "Established IKE SAs per connection and user (XAuth/EAP identity, else remote id).",
        ["conn", "user"],
    )
    rows = take_in_order(limiter, "strongswan_user_sessions", orders.user_sessions, sessions)
    family.extend(rows)
    yield family


def _sa_sort_key(sa: IkeSA) -> tuple[str, int, str]:
    return (
        sa.conn,
        int(sa.uniqueid) if sa.uniqueid.isascii() and sa.uniqueid.isdigit() else 0,
        sa.uniqueid,
    )


def _child_counts(child: ChildSA, fresher: Traffic | None) -> tuple[int, int, int, int]:
    """(bytes in, bytes out, packets in, packets out): the larger of the snapshot's and the
    fresher reading's (an SA's counts only grow)."""
    if fresher is None:
        return (child.bytes_in, child.bytes_out, child.packets_in, child.packets_out)
    return (
        max(child.bytes_in, fresher.bytes_in),
        max(child.bytes_out, fresher.bytes_out),
        max(child.packets_in, fresher.packets_in),
        max(child.packets_out, fresher.packets_out),
    )


def _sa_details(
    snap: StrongswanSnapshot,
    limiter: SeriesLimiter,
    orders: SeriesOrders,
    traffic: Mapping[str, Traffic],
) -> Iterable[Metric]:
    info = gauge_table(
        "strongswan_ike_sa_info",
        "One series per IKE SA with its peer, identity and algorithms; always 1.",
        IKE_SA_LABELS,
    )
    since = gauge_table(
        "strongswan_ike_sa_established_timestamp_seconds",
        "When the IKE SA was established, in seconds since the epoch.",
        IKE_SA_LABELS,
    )
    child_bytes = gauge_table(
        "strongswan_child_sa_current_bytes",
        "Bytes through the current CHILD SA; restarts with every rekey.",
        ["conn", "child", "ike_uniqueid", "uniqueid", "direction"],
    )
    child_packets = gauge_table(
        "strongswan_child_sa_current_packets",
        "Packets through the current CHILD SA; restarts with every rekey.",
        ["conn", "child", "ike_uniqueid", "uniqueid", "direction"],
    )
    info_rows, since_rows = info.rows, since.rows
    byte_rows, packet_rows = child_bytes.rows, child_packets.rows
    by_key = {_sa_sort_key(sa): sa for sa in snap.ike_sas}
    sas = [
        sa for _key, sa in take_in_order(limiter, "strongswan_ike_sa_info", orders.ike_sas, by_key)
    ]
    for sa in sas:
        labels = (
            sa.conn,
            sa.uniqueid,
            sa.version,
            sa.remote_host,
            sa.remote_id,
            sa.user,
            sa.encr_alg,
            sa.integ_alg,
            sa.prf_alg,
            sa.dh_group,
        )
        info_rows.append((labels, 1))
        if sa.established_at is not None:
            since_rows.append((labels, sa.established_at))
        for c in sa.children:
            inbound = (sa.conn, c.name, sa.uniqueid, c.uniqueid, "in")
            outbound = (sa.conn, c.name, sa.uniqueid, c.uniqueid, "out")
            bytes_in, bytes_out, packets_in, packets_out = _child_counts(c, traffic.get(c.uniqueid))
            byte_rows.append((inbound, bytes_in))
            byte_rows.append((outbound, bytes_out))
            packet_rows.append((inbound, packets_in))
            packet_rows.append((outbound, packets_out))
    yield from (info, since, child_bytes, child_packets)


def _pools(snap: StrongswanSnapshot) -> Iterable[Metric]:
    addresses = GaugeMetricFamily(
        "strongswan_pool_addresses",
        "Leased virtual IP addresses per pool: online (in use) or offline (reserved).",
        labels=["pool", "state"],
    )
    size = GaugeMetricFamily(
        "strongswan_pool_size", "Addresses a virtual IP pool can hand out.", labels=["pool"]
    )
    for pool in sorted(snap.pools, key=lambda p: p.name):
        addresses.add_metric([pool.name, "online"], pool.online)
        addresses.add_metric([pool.name, "offline"], pool.offline)
        size.add_metric([pool.name], pool.size)
    yield addresses
    yield size


def _certificates(snap: StrongswanSnapshot) -> Iterable[Metric]:
    expiry = GaugeMetricFamily(
        "strongswan_certificate_expiry_timestamp_seconds",
        "When a certificate loaded in charon expires (notAfter), in seconds since the epoch.",
        labels=["subject", "serial", "type", "flag"],
    )
    for cert in sorted(snap.certificates, key=lambda c: (c.subject, c.serial)):
        expiry.add_metric([cert.subject, cert.serial, cert.type, cert.flag], cert.not_after)
    yield expiry
    yield GaugeMetricFamily(
        "strongswan_certificates_unreadable",
        "Certificates charon listed that the exporter could not decode.",
        value=snap.unreadable_certificates,
    )


def _counters(counters: dict[str, int]) -> Iterable[Metric]:
    rekeys = CounterMetricFamily(
        "strongswan_ike_rekeys",
        "IKE SA rekeys since charon started, by our role in them (IKEv2 only).",
        labels=["role"],
    )
    rekeys.add_metric(["initiator"], counters.get("ike-rekey-init", 0))
    rekeys.add_metric(["responder"], counters.get("ike-rekey-resp", 0))
    yield rekeys
    yield CounterMetricFamily(
        "strongswan_child_rekeys",
        "CHILD SA rekeys since charon started (IKEv2 only).",
        value=counters.get("child-rekey", 0),
    )
    yield CounterMetricFamily(
        "strongswan_invalid_messages",
        "IKE messages charon dropped as invalid since it started.",
        value=counters.get("invalid", 0),
    )
    yield CounterMetricFamily(
        "strongswan_invalid_spi_messages",
        "IKE messages for an unknown SPI since charon started.",
        value=counters.get("invalid-spi", 0),
    )
    messages = CounterMetricFamily(
        "strongswan_ike_messages",
        "IKEv2 messages since charon started, by exchange, direction and kind.",
        labels=["exchange", "direction", "kind"],
    )
    for key, (exchange, direction, kind) in _MESSAGE_COUNTERS.items():
        messages.add_metric([exchange, direction, _KIND_NAMES[kind]], counters.get(key, 0))
    yield messages
