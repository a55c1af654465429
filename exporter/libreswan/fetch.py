"""One round of questions to pluto, through an injected runner, into a `PlutoSnapshot`.

The runner takes a query name ("trafficstatus", "showstates", "globalstatus", "status",
"version") and returns the command's stdout as text: in production an
`exporter.libreswan.commands.IpsecRunner`, in tests the recorded answers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from exporter.libreswan.model import PlutoSnapshot
from exporter.libreswan.parse import (
    combine,
    parse_connections,
    parse_globalstatus,
    parse_showstates,
    parse_trafficstatus,
    parse_version,
)

#: query name → the command's stdout; raises the runner's typed errors.
Run = Callable[[str], Awaitable[str]]


async def ask_pluto(run: Run, *, clock: Callable[[], float] = time.time) -> PlutoSnapshot:
    """Ask trafficstatus, showstates, status and globalstatus, one after the other (pluto
    answers whack one request at a time anyway), and combine the answers.

    trafficstatus goes first: it is the answer the per-SA numbers come from, and the
    snapshot's `taken_at` is read just before it. The version is `status`'s
    `pluto_version=` (the running daemon's, which differs from the installed `ipsec`
    after an upgrade without a restart); only when status does not show it is
    `ipsec --version` asked. The first failing command's error propagates: a round is
    whole or not at all."""
    taken_at = clock()
    traffic = parse_trafficstatus(await run("trafficstatus"))
    states = parse_showstates(await run("showstates"))
    status = await run("status")
    connections = parse_connections(status)
    counters = parse_globalstatus(await run("globalstatus"))
    version = parse_version(status) or parse_version(await run("version"))
    return combine(
        taken_at=taken_at,
        version=version,
        traffic=traffic,
        states=states,
        connections=connections,
        counters=counters,
    )


async def ask_traffic(
    run: Run, previous: PlutoSnapshot, *, clock: Callable[[], float] = time.time
) -> PlutoSnapshot:
    """A quick round: `trafficstatus` alone (one command instead of four), for the rounds
    the kernel's SA announcements ask for. Everything else is `previous`'s; an IPsec SA
    `previous` knew keeps what showstates said of it (IKE SA, state, SPIs, port), a new
    one has those None until the next full round."""
    taken_at = clock()
    traffic = parse_trafficstatus(await run("trafficstatus"))
    known = {sa.serial: sa for sa in previous.ipsec_sas}
    sas = []
    for sa in traffic.sas:
        old = known.get(sa.serial)
        if old is not None and (old.connection, old.instance) == (sa.connection, sa.instance):
            sa = replace(
                sa,
                ike_serial=old.ike_serial,
                state=old.state,
                spi_in=old.spi_in,
                spi_out=old.spi_out,
                peer_port=old.peer_port,
                peer=sa.peer or old.peer,
            )
        sas.append(sa)
    return replace(previous, taken_at=taken_at, ipsec_sas=tuple(sas))
