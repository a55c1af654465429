"""ppp interfaces from rtnetlink: one link dump and one address dump."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pyroute2.netlink import NETLINK_ROUTE, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.nlsocket import AsyncNetlinkSocket
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from exporter.kernel.gcpause import gc_paused
from exporter.kernel.model import LinkStats, PppInterface
from exporter.kernel.netlink import check_errors, collect_dump, netns_error, socket_args
from exporter.kernel.nlraw import (
    NLMSG_LEN,
    RawMarshal,
    attributes,
    each_message,
    ip_text,
    text,
    u32,
)

RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
ARPHRD_PPP = 512
#: Attribute numbers (uapi linux/if_link.h, linux/if_addr.h).
IFLA_IFNAME = 3
IFLA_LINKINFO = 18
IFLA_STATS64 = 23
IFLA_INFO_KIND = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_CACHEINFO = 6
_LINK_ATTRS = frozenset({IFLA_IFNAME, IFLA_LINKINFO, IFLA_STATS64})
_INFO_ATTRS = frozenset({IFLA_INFO_KIND})
_ADDRESS_ATTRS = frozenset({IFA_ADDRESS, IFA_LOCAL, IFA_CACHEINFO})
#: struct ifinfomsg (16 bytes): family, pad, type, index, flags, change; the fields read.
_IFINFOMSG = struct.Struct("=2xHi8x")
#: struct ifaddrmsg (8 bytes): family, prefixlen, flags, scope, index.
_IFADDRMSG = struct.Struct("=B3xI")
#: struct rtnl_link_stats64's first 8 counters: rx/tx packets, bytes, errors, dropped.
_STATS64 = struct.Struct("=8Q")


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


@gc_paused
def decode_links(msgs: Iterable[Any]) -> list[Link]:
    """Links of an RTM_GETLINK dump answer (`RawMessage`s, or pyroute2 ifinfmsg messages)."""
    links = []
    for msg in check_errors(msgs):
        if msg["header"]["type"] != RTM_NEWLINK:
            continue
        for buf, start, end in each_message(msg):
            link = _link(buf, start, end)
            if link is not None:
                links.append(link)
    return links


def _link(buf: bytes, start: int, end: int) -> Link | None:
    if end - start < NLMSG_LEN + _IFINFOMSG.size:
        return None
    link_type, index = _IFINFOMSG.unpack_from(buf, start + NLMSG_LEN)
    attrs = attributes(buf, start + NLMSG_LEN + _IFINFOMSG.size, end, _LINK_ATTRS)
    info = attrs.get(IFLA_LINKINFO)
    stats = attrs.get(IFLA_STATS64)
    link_stats = LinkStats()
    if stats is not None and len(stats) >= _STATS64.size:
        rx_p, tx_p, rx_b, tx_b, rx_e, tx_e, rx_d, tx_d = _STATS64.unpack_from(stats)
        link_stats = LinkStats(rx_b, tx_b, rx_p, tx_p, rx_e, tx_e, rx_d, tx_d)
    return Link(
        name=text(attrs.get(IFLA_IFNAME)),
        index=index,
        kind=text(attributes(info, 0, None, _INFO_ATTRS).get(IFLA_INFO_KIND)) if info else "",
        link_type=link_type,
        stats=link_stats,
    )


@gc_paused
def decode_addresses(msgs: Iterable[Any]) -> list[Address]:
    """Addresses of an RTM_GETADDR dump answer (`RawMessage`s, or pyroute2 ifaddrmsg)."""
    addresses = []
    for msg in check_errors(msgs):
        if msg["header"]["type"] != RTM_NEWADDR:
            continue
        for buf, start, end in each_message(msg):
            address = _address(buf, start, end)
            if address is not None:
                addresses.append(address)
    return addresses


def _address(buf: bytes, start: int, end: int) -> Address | None:
    if end - start < NLMSG_LEN + _IFADDRMSG.size:
        return None
    family, index = _IFADDRMSG.unpack_from(buf, start + NLMSG_LEN)
    attrs = attributes(buf, start + NLMSG_LEN + _IFADDRMSG.size, end, _ADDRESS_ATTRS)
    peer = ip_text(attrs.get(IFA_ADDRESS))
    # On a point-to-point link IFA_LOCAL is ours and IFA_ADDRESS the peer's; without
    # IFA_LOCAL, IFA_ADDRESS is our own.
    local = ip_text(attrs.get(IFA_LOCAL)) or peer
    cache = attrs.get(IFA_CACHEINFO)
    return Address(
        index=index,
        family=family,
        local=local,
        peer=peer if peer != local else "",
        # struct ifa_cacheinfo: prefered, valid, cstamp, tstamp (u32 each).
        created=u32(cache[8:12]) / 100.0 if cache is not None and len(cache) >= 16 else None,
    )


def is_ppp(link: Link, pattern: str) -> bool:
    return fnmatchcase(link.name, pattern) and (link.kind == "ppp" or link.link_type == ARPHRD_PPP)


@gc_paused
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


class MarshalRtnlDump(RawMarshal):
    raw_types = frozenset({RTM_NEWLINK, RTM_NEWADDR})


class AsyncRtnlDumpSocket(AsyncNetlinkSocket):  # type: ignore[misc]
    """pyroute2's async netlink socket on `NETLINK_ROUTE`, links and addresses left as bytes."""

    marshal_class = MarshalRtnlDump

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(family=NETLINK_ROUTE, **kwargs)


async def _dump(sock: AsyncRtnlDumpSocket, request: Any, msg_type: int) -> list[Any]:
    """A whole-table dump: `request` without attributes, as `ip link` / `ip addr` send
    it (family AF_UNSPEC: every family; AF_INET: that one)."""
    return await collect_dump(
        await sock.nlm_request(request, msg_type=msg_type, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
    )


async def dump_ppp(pattern: str, timeout: float, netns: str | None = None) -> list[PppInterface]:
    """Every ppp interface matching `pattern`; `TimeoutError` after `timeout`."""
    sock = AsyncRtnlDumpSocket(**socket_args(netns))
    try:
        async with asyncio.timeout(timeout):
            try:
                await sock.setup_endpoint()
            except OSError as err:
                raise netns_error(netns, err) from None
            links = decode_links(await _dump(sock, ifinfmsg(), RTM_GETLINK))
            if not any(is_ppp(link, pattern) for link in links):
                return []
            # IPv4 only (all `ppp_interfaces` reads): the kernel dumps just that family.
            request = ifaddrmsg()
            request["family"] = socket.AF_INET
            addresses = decode_addresses(await _dump(sock, request, RTM_GETADDR))
    finally:
        sock.close()
    return ppp_interfaces(links, addresses, pattern, boot_time())
