"""One consistent round of VICI questions, answered into a `StrongswanSnapshot`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from exporter.strongswan.parse import (
    parse_certificates,
    parse_connections,
    parse_counters,
    parse_ike_sas,
    parse_pools,
    parse_stats,
    parse_version,
)
from exporter.strongswan.snapshot import IkeSA, StrongswanSnapshot
from exporter.vici import ViciClient, ViciCommandError
from exporter.vici.codec import ViciMessage


@dataclass
class ViciAnswers:
    """charon's raw answers for one snapshot, keyed like the VICI commands that gave them.

    Recordings of a real charon (tests/fixtures/vici/) hold exactly these.
    """

    version: ViciMessage
    stats: ViciMessage
    list_sas: list[ViciMessage]
    list_conns: list[ViciMessage]
    get_pools: ViciMessage
    list_certs: list[ViciMessage] = field(default_factory=list)
    #: None when charon has no counters plugin.
    get_counters: ViciMessage | None = None


async def ask_charon(
    client: ViciClient, list_sas: bool = True
) -> tuple[ViciAnswers, float, tuple[IkeSA, ...]]:
    """Ask charon everything one scrape needs, one command after another.

    Returns the answers, the time list-sas was answered, and the listed SAs, parsed as each
    one arrived (so the raw answer of thousands of SAs is never held at once; the
    answers' `list_sas` stays empty). Without `list_sas` the listing is skipped.
    Raises `ViciError` when charon cannot be asked; a missing counters plugin is not an
    error.
    """
    version = await client.request("version")
    stats = await client.request("stats")
    sas: list[tuple[IkeSA, ...]] = []
    if list_sas:
        sas = await client.streamed_request(
            "list-sas",
            "list-sa",
            {"noblock": "yes"},
            each=lambda event: parse_ike_sas([event], time.time()),
        )
    now = time.time()
    conns = await client.streamed_request("list-conns", "list-conn")
    pools = await client.request("get-pools")
    certs = await client.streamed_request("list-certs", "list-cert", {"type": "X509"})
    counters: ViciMessage | None
    try:
        counters = await client.request("get-counters")
    except ViciCommandError:
        counters = None  # the counters plugin is optional
    answers = ViciAnswers(version, stats, [], conns, pools, certs, counters)
    return answers, now, tuple(sa for event in sas for sa in event)


def assemble_snapshot(
    answers: ViciAnswers, now: float, ike_sas: tuple[IkeSA, ...] | None = None
) -> StrongswanSnapshot:
    certificates, unreadable = parse_certificates(answers.list_certs)
    return StrongswanSnapshot(
        taken_at=now,
        version=parse_version(answers.version),
        stats=parse_stats(answers.stats),
        ike_sas=parse_ike_sas(answers.list_sas, now) if ike_sas is None else ike_sas,
        connections=parse_connections(answers.list_conns),
        pools=parse_pools(answers.get_pools),
        certificates=certificates,
        counters=None if answers.get_counters is None else parse_counters(answers.get_counters),
        unreadable_certificates=unreadable,
    )


async def fetch_snapshot(client: ViciClient, list_sas: bool = True) -> StrongswanSnapshot:
    answers, now, ike_sas = await ask_charon(client, list_sas)
    return assemble_snapshot(answers, now, ike_sas)
