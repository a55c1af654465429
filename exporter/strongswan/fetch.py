"""One consistent round of VICI questions, answered into a `StrongswanSnapshot`."""

from __future__ import annotations

import time

from exporter.strongswan.model import StrongswanSnapshot
from exporter.strongswan.parse import (
    parse_certificates,
    parse_connections,
    parse_counters,
    parse_ike_sas,
    parse_pools,
    parse_stats,
    parse_version,
)
from exporter.vici import ViciClient, ViciCommandError


async def fetch_snapshot(client: ViciClient) -> StrongswanSnapshot:
    """Ask charon everything one scrape needs, one command after another.

    Raises `ViciError` when charon cannot be asked; a missing counters plugin is not an
    error (the counters are then absent).
    """
    version = await client.request("version")
    stats = await client.request("stats")
    sas = await client.streamed_request("list-sas", "list-sa", {"noblock": "yes"})
    now = time.time()
    conns = await client.streamed_request("list-conns", "list-conn")
    pools = await client.request("get-pools", {"leases": "no"})
    certs = await client.streamed_request("list-certs", "list-cert", {"type": "X509"})
    try:
        counters = parse_counters(await client.request("get-counters"))
    except ViciCommandError:
        counters = None  # the counters plugin is optional
    certificates, unreadable = parse_certificates(certs)
    return StrongswanSnapshot(
        taken_at=now,
        version=parse_version(version),
        stats=parse_stats(stats),
        ike_sas=parse_ike_sas(sas, now),
        connections=parse_connections(conns),
        pools=parse_pools(pools),
        certificates=certificates,
        counters=counters,
        unreadable_certificates=unreadable,
    )
