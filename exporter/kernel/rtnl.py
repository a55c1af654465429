"""ppp interfaces from rtnetlink: one link dump and one address dump."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pyroute2 import AsyncIPRoute

from exporter.kernel.model import LinkStats, PppInterface
from exporter.kernel.netlink import (
    check_errors,
    collect_dump,
    netns_error,
    socket_args,
    struct_attr,
    text_attr,
)

RTM_NEWLINK = 16
RTM_NEWADDR = 20
ARPHRD_PPP = 512


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    kind: str
    link_type: int
    stats: LinkStats


@dataclass(frozen=True)
class Address:
    index: int
    family: int
    local: str
    peer: str
    #: IFA_CACHEINFO cstamp: when the address was added, in seconds since boot.
    created: float | None


def boot_time() -> float:
    """The epoch time the kernel booted, on the clock address timestamps count from.

    IFA_CACHEINFO stamps are jiffies since boot, which, like CLOCK_MONOTONIC, stand
    still while the machine is suspended.
    """
    return time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)


def decode_links(msgs: Iterable[Any]) -> list[Link]:
    """Links of an RTM_GETLINK dump answer (pyroute2 ifinfmsg messages)."""
    links = []
    for msg in check_errors(msgs):
        if msg["header"]["type"] != RTM_NEWLINK:
            continue
        stats = struct_attr(msg, "IFLA_STATS64") or {}
        links.append(
            Link(
                name=text_attr(msg, "IFLA_IFNAME"),
                index=msg["index"],
                kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "",
                link_type=msg["ifi_type"],
                stats=LinkStats(
                    rx_bytes=stats.get("rx_bytes", 0),
                    tx_bytes=stats.get("tx_bytes", 0),
                    rx_packets=stats.get("rx_packets", 0),
                    tx_packets=stats.get("tx_packets", 0),
                    rx_errors=stats.get("rx_errors", 0),
                    tx_errors=stats.get("tx_errors", 0),
                    rx_dropped=stats.get("rx_dropped", 0),
                    tx_dropped=stats.get("tx_dropped", 0),
                ),
            )
        )
    return links


def decode_addresses(msgs: Iterable[Any]) -> list[Address]:
    """Addresses of an RTM_GETADDR dump answer (pyroute2 ifaddrmsg messages)."""
    addresses = []
    for msg in check_errors(msgs):
        if msg["header"]["type"] != RTM_NEWADDR:
            continue
        peer = text_attr(msg, "IFA_ADDRESS")
        # On a point-to-point link IFA_LOCAL is ours and IFA_ADDRESS the peer's; without
        # IFA_LOCAL, IFA_ADDRESS is our own.
        local = text_attr(msg, "IFA_LOCAL") or peer
        cache = struct_attr(msg, "IFA_CACHEINFO")
        addresses.append(
            Address(
                index=msg["index"],
                family=msg["family"],
                local=local,
                peer=peer if peer != local else "",
                created=cache["cstamp"] / 100.0 if cache else None,
            )
        )
    return addresses


def is_ppp(link: Link, pattern: str) -> bool:
    return fnmatchcase(link.name, pattern) and (link.kind == "ppp" or link.link_type == ARPHRD_PPP)


def ppp_interfaces(
    links: Iterable[Link], addresses: Iterable[Address], pattern: str, booted_at: float
) -> list[PppInterface]:
    """The ppp interfaces whose name matches `pattern`, with their IPv4 addresses."""
    v4: dict[int, Address] = {}
    for addr in addresses:
        if addr.family == socket.AF_INET:
            v4.setdefault(addr.index, addr)
    out = []
    for link in links:
        if not is_ppp(link, pattern):
            continue
        found = v4.get(link.index)
        out.append(
            PppInterface(
                name=link.name,
                index=link.index,
                local_address=found.local if found else "",
                peer_address=found.peer if found else "",
                up_since=(
                    round(booted_at + found.created, 2)
                    if found is not None and found.created is not None
                    else None
                ),
                stats=link.stats,
            )
        )
    return sorted(out, key=lambda i: (len(i.name), i.name))


async def dump_ppp(pattern: str, timeout: float, netns: str | None = None) -> list[PppInterface]:
    """Every ppp interface matching `pattern`; `TimeoutError` after `timeout`."""
    ipr = AsyncIPRoute(**socket_args(netns))
    try:
        async with asyncio.timeout(timeout):
            try:
                await ipr.setup_endpoint()
            except OSError as err:
                raise netns_error(netns, err) from None
            links = decode_links(await collect_dump(await ipr.link("dump")))
            if not any(is_ppp(link, pattern) for link in links):
                return []
            addresses = decode_addresses(await collect_dump(await ipr.addr("dump")))
    finally:
        ipr.close()
    return ppp_interfaces(links, addresses, pattern, boot_time())
