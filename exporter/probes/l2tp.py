"""The `l2tp` prober: an L2TP control connection (SCCRQ → SCCRP, SCCCN) and a clean StopCCN.

For paths where UDP/1701 is reachable in clear: inside a tunnel, or in a lab. A server that
requires IPsec drops clear-text L2TP, which this prober reports as silence.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from exporter.probes import l2tp_packets as p
from exporter.probes.base import (
    Phases,
    ProbeFailure,
    Target,
    gauge,
    info_gauge,
    ip_protocol,
    resolve,
    run_guarded,
)
from exporter.probes.config import Module
from exporter.probes.l2tp_control import L2tpError, L2tpTunnel
from exporter.probes.udp import UdpEndpoint

PHASES = ("resolve", "connect", "close")
#: Kept for the StopCCN after the deadline: a tunnel left open lingers on the LNS.
CLOSE_TIMEOUT = 2.0


def record_peer(registry: CollectorRegistry, prefix: str, sccrp: p.ControlMessage) -> None:
    version = sccrp.avp(p.PROTOCOL_VERSION)
    firmware = sccrp.u16(p.FIRMWARE_REVISION)
    info_gauge(
        registry,
        f"{prefix}_peer_info",
        "What the LNS said about itself in its SCCRP",
        host_name=sccrp.text(p.HOST_NAME),
        vendor=sccrp.text(p.VENDOR_NAME),
        firmware_revision="" if firmware is None else f"0x{firmware:04x}",
        protocol_version=f"{version.value[0]}.{version.value[1]}"
        if version and len(version.value) == 2
        else "",
    )


async def probe(
    target: Target,
    module: Module,
    registry: CollectorRegistry,
    log: logging.Logger,
    deadline: float,
) -> bool:
    opts = module.l2tp
    phases = Phases(registry, PHASES)
    loop = asyncio.get_running_loop()

    async def body() -> bool:
        with phases("resolve"):
            address = await resolve(target, opts.preferred_ip_protocol)
        gauge(registry, "probe_ip_protocol", "IP version of the address", ip_protocol(address))
        endpoint = await UdpEndpoint.open((address, target.port or opts.port))
        tunnel = L2tpTunnel(endpoint, opts.host_name, opts.retransmit_interval)
        tunnel.start()
        try:
            with phases("connect"):
                start = loop.time()
                try:
                    async with asyncio.timeout_at(deadline):
                        sccrp = await tunnel.connect()
                except L2tpError as err:
                    raise ProbeFailure(f"no control connection: {err}") from None
                except TimeoutError:
                    raise ProbeFailure("no SCCRP before the deadline") from None
                gauge(
                    registry,
                    "probe_l2tp_rtt_seconds",
                    "From SCCRQ to the LNS's SCCRP",
                    loop.time() - start,
                )
                record_peer(registry, "probe_l2tp", sccrp)
            with phases("close"):
                acked = await tunnel.close(max(CLOSE_TIMEOUT, deadline - loop.time()))
                gauge(
                    registry,
                    "probe_l2tp_close_acknowledged",
                    "1 if the LNS acknowledged our StopCCN",
                    1 if acked else 0,
                )
                if not acked:
                    raise ProbeFailure("the LNS did not acknowledge StopCCN")
            log.debug("L2TP control connection up and closed", extra={"peer": address})
            return True
        finally:
            await tunnel.stop()

    return await run_guarded(log, phases, body)
