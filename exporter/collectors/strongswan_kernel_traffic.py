"""charon's CHILD SAs joined to the kernel's XFRM states: fresh traffic at every scrape.

With charon's kernel-netlink (every production server) each CHILD SA is a pair of XFRM
states, and their lifetime counters (curlft bytes and packets) are the very numbers charon
lists as bytes-in/out and packets-in/out: it asks the kernel for them. A dump of the
states costs milliseconds where a `list-sas` of thousands of SAs costs charon seconds, so
the collector joins the two at each scrape:

- the inbound state has the CHILD SA's `spi_in` and our address (the IKE SA's local host)
  as its destination, the outbound one `spi_out` and the peer's (remote host);
- the protocol (ESP, AH) and, when charon gives one, the reqid must agree too: charon's
  reqids are the kernel's, so an outbound SPI that two peers happened to pick alike, or
  a state of another daemon, is never taken for this CHILD SA's;
- several states that agree on all of that are one CHILD SA's and are summed (per-CPU
  copies of one SA; strongSwan 6.0.2+ on Linux 6.13+ negotiates each per-CPU SA as a
  CHILD SA of its own, with SPIs of its own, and those join one by one).

A CHILD SA none of whose states is in the kernel (charon's userspace kernel-libipsec, a
charon in another network namespace, an SA being installed or deleted) keeps the counts
of the last listing. Pure functions over the sources' snapshots, so recorded dumps and
answers exercise exactly what production does; it lives with the collectors because it
needs both sources' types (no source imports another).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from exporter.kernel.model import XfrmState
from exporter.strongswan.ledger import Traffic
from exporter.strongswan.snapshot import ChildSA, IkeSA

#: (SPI, protocol as the kernel names it) → the states that have them.
StateIndex = dict[tuple[int, str], list[XfrmState]]


def index_states(states: Iterable[XfrmState]) -> StateIndex:
    index: StateIndex = {}
    for state in states:
        index.setdefault((state.spi, state.proto), []).append(state)
    return index


@lru_cache(maxsize=4096)
def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _same_address(a: str, b: str) -> bool:
    return a == b or _canonical(a) == _canonical(b)


def _reqid(child: ChildSA) -> int | None:
    text = child.reqid
    return int(text) if text.isascii() and text.isdigit() else None


def _counts(
    index: StateIndex, spi: int | None, proto: str, dst: str, reqid: int | None
) -> tuple[int, int] | None:
    """Bytes and packets of the states of one direction of a CHILD SA; None: none there."""
    if spi is None:
        return None
    candidates = index.get((spi, proto))
    if not candidates:
        return None
    found = False
    octets = packets = 0
    for state in candidates:
        if reqid is not None and state.reqid != reqid:
            continue
        if not _same_address(state.dst, dst):
            continue
        found = True
        octets += state.bytes
        packets += state.packets
    return (octets, packets) if found else None


def child_traffic(sa: IkeSA, child: ChildSA, index: StateIndex) -> Traffic | None:
    """The kernel's counts of one CHILD SA, None when the kernel holds none of its states.

    A direction the kernel does not hold (yet, or any more) keeps the listing's counts;
    each count is at least the listing's (an SA's counts only grow, and the dump can be
    a moment older than the listing)."""
    proto = child.protocol.lower()
    reqid = _reqid(child)
    inbound = _counts(index, child.spi_in, proto, sa.local_host, reqid)
    outbound = _counts(index, child.spi_out, proto, sa.remote_host, reqid)
    if inbound is None and outbound is None:
        return None
    bytes_in, packets_in = inbound or (0, 0)
    bytes_out, packets_out = outbound or (0, 0)
    return Traffic(
        max(bytes_in, child.bytes_in),
        max(bytes_out, child.bytes_out),
        max(packets_in, child.packets_in),
        max(packets_out, child.packets_out),
    )


def kernel_traffic(ike_sas: Iterable[IkeSA], states: Iterable[XfrmState]) -> dict[str, Traffic]:
    """The kernel's counts of each CHILD SA it holds, by CHILD SA uniqueid (empty when it
    holds none of them: kernel-libipsec)."""
    index = index_states(states)
    if not index:
        return {}
    out: dict[str, Traffic] = {}
    for sa in ike_sas:
        for child in sa.children:
            traffic = child_traffic(sa, child, index)
            if traffic is not None:
                out[child.uniqueid] = traffic
    return out
