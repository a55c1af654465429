"""Kernel L2TP tunnels and sessions over generic netlink (pyroute2's `AsyncL2tp`).

The kernel's netlink answer does not name the ppp interface of a PPP pseudowire (no
L2TP_ATTR_IFNAME for them in 6.1); `/proc/net/pppol2tp`, written by the same kernel
module that owns the ppp channel, does, so sessions get their interface from there.
"""

from __future__ import annotations

import asyncio
import errno
import re
from collections.abc import Iterable, Iterator
from typing import Any

from pyroute2.netlink import nla
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic.l2tp import L2TP_GENL_NAME, AsyncL2tp, l2tpmsg

from exporter.kernel.gcpause import gc_paused
from exporter.kernel.model import L2tpSession, L2tpSnapshot, L2tpStats, L2tpTunnel
from exporter.kernel.netlink import check_errors, collect_dump, netns_error, socket_args
from exporter.kernel.nlraw import (
    NLMSG_LEN,
    RawMarshal,
    attributes,
    each_message,
    ip_text,
    text,
    u16,
    u32,
    u64,
)
from exporter.kernel.procnet import read_proc_net

ENCAPS = {0: "udp", 1: "ip"}


class L2tpUnavailable(Exception):
    """The kernel has no L2TP generic netlink family (module l2tp_netlink not loaded)."""


class l2tp_msg(l2tpmsg):  # type: ignore[misc]
    """pyroute2's L2TP message, with the two statistics newer kernels add (5.x+)."""

    nla_map = tuple(
        (name, "l2tp_stats" if name == "L2TP_ATTR_STATS" else kind)
        for name, kind in l2tpmsg.nla_map
    )

    class l2tp_stats(nla):  # type: ignore[misc]
        nla_flags = l2tpmsg.l2tp_stats.nla_flags
        nla_map = (
            *l2tpmsg.l2tp_stats.nla_map,
            ("L2TP_ATTR_RX_COOKIE_DISCARDS", "uint64"),
            ("L2TP_ATTR_RX_INVALID", "uint64"),
        )


class L2tpSocket(AsyncL2tp):  # type: ignore[misc]
    """`AsyncL2tp` decoding with `l2tp_msg`, and quiet when the family is missing.

    pyroute2 logs "Generic netlink protocol l2tp not found" at error level on the root
    logger every time; the collector says it once itself.
    """

    module_err_level = "debug"
    marshal_class = RawMarshal

    async def setup_endpoint(self) -> None:
        if getattr(self.local, "transport", None) is not None:
            return
        await super(AsyncL2tp, self).setup_endpoint()
        await self.bind(L2TP_GENL_NAME, l2tp_msg)
        # The family's messages (the dumps) come as bytes; `decode_*` read them.
        self.marshal.raw_types = frozenset({self.prid})


def _numbers(table: Any) -> dict[str, int]:
    """Attribute name → number, from a pyroute2 attribute table (positional)."""
    return {entry[0]: number for number, entry in enumerate(table)}


_ATTR = _numbers(l2tp_msg.nla_map)
_STAT = _numbers(l2tp_msg.l2tp_stats.nla_map)
CONN_ID, PEER_CONN_ID = _ATTR["L2TP_ATTR_CONN_ID"], _ATTR["L2TP_ATTR_PEER_CONN_ID"]
SESSION_ID, PEER_SESSION_ID = _ATTR["L2TP_ATTR_SESSION_ID"], _ATTR["L2TP_ATTR_PEER_SESSION_ID"]
ENCAP_TYPE, IFNAME, STATS = (
    _ATTR["L2TP_ATTR_ENCAP_TYPE"],
    _ATTR["L2TP_ATTR_IFNAME"],
    _ATTR["L2TP_ATTR_STATS"],
)
IP_SADDR, IP_DADDR = _ATTR["L2TP_ATTR_IP_SADDR"], _ATTR["L2TP_ATTR_IP_DADDR"]
IP6_SADDR, IP6_DADDR = _ATTR["L2TP_ATTR_IP6_SADDR"], _ATTR["L2TP_ATTR_IP6_DADDR"]
UDP_SPORT, UDP_DPORT = _ATTR["L2TP_ATTR_UDP_SPORT"], _ATTR["L2TP_ATTR_UDP_DPORT"]
#: L2tpStats field → L2TP_ATTR_STATS nested attribute number.
_STATS_FIELDS = tuple(
    (field, _STAT[name])
    for field, name in (
        ("rx_bytes", "L2TP_ATTR_RX_BYTES"),
        ("tx_bytes", "L2TP_ATTR_TX_BYTES"),
        ("rx_packets", "L2TP_ATTR_RX_PACKETS"),
        ("tx_packets", "L2TP_ATTR_TX_PACKETS"),
        ("rx_errors", "L2TP_ATTR_RX_ERRORS"),
        ("tx_errors", "L2TP_ATTR_TX_ERRORS"),
    )
)
#: The nested numbers in `L2tpStats`' field order (rx/tx bytes, packets, errors).
_STATS_NUMBERS_IN_ORDER = tuple(number for _field, number in _STATS_FIELDS)
_STATS_NUMBERS = frozenset(_STATS_NUMBERS_IN_ORDER)
#: struct genlmsghdr: cmd, version, reserved.
GENLMSGHDR_LEN = 4


#: The attributes the decoders read.
_WANTED = frozenset(
    {
        CONN_ID,
        PEER_CONN_ID,
        SESSION_ID,
        PEER_SESSION_ID,
        ENCAP_TYPE,
        IFNAME,
        STATS,
        IP_SADDR,
        IP_DADDR,
        IP6_SADDR,
        IP6_DADDR,
        UDP_SPORT,
        UDP_DPORT,
    }
)


def _attributes(msgs: Iterable[Any]) -> Iterator[dict[int, bytes]]:
    """The attributes of each message (those too short for a genl header left out)."""
    for msg in check_errors(msgs):
        for buf, start, end in each_message(msg):
            if end - start >= NLMSG_LEN + GENLMSGHDR_LEN:
                yield attributes(buf, start + NLMSG_LEN + GENLMSGHDR_LEN, end, _WANTED)


def _stats(attrs: dict[int, bytes]) -> L2tpStats:
    stats = attrs.get(STATS)
    if stats is None:
        return L2tpStats()
    nested = attributes(stats, 0, None, _STATS_NUMBERS)
    return L2tpStats(*[u64(nested.get(number)) for number in _STATS_NUMBERS_IN_ORDER])


def _address(attrs: dict[int, bytes], v4: int, v6: int) -> str:
    value = attrs.get(v4)
    text_v4 = ip_text(value) if value is not None and len(value) == 4 else ""
    if text_v4:
        return text_v4
    value = attrs.get(v6)
    return ip_text(value) if value is not None and len(value) == 16 else ""


@gc_paused
def decode_tunnels(msgs: Iterable[Any]) -> list[L2tpTunnel]:
    """Tunnels of an L2TP_CMD_TUNNEL_GET dump answer (`RawMessage`s, or pyroute2
    `l2tp_msg` messages)."""
    tunnels = []
    for attrs in _attributes(msgs):
        tunnels.append(
            L2tpTunnel(
                tunnel_id=u32(attrs.get(CONN_ID)),
                peer_tunnel_id=u32(attrs.get(PEER_CONN_ID)),
                encap=ENCAPS.get(u16(attrs.get(ENCAP_TYPE)), "unknown"),
                local_address=_address(attrs, IP_SADDR, IP6_SADDR),
                local_port=u16(attrs.get(UDP_SPORT)),
                peer_address=_address(attrs, IP_DADDR, IP6_DADDR),
                peer_port=u16(attrs.get(UDP_DPORT)),
                stats=_stats(attrs),
            )
        )
    return sorted(tunnels, key=lambda t: t.tunnel_id)


@gc_paused
def decode_sessions(
    msgs: Iterable[Any], interfaces: dict[tuple[int, int], str] | None = None
) -> list[L2tpSession]:
    """Sessions of an L2TP_CMD_SESSION_GET dump answer.

    Session 0 of a tunnel is xl2tpd's tunnel-management socket, not a call, and is left
    out. `interfaces` maps (tunnel id, session id) to the ppp interface (see
    `parse_pppol2tp`); the netlink attribute wins when the kernel sends one.
    """
    interfaces = interfaces or {}
    sessions = []
    for attrs in _attributes(msgs):
        tid, sid = u32(attrs.get(CONN_ID)), u32(attrs.get(SESSION_ID))
        if sid == 0:
            continue
        sessions.append(
            L2tpSession(
                tunnel_id=tid,
                session_id=sid,
                peer_session_id=u32(attrs.get(PEER_SESSION_ID)),
                interface=text(attrs.get(IFNAME)) or interfaces.get((tid, sid), ""),
                stats=_stats(attrs),
            )
        )
    return sorted(sessions, key=lambda s: (s.tunnel_id, s.session_id))


_SESSION = re.compile(r"^\s*SESSION .*?\s([0-9A-Fa-f]+)/([0-9A-Fa-f]+) -> ")
_INTERFACE = re.compile(r"^\s*interface (\S+)\s*$")


def parse_pppol2tp(text: str) -> dict[tuple[int, int], str]:
    """(tunnel id, session id) → ppp interface name, from `/proc/net/pppol2tp`."""
    out: dict[tuple[int, int], str] = {}
    current: tuple[int, int] | None = None
    for line in text.splitlines():
        # Most lines are counters: only SESSION, TUNNEL and interface lines are read
        # (the regular expressions run on those alone).
        first = line.lstrip()[:1]
        if first == "S":
            if m := _SESSION.match(line):
                current = (int(m.group(1), 16), int(m.group(2), 16))
        elif first == "T":
            if line.lstrip().startswith("TUNNEL"):
                current = None
        elif first == "i" and current is not None and (m := _INTERFACE.match(line)):
            if m.group(1) != "(null)":
                out[current] = m.group(1)
            current = None
    return out


def read_pppol2tp(netns: str | None = None) -> dict[tuple[int, int], str]:
    """The ppp interface of each L2TP session in `netns` (None: ours); blocking."""
    try:
        return parse_pppol2tp(read_proc_net("pppol2tp", netns))
    except OSError:
        return {}


async def dump_l2tp(timeout: float, netns: str | None = None) -> L2tpSnapshot:
    """Tunnels and sessions; `L2tpUnavailable` without kernel L2TP, `TimeoutError`."""
    sock = L2tpSocket(**socket_args(netns))
    try:
        async with asyncio.timeout(timeout):
            try:
                await sock.setup_endpoint()
            except NetlinkError as err:
                if err.code in (errno.ENOENT, errno.ENOTSUP):
                    raise L2tpUnavailable("no L2TP generic netlink family") from err
                raise
            except OSError as err:
                raise netns_error(netns, err) from None
            # pyroute2 quirk: AsyncL2tp.dump_tunnels takes a tunnel_id it never uses (and
            # the sync L2tp.dump_tunnels() calls it without one, a TypeError).
            tunnels = decode_tunnels(await collect_dump(await sock.dump_tunnels(None)))
            raw_sessions = await collect_dump(await sock.dump_sessions())
    finally:
        sock.close()
    # Read after the dump: a session that appears in between just has no interface yet.
    interfaces = await asyncio.to_thread(read_pppol2tp, netns) if raw_sessions else {}
    sessions = decode_sessions(raw_sessions, interfaces)
    return L2tpSnapshot(tunnels=tuple(tunnels), sessions=tuple(sessions))
