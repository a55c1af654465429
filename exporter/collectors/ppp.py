"""ppp interfaces (one per PPP session) from rtnetlink: traffic, addresses, up since."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from operator import attrgetter

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import Collection
from exporter.collectors.limits import SeriesLimiter
from exporter.kernel.gcpause import gc_paused
from exporter.kernel.model import PppInterface
from exporter.kernel.source import KernelSource
from exporter.table_family import counter_table, gauge_table

log = logging.getLogger("exporter.collectors.ppp")

#: (metric suffix, LinkStats field, help).
COUNTERS = (
    ("receive_bytes", "rx_bytes", "Bytes received on the ppp interface (from the client)."),
    ("transmit_bytes", "tx_bytes", "Bytes sent on the ppp interface (to the client)."),
    ("receive_packets", "rx_packets", "Packets received on the ppp interface."),
    ("transmit_packets", "tx_packets", "Packets sent on the ppp interface."),
    ("receive_errors", "rx_errors", "Receive errors on the ppp interface."),
    ("transmit_errors", "tx_errors", "Transmit errors on the ppp interface."),
    ("receive_drops", "rx_dropped", "Received packets the ppp interface dropped."),
    ("transmit_drops", "tx_dropped", "Packets to send the ppp interface dropped."),
)


@gc_paused
def render_ppp(interfaces: Sequence[PppInterface], limiter: SeriesLimiter) -> list[Metric]:
    families: list[Metric] = [
        GaugeMetricFamily(
            "ppp_interfaces",
            "ppp interfaces matching --collector.ppp.interfaces.",
            value=len(interfaces),
        )
    ]
    info = gauge_table(
        "ppp_interface_info",
        "One series per ppp interface with our and the client's inner address; always 1.",
        ["interface", "local_address", "peer_address"],
    )
    since = gauge_table(
        "ppp_interface_up_since_timestamp_seconds",
        "When the ppp interface got its IPv4 address (IPCP up), in seconds since the epoch.",
        ["interface"],
    )
    counters = [
        (counter_table(f"ppp_interface_{suffix}", text, ["interface"]), field)
        for suffix, field, text in COUNTERS
    ]
    # Rows built a family at a time (one comprehension each): the same rows in the same
    # order as a loop over the interfaces, at a fraction of the calls.
    taken = limiter.take("ppp_interface_info", interfaces)
    names = [(iface.name,) for iface in taken]
    stats = [iface.stats for iface in taken]
    info.extend([((i.name, i.local_address, i.peer_address), 1) for i in taken])
    since.extend(
        [(name, i.up_since) for name, i in zip(names, taken, strict=True) if i.up_since is not None]
    )
    for family, field in counters:
        get = attrgetter(field)
        family.extend([(name, get(s)) for name, s in zip(names, stats, strict=True)])
    families += [info, since, *(family for family, _field in counters)]
    return families


class PppCollector:
    name = "ppp"

    def __init__(self, source: KernelSource, limiter: SeriesLimiter) -> None:
        self._source = source
        self._limiter = limiter

    async def collect(self) -> Collection:
        try:
            interfaces = await self._source.ppp()
        except (OSError, TimeoutError) as err:
            return Collection(success=False, error=f"rtnetlink: {err or 'timeout'}")
        return Collection(families=render_ppp(interfaces, self._limiter))
