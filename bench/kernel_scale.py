"""Benchmark: what the kernel collectors cost per scrape at N clients, beside strongSwan's.

No root, no guest: the real netlink answers recorded in the Debian guest
(`tests/fixtures/netlink/`, kernel 6.1, and `tests/fixtures/netlink-trixie/`, 6.12: three
L2TP/IPsec clients) are cloned, byte for byte, to N clients: N ppp links and their
addresses (distinct ifindexes, names, inner addresses), N L2TP tunnels and sessions
(distinct ids, peer addresses), 2N XFRM states (distinct SPIs, reqids, addresses) and 2N
per-client policies, N pppd hook records and `/proc/net/pppol2tp` naming the N calls.

A *recorded kernel* answers the production sockets: `dump_ppp`, `dump_l2tp` and
`dump_xfrm` run unchanged (pyroute2's `AsyncIPRoute`, the L2TP generic netlink socket
with its family lookup, the XFRM socket), but each request is answered from the clones
through pyroute2's own request-proxy hook instead of the kernel, in datagrams of at most
32 KiB as the kernel sends dumps. So the measured path is the production one from the
bytes a `recv()` would return to the exposition: pyroute2's parsing, the decoders, the
join, the collectors and rendering; only the kernel's side of the socket is missing.

Side by side in the same run, at the same N: the strongSwan collector's part of the
scrape, `bench/render.py`'s way (the recorded `list-sas` answer cloned to N IKE SAs with
remote hosts 10.100.x.y, served by the tests' fake VICI server and listed once by the real
`CharonView`). The kernel clones use the same public addresses, so the sessions join finds
each client's IKE SA, as on a real server. Both scrapes run through the real `Scraper`
(collectors concurrently, the series limit of the daemon) and `RenderCache` (OpenMetrics,
gzip).

A second table sets the goal (issue 19: the ppp, L2TP, XFRM and sessions collectors
together cost no more than the strongSwan part) against a floor: what no Python
implementation of those collectors goes below at N, walking the scrape's dumps (every
datagram split into messages, one header read each) and writing the samples they give
(each line from a label part made beforehand). Its last column is that floor as a
fraction of the strongSwan part: the share of the goal left for decoding, joining and
everything else.

    python bench/kernel_scale.py                    # 100, 1,000, 5,000 clients
    python bench/kernel_scale.py --quick            # 100 and 1,000, a few scrapes
    python bench/kernel_scale.py --clients 1000 --profile
    python bench/kernel_scale.py --baseline /tmp/before   # that checkout's rows beside
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import ipaddress
import json
import pstats
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import exporter.kernel.l2tp as kernel_l2tp  # noqa: E402
import exporter.kernel.rtnl as kernel_rtnl  # noqa: E402
import exporter.kernel.source as kernel_source  # noqa: E402
import exporter.kernel.xfrm as kernel_xfrm  # noqa: E402
from bench.render import ACCEPT, cloned_list_sas  # noqa: E402
from exporter.collectors.base import Collector  # noqa: E402
from exporter.collectors.kernel import build_kernel_collectors  # noqa: E402
from exporter.collectors.strongswan import StrongswanCollector  # noqa: E402
from exporter.collectors.strongswan_kernel_traffic import (  # noqa: E402
    _counts,
    _reqid,
    index_states,
)
from exporter.collectors.users import LoginTracker, UsersCollector  # noqa: E402
from exporter.config import StrongswanOptions  # noqa: E402
from exporter.http import RenderCache  # noqa: E402
from exporter.kernel.model import XfrmSnapshot  # noqa: E402
from exporter.kernel.options import KernelOptions  # noqa: E402
from exporter.kernel.source import KernelSource  # noqa: E402
from exporter.logins.options import LoginOptions  # noqa: E402
from exporter.scrape import Scraper  # noqa: E402
from exporter.strongswan.snapshot import StrongswanSnapshot  # noqa: E402
from exporter.strongswan.view import CharonView  # noqa: E402
from tests.fakes.vici_server import FakeViciServer  # noqa: E402
from tests.fakes.vici_server import Recording as ViciRecording  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
RECORDINGS = ("netlink", "netlink-trixie")

# -- netlink bytes ------------------------------------------------------------------------

NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
RTA = struct.Struct("=HH")  # rtattr / nlattr: length, type
NLMSG_DONE = 3
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
GENL_ID_CTRL = 16
L2TP_CMD_TUNNEL_GET, L2TP_CMD_SESSION_GET = 4, 8
XFRM_MSG_NEWSA, XFRM_MSG_GETSA = 0x10, 0x12
XFRM_MSG_NEWPOLICY, XFRM_MSG_GETPOLICY = 0x13, 0x15
#: Attribute numbers (uapi if_link.h, if_addr.h, l2tp.h, xfrm.h).
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
L2TP_ATTR_IFNAME, L2TP_ATTR_CONN_ID, L2TP_ATTR_PEER_CONN_ID = 8, 9, 10
L2TP_ATTR_SESSION_ID, L2TP_ATTR_PEER_SESSION_ID, L2TP_ATTR_IP_DADDR = 11, 12, 25
XFRMA_TMPL = 5
#: Fixed headers before the attributes: ifinfomsg, ifaddrmsg, genlmsghdr, and XFRM's
#: xfrm_usersa_info / xfrm_userpolicy_info.
IFINFOMSG, IFADDRMSG, GENLMSGHDR, USERSA_INFO, USERPOLICY_INFO = 16, 8, 4, 224, 168
#: Offsets in xfrm_usersa_info: selector daddr/saddr, id.daddr, id.spi, saddr, curlft
#: bytes and packets, reqid; in xfrm_user_tmpl: id.spi and reqid.
SA_ADDRESSES = (0, 16, 56, 80)
SA_SPI, SA_BYTES, SA_PACKETS, SA_REQID = 72, 160, 168, 208
POLICY_ADDRESSES, POLICY_INDEX = (0, 16), 156
TMPL_SPI, TMPL_REQID = 16, 44
#: The most a kernel puts in one dump datagram (netlink_dump: 32 KiB skbs).
DATAGRAM = 32768
#: The first clone's ifindex (the recording's own interfaces have small ones).
FIRST_IFINDEX = 100


def split(buf: bytes) -> list[bytes]:
    """The netlink messages of a recorded answer, each with its header."""
    out, offset = [], 0
    while offset + NLMSG.size <= len(buf):
        length = NLMSG.unpack_from(buf, offset)[0]
        if length < NLMSG.size:
            break
        out.append(buf[offset : offset + length])
        offset += (length + 3) & ~3
    return out


def msg_type(msg: bytes) -> int:
    return int(NLMSG.unpack_from(msg)[1])


def attributes(msg: bytes, fixed: int) -> list[tuple[int, bytes]]:
    """(type with flags, payload) of the message's top-level attributes."""
    out, offset = [], NLMSG.size + fixed
    while offset + RTA.size <= len(msg):
        length, kind = RTA.unpack_from(msg, offset)
        if length < RTA.size:
            break
        out.append((kind, msg[offset + RTA.size : offset + length]))
        offset += (length + 3) & ~3
    return out


def get_attr(msg: bytes, fixed: int, kind: int) -> bytes | None:
    for k, value in attributes(msg, fixed):
        if k & 0x3FFF == kind:
            return value
    return None


def rebuild(msg: bytes, fixed: int, head: bytes | bytearray, replace: dict[int, bytes]) -> bytes:
    """`msg` with its fixed header `head` and the attributes in `replace` (by type, flags
    kept) given new payloads; the length in the netlink header follows."""
    body = bytearray(head)
    for kind, value in attributes(msg, fixed):
        value = replace.get(kind & 0x3FFF, value)
        body += RTA.pack(RTA.size + len(value), kind) + value
        body += b"\0" * (-len(body) % 4)
    _length, typ, flags, seq, pid = NLMSG.unpack_from(msg)
    return NLMSG.pack(NLMSG.size + len(body), typ, flags, seq, pid) + bytes(body)


def patch(buf: bytes | bytearray, offset: int, fmt: str, value: Any) -> bytearray:
    out = bytearray(buf)
    struct.pack_into(fmt, out, offset, value)
    return out


def datagrams(msgs: Sequence[bytes]) -> list[bytes]:
    """Messages packed into datagrams of at most `DATAGRAM` bytes, as the kernel sends a
    dump (the last message, NLMSG_DONE, in the last one)."""
    out: list[bytes] = []
    current = bytearray()
    for msg in msgs:
        if current and len(current) + len(msg) > DATAGRAM:
            out.append(bytes(current))
            current = bytearray()
        current += msg + b"\0" * (-len(msg) % 4)
    out.append(bytes(current))
    return out


def with_seq(chunk: bytes, seq: int) -> bytes:
    """A datagram whose every message carries the request's sequence number."""
    out = bytearray(chunk)
    offset = 0
    while offset + NLMSG.size <= len(out):
        length = NLMSG.unpack_from(out, offset)[0]
        struct.pack_into("=I", out, offset + 8, seq)
        offset += max(NLMSG.size, (length + 3) & ~3)
    return bytes(out)


# -- who client i is ----------------------------------------------------------------------


def public_address(i: int) -> str:
    """Client i's public address: the remote host `bench/render.py` gives IKE SA i."""
    return f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}"


def inner_address(i: int) -> str:
    """Client i's address inside its ppp link."""
    return str(ipaddress.IPv4Address("172.16.0.10") + i)


def ifname(i: int) -> str:
    return f"ppp{i}"


def ids(i: int) -> int:
    """Client i's L2TP tunnel id, session id and XFRM reqid (L2TPv2 ids are 16-bit)."""
    return 1 + i


def spi(i: int, direction: int) -> int:
    return 0xC1000000 + 2 * i + direction


def ip4(text: str) -> bytes:
    return socket.inet_aton(text)


# -- the recording, cloned ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Recording:
    """The guest's answers and what the recorder noted of them (manifest.json)."""

    name: str
    raw: dict[str, bytes]
    l2tp_family: int
    server: str
    #: The recorded client the clones are made of: its public address and ppp interface.
    client: str
    client_ifname: str
    xfrm_stat: str

    @classmethod
    def load(cls, name: str) -> Recording:
        folder = FIXTURES / name
        manifest = json.loads((folder / "manifest.json").read_text())
        raw = {f["name"]: (folder / f["file"]).read_bytes() for f in manifest["files"]}
        (family,) = [f["l2tp_family_id"] for f in manifest["files"] if "l2tp_family_id" in f]
        first = manifest["clients"]["1"]
        inner = first["ppp"]["local"]
        (server_side,) = [p for p in manifest["server_ppp"] if p["peer"] == inner]
        server = manifest["context"]["xfrm_state"].split()[1]  # "src <server> dst ..."
        return cls(
            name=name,
            raw=raw,
            l2tp_family=family,
            server=server,
            client=first["ip"],
            client_ifname=server_side["ifname"],
            xfrm_stat=(folder / manifest["xfrm_stat"]).read_text(),
        )


@dataclasses.dataclass(frozen=True)
class Clone:
    """The recording as a server with N clients would answer: whole dumps (messages,
    NLMSG_DONE last) and the files the exporter reads besides netlink."""

    clients: int
    links: list[bytes]
    addresses: list[bytes]
    ctrl: list[bytes]
    tunnels: list[bytes]
    sessions: list[bytes]
    states: list[bytes]
    policies: list[bytes]
    pppol2tp: str
    hooks: dict[str, str]
    xfrm_stat: str


def _done(msgs: list[bytes]) -> bytes:
    (done,) = [m for m in msgs if msg_type(m) == NLMSG_DONE]
    return done


def _ifname_of(msg: bytes) -> str:
    value = get_attr(msg, IFINFOMSG, IFLA_IFNAME) or b""
    return value.rstrip(b"\0").decode()


def clone_links(rec: Recording, n: int) -> tuple[list[bytes], int]:
    """The link dump with the template client's ppp link as N links (the recording's
    other ppp links left out, its other links kept); and the template's ifindex."""
    msgs = split(rec.raw["rtnl-getlink"])
    links = [m for m in msgs if msg_type(m) == RTM_NEWLINK]
    (template,) = [m for m in links if _ifname_of(m) == rec.client_ifname]
    index = struct.unpack_from("=i", template, NLMSG.size + 4)[0]
    out = [m for m in links if not _ifname_of(m).startswith("ppp")]
    fixed = template[NLMSG.size : NLMSG.size + IFINFOMSG]
    for i in range(n):
        head = patch(fixed, 4, "=i", FIRST_IFINDEX + i)
        out.append(rebuild(template, IFINFOMSG, head, {IFLA_IFNAME: ifname(i).encode() + b"\0"}))
    return [*out, _done(msgs)], index


def clone_addresses(
    rec: Recording, n: int, template_index: int, ppp_indexes: set[int]
) -> list[bytes]:
    """The address dump with the template link's addresses (IPv4 and IPv6) for each of
    the N links: client i's inner IPv4 address, its own link-local peer."""
    msgs = split(rec.raw["rtnl-getaddr"])
    addrs = [m for m in msgs if msg_type(m) == RTM_NEWADDR]

    def index_of(m: bytes) -> int:
        return int(struct.unpack_from("=I", m, NLMSG.size + 4)[0])

    out = [m for m in addrs if index_of(m) not in ppp_indexes]
    templates = [m for m in addrs if index_of(m) == template_index]
    for i in range(n):
        for template in templates:
            head = patch(template[NLMSG.size : NLMSG.size + IFADDRMSG], 4, "=I", FIRST_IFINDEX + i)
            replace = {IFA_LABEL: ifname(i).encode() + b"\0"}
            peer = get_attr(template, IFADDRMSG, IFA_ADDRESS)
            if peer is not None and len(peer) == 4:
                replace[IFA_ADDRESS] = ip4(inner_address(i))
            elif peer is not None and len(peer) == 16:
                replace[IFA_ADDRESS] = peer[:12] + struct.pack(">I", i)
                local = get_attr(template, IFADDRMSG, IFA_LOCAL)
                if local is not None:
                    replace[IFA_LOCAL] = local[:12] + struct.pack(">I", 0x80000000 | i)
            out.append(rebuild(template, IFADDRMSG, head, replace))
    return [*out, _done(msgs)]


def _u32(msg: bytes, kind: int) -> int | None:
    value = get_attr(msg, GENLMSGHDR, kind)
    return struct.unpack("=I", value[:4])[0] if value is not None and len(value) >= 4 else None


def clone_tunnels(rec: Recording, n: int) -> tuple[list[bytes], int]:
    """The L2TP tunnel dump with the template client's tunnel as N tunnels (peer = client
    i's public address, ids 1..N); and the template tunnel's id."""
    msgs = split(rec.raw["genl-l2tp-tunnel-get"])
    tunnels = [m for m in msgs if msg_type(m) == rec.l2tp_family]
    (template,) = [
        m for m in tunnels if get_attr(m, GENLMSGHDR, L2TP_ATTR_IP_DADDR) == ip4(rec.client)
    ]
    tid = _u32(template, L2TP_ATTR_CONN_ID)
    assert tid is not None
    head = template[NLMSG.size : NLMSG.size + GENLMSGHDR]
    out = []
    for i in range(n):
        u32 = struct.pack("=I", ids(i))
        replace = {
            L2TP_ATTR_CONN_ID: u32,
            L2TP_ATTR_PEER_CONN_ID: u32,
            L2TP_ATTR_IP_DADDR: ip4(public_address(i)),
        }
        out.append(rebuild(template, GENLMSGHDR, head, replace))
    return [*out, _done(msgs)], tid


def clone_sessions(rec: Recording, n: int, template_tunnel: int) -> list[bytes]:
    """The L2TP session dump with the template tunnel's sessions (its call and, when the
    kernel lists it, xl2tpd's session 0) for each of the N tunnels."""
    msgs = split(rec.raw["genl-l2tp-session-get"])
    templates = [
        m
        for m in msgs
        if msg_type(m) == rec.l2tp_family and _u32(m, L2TP_ATTR_CONN_ID) == template_tunnel
    ]
    head = templates[0][NLMSG.size : NLMSG.size + GENLMSGHDR]
    out = []
    for i in range(n):
        for template in templates:
            u32 = struct.pack("=I", ids(i))
            replace = {L2TP_ATTR_CONN_ID: u32, L2TP_ATTR_PEER_CONN_ID: u32}
            if _u32(template, L2TP_ATTR_SESSION_ID):  # a call, not session 0
                replace[L2TP_ATTR_SESSION_ID] = u32
                replace[L2TP_ATTR_PEER_SESSION_ID] = u32
                replace[L2TP_ATTR_IFNAME] = ifname(i).encode() + b"\0"  # only if sent
            out.append(rebuild(template, GENLMSGHDR, head, replace))
    return [*out, _done(msgs)]


def _swap_addresses(buf: bytearray, offsets: Sequence[int], old: bytes, new: bytes) -> None:
    for offset in offsets:
        at = NLMSG.size + offset
        if buf[at : at + 4] == old:
            buf[at : at + 4] = new


def template_states(rec: Recording) -> list[bytes]:
    """The template client's SA messages, in dump order (direction d is `spi(i, d)`)."""
    client = ip4(rec.client)
    return [
        m
        for m in split(rec.raw["xfrm-getsa"])
        if msg_type(m) == XFRM_MSG_NEWSA
        and any(m[NLMSG.size + o : NLMSG.size + o + 4] == client for o in SA_ADDRESSES)
    ]


def clone_states(rec: Recording, n: int) -> tuple[list[bytes], dict[int, int]]:
    """The SA dump with the template client's two ESP SAs as 2N (client i's address,
    SPIs and reqid, traffic counts that differ); and each template SPI's direction."""
    msgs = split(rec.raw["xfrm-getsa"])
    client = ip4(rec.client)
    templates = template_states(rec)
    direction = {
        struct.unpack_from(">I", m, NLMSG.size + SA_SPI)[0]: d for d, m in enumerate(templates)
    }
    out = []
    for i in range(n):
        new = ip4(public_address(i))
        for d, template in enumerate(templates):
            buf = bytearray(template)
            _swap_addresses(buf, SA_ADDRESSES, client, new)
            struct.pack_into(">I", buf, NLMSG.size + SA_SPI, spi(i, d))
            struct.pack_into("=I", buf, NLMSG.size + SA_REQID, ids(i))
            for field in (SA_BYTES, SA_PACKETS):
                recorded = struct.unpack_from("=Q", buf, NLMSG.size + field)[0]
                struct.pack_into("=Q", buf, NLMSG.size + field, recorded + 7 * i)
            out.append(bytes(buf))
    return [*out, _done(msgs)], direction


def clone_policies(rec: Recording, n: int, direction: dict[int, int]) -> list[bytes]:
    """The policy dump with the template client's policies for each of the N clients
    (selectors on client i's address, templates naming its SPIs and reqid); the
    recording's policies of no client (the catch-all, per-socket ones) kept once."""
    msgs = split(rec.raw["xfrm-getpolicy"])
    policies = [m for m in msgs if msg_type(m) == XFRM_MSG_NEWPOLICY]
    known = {ip4(rec.client)}
    all_clients = {ip4(a) for a in _recorded_clients(rec)}

    def selector(m: bytes) -> set[bytes]:
        return {bytes(m[NLMSG.size + o : NLMSG.size + o + 4]) for o in POLICY_ADDRESSES}

    templates = [m for m in policies if selector(m) & known]
    out = [m for m in policies if not selector(m) & all_clients]
    for i in range(n):
        new = ip4(public_address(i))
        for k, template in enumerate(templates):
            buf = bytearray(template)
            _swap_addresses(buf, POLICY_ADDRESSES, ip4(rec.client), new)
            index = struct.unpack_from("=I", buf, NLMSG.size + POLICY_INDEX)[0]
            new_index = (index & 7) | ((0x1000 + 8 * i + k) << 3)
            struct.pack_into("=I", buf, NLMSG.size + POLICY_INDEX, new_index)
            head = bytes(buf[NLMSG.size : NLMSG.size + USERPOLICY_INFO])
            replace = {}
            tmpl = get_attr(bytes(buf), USERPOLICY_INFO, XFRMA_TMPL)
            if tmpl is not None:
                t = bytearray(tmpl)
                for at in range(0, len(t) - 47, 64):  # several templates, back to back
                    old_spi = struct.unpack_from(">I", t, at + TMPL_SPI)[0]
                    if old_spi in direction:
                        struct.pack_into(">I", t, at + TMPL_SPI, spi(i, direction[old_spi]))
                    struct.pack_into("=I", t, at + TMPL_REQID, ids(i))
                replace[XFRMA_TMPL] = bytes(t)
            out.append(rebuild(bytes(buf), USERPOLICY_INFO, head, replace))
    return [*out, _done(msgs)]


def _recorded_clients(rec: Recording) -> list[str]:
    folder = FIXTURES / rec.name
    manifest = json.loads((folder / "manifest.json").read_text())
    return [c["ip"] for c in manifest["clients"].values()]


def pppol2tp_text(n: int, server: str) -> str:
    """`/proc/net/pppol2tp` of N calls, in the 6.1 kernel's format (pppol2tp_seq_show)."""
    ours = socket.inet_aton(server).hex().upper()
    lines = [
        " PPPoL2TP driver info, V2.0",
        "TUNNEL name, user-data-ok session-count",
        " debug tx-pkts/bytes/errs rx-pkts/bytes/errs",
        "  SESSION name, addr/port src-tid/sid dest-tid/sid state user-data-ok",
        "   mtu/mru/rcvseq/sendseq/lns debug reorderto",
        "   nr/ns tx-pkts/bytes/errs rx-pkts/bytes/errs",
        "",
    ]
    for i in range(n):
        t = ids(i)
        lines += [
            f"TUNNEL 'tunl {t}', Y 2",
            " 00000000 19/623/0 17/527/0",
            f"  SESSION 'sess {t}/0' {ours}/1701 {t:04X}/0000 -> {t:04X}/0000 1 Y",
            "   0/0/-/-/LAC 00000000 0",
            "   0/0 0/0/0 0/0/0",
            "   interface (null)",
            f"  SESSION 'sess {t}/{t}' {ours}/1701 {t:04X}/{t:04X} -> {t:04X}/{t:04X} 3 Y",
            "   0/0/-/-/LNS 00000000 0",
            "   0/0 19/623/0 17/527/0",
            f"   interface {ifname(i)}",
            "",
        ]
    return "\n".join(lines)


def hook_record(i: int, server: str, now: float) -> str:
    """What the shipped ip-up hook writes for client i (contrib/ppp/ip-up.d)."""
    return "".join(
        f"{key}={value}\n"
        for key, value in (
            ("IFNAME", ifname(i)),
            ("IFINDEX", FIRST_IFINDEX + i),
            ("PEERNAME", f"user{i}"),
            ("IPLOCAL", server),
            ("IPREMOTE", inner_address(i)),
            ("IPPARAM", ""),
            ("PPPD_PID", 10000 + i),
            ("L2TP_TUNNEL_ID", ids(i)),
            ("L2TP_SESSION_ID", ids(i)),
            ("UP_SINCE", int(now) - 3600),
        )
    )


def clone(rec: Recording, n: int) -> Clone:
    """The recording as a server with `n` L2TP/IPsec clients would answer."""
    links, template_index = clone_links(rec, n)
    ppp_indexes = {
        struct.unpack_from("=i", m, NLMSG.size + 4)[0]
        for m in split(rec.raw["rtnl-getlink"])
        if msg_type(m) == RTM_NEWLINK and _ifname_of(m).startswith("ppp")
    }
    tunnels, template_tunnel = clone_tunnels(rec, n)
    states, direction = clone_states(rec, n)
    server = ppp_server_address(rec)
    now = time.time()
    return Clone(
        clients=n,
        links=links,
        addresses=clone_addresses(rec, n, template_index, ppp_indexes),
        ctrl=split(rec.raw["genl-ctrl-getfamily-l2tp"]),
        tunnels=tunnels,
        sessions=clone_sessions(rec, n, template_tunnel),
        states=states,
        policies=clone_policies(rec, n, direction),
        pppol2tp=pppol2tp_text(n, rec.server),
        hooks={ifname(i): hook_record(i, server, now) for i in range(n)},
        xfrm_stat=rec.xfrm_stat,
    )


def ppp_server_address(rec: Recording) -> str:
    folder = FIXTURES / rec.name
    manifest = json.loads((folder / "manifest.json").read_text())
    return str(manifest["server_ppp"][0]["local"])


# -- the recorded kernel ------------------------------------------------------------------


def only_family(addresses: list[bytes], family: int) -> list[bytes]:
    """The RTM_NEWADDR messages (and NLMSG_DONE) of one address family."""
    return [m for m in addresses if msg_type(m) != RTM_NEWADDR or m[NLMSG.size] == family]


class RecordedKernel:
    """Answers the production sockets' requests from a `Clone` (pyroute2's request proxy:
    what `handle` returns is queued as the kernel's answer and nothing is sent)."""

    def __init__(self, clone: Clone, l2tp_family: int) -> None:
        self.clone = clone
        self.l2tp_family = l2tp_family
        self.requests: dict[str, int] = {}
        #: Dump name → its datagrams; and per sequence number, with it filled in (sockets
        #: are new at every scrape and number their requests alike, so this is built once).
        self._datagrams = {
            name: datagrams(msgs)
            for name, msgs in (
                ("links", clone.links),
                ("addresses", clone.addresses),
                # The kernel dumps only the family asked for, when one is.
                (f"addresses{socket.AF_INET}", only_family(clone.addresses, socket.AF_INET)),
                (f"addresses{socket.AF_INET6}", only_family(clone.addresses, socket.AF_INET6)),
                ("ctrl", clone.ctrl),
                ("tunnels", clone.tunnels),
                ("sessions", clone.sessions),
                ("states", clone.states),
                ("policies", clone.policies),
            )
        }
        self._by_seq: dict[tuple[str, int], list[bytes]] = {}

    def datagrams(self, name: str) -> list[bytes]:
        """The datagrams of one dump, as the kernel sends them."""
        return self._datagrams[name]

    def answer(self, protocol: str, msg: Any) -> str:
        """The dump that answers `msg` on a socket of `protocol` (message types overlap
        between netlink families: XFRM_MSG_GETSA is RTM_GETLINK's number)."""
        kind = msg["header"]["type"]
        known = {
            ("rtnl", RTM_GETLINK): "links",
            ("rtnl", RTM_GETADDR): "addresses",
            ("genl", GENL_ID_CTRL): "ctrl",
            ("xfrm", XFRM_MSG_GETSA): "states",
            ("xfrm", XFRM_MSG_GETPOLICY): "policies",
        }
        if (protocol, kind) == ("rtnl", RTM_GETADDR) and msg["family"]:
            return f"addresses{msg['family']}"  # the kernel dumps that family only
        if (protocol, kind) in known:
            return known[protocol, kind]
        if protocol == "genl" and kind == self.l2tp_family:
            return "tunnels" if msg["cmd"] == L2TP_CMD_TUNNEL_GET else "sessions"
        raise AssertionError(f"the recorded kernel has no answer to {protocol} message {kind}")

    def proxy(self, sock: Any, protocol: str) -> Any:
        kernel = self

        class Proxy:
            def handle(self, msg: Any) -> bytes:
                name = kernel.answer(protocol, msg)
                kernel.requests[name] = kernel.requests.get(name, 0) + 1
                seq = msg["header"]["sequence_number"]
                key = (name, seq)
                if key not in kernel._by_seq:
                    kernel._by_seq[key] = [with_seq(d, seq) for d in kernel._datagrams[name]]
                *first, last = kernel._by_seq[key]
                for chunk in first:  # pyroute2 queues the last; the others go first
                    sock.msg_queue.put_nowait(seq, chunk)
                return last

        return Proxy()

    @contextlib.contextmanager
    def serving(self, pppol2tp: Path) -> Iterator[None]:
        """The production dump functions' sockets answered by this kernel; the procfs
        files they read besides netlink from the clone."""
        kernel = self

        def answered(cls: type, protocol: str) -> type:
            class Answered(cls):  # type: ignore[misc]
                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    super().__init__(*args, **kwargs)
                    self.request_proxy = kernel.proxy(self, protocol)

                def sendto(self, data: bytes, address: Any) -> int:
                    # pyroute2's generic netlink family lookup writes to the socket
                    # itself (no request proxy): answer it the same way.
                    kind, seq = NLMSG.unpack_from(data)[1], NLMSG.unpack_from(data)[3]
                    if kind != GENL_ID_CTRL:
                        raise AssertionError(f"unexpected sendto of message type {kind}")
                    kernel.requests["ctrl"] = kernel.requests.get("ctrl", 0) + 1
                    for chunk in kernel._datagrams["ctrl"]:
                        self.enqueue(with_seq(chunk, seq), None)
                    return len(data)

            return Answered

        def read_proc_net(name: str, netns: str | None = None) -> str:
            assert name == "pppol2tp", name
            return pppol2tp.read_text()

        with contextlib.ExitStack() as stack:
            for module, names, protocol in (
                # (The second names: the sockets before issue 19's decoders, so this
                # bench also measures the code it was written against.)
                (kernel_rtnl, ("AsyncRtnlDumpSocket", "AsyncIPRoute"), "rtnl"),
                (kernel_l2tp, ("L2tpSocket",), "genl"),
                (kernel_xfrm, ("AsyncXfrmDumpSocket", "AsyncXfrmSocket"), "xfrm"),
            ):
                name = next(n for n in names if hasattr(module, n))
                answering = answered(getattr(module, name), protocol)
                stack.enter_context(mock.patch.object(module, name, answering))
            stack.enter_context(mock.patch.object(kernel_l2tp, "read_proc_net", read_proc_net))
            stack.enter_context(
                mock.patch.object(
                    kernel_source,
                    "read_xfrm_stat",
                    lambda netns=None: kernel_source_stat(self.clone.xfrm_stat),
                )
            )
            yield


def kernel_source_stat(text: str) -> dict[str, int]:
    from exporter.kernel.xfrm_stat import parse_xfrm_stat

    return parse_xfrm_stat(text)


class SteppingClock:
    """`time` for the kernel source's caches: each scrape is `step` seconds after the
    last, so every timed scrape reads the kernel anew (the daemon's scrapes are 15 s apart;
    back to back they would share one reading)."""

    def __init__(self, step: float = 15.0) -> None:
        self.offset = 0.0
        self.step = step

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def next_scrape(self) -> None:
        self.offset += self.step


def inbound_direction(rec: Recording) -> int:
    """Which of the template client's two SAs (`spi(i, d)`) is the one to the server."""
    server = ip4(rec.server)
    id_daddr = NLMSG.size + SA_ADDRESSES[2]
    templates = template_states(rec)
    (inbound,) = [d for d, m in enumerate(templates) if m[id_daddr : id_daddr + 4] == server]
    return inbound


def with_kernel_children(answer: list[Any], rec: Recording) -> list[Any]:
    """The cloned `list-sas` answer with each CHILD SA named as the kernel clones hold it:
    IKE SA i's CHILD SA gets client i's SPIs and reqid and the recording's server as local
    host, so the strongSwan collector's kernel traffic finds both its states."""
    inbound = inbound_direction(rec)
    for i, entry in enumerate(answer):
        ((_conn, sa),) = entry.items()
        sa["local-host"] = rec.server
        ((_name, child),) = sa["child-sas"].items()
        child["spi-in"] = f"{spi(i, inbound):08x}"
        child["spi-out"] = f"{spi(i, 1 - inbound):08x}"
        child["reqid"] = str(ids(i))
    return answer


def both_directions_joined(view: CharonView, xfrm: XfrmSnapshot, n: int) -> list[str]:
    """A problem unless each of the N CHILD SAs finds its state in both directions (one
    found would already give it kernel counts, and a dump half as costly to join)."""
    snapshot = view.current()
    if snapshot is None:
        return ["the strongSwan view has no snapshot"]
    index = index_states(xfrm.states)
    both = sum(
        1
        for sa in snapshot.ike_sas
        for child in sa.children
        if _counts(index, child.spi_in, "esp", sa.local_host, _reqid(child)) is not None
        and _counts(index, child.spi_out, "esp", sa.remote_host, _reqid(child)) is not None
    )
    return [] if both == n else [f"{both} of {n} CHILD SAs found their two XFRM states"]


@contextlib.asynccontextmanager
async def strongswan_exporter(
    n: int, series_limit: int, kernel: tuple[Recording, KernelSource] | None = None
) -> Any:
    """`bench/render.py`'s strongSwan side: the recorded `list-sas` answer cloned to `n`
    IKE SAs (remote hosts `public_address(i)`), listed once by the real `CharonView` from
    the tests' fake VICI server; yields the strongSwan collector's scraper and the view.

    With `kernel` (a source over the recorded kernel, served): the collector as on a
    server whose charon puts its CHILD SAs in the kernel, reading their traffic from the
    XFRM dump at each scrape, the CHILD SAs named as the clones hold them."""
    options = StrongswanOptions(series_limit=series_limit)
    recording = ViciRecording.scenario("remote-access")
    recording.streams["list-sas"] = cloned_list_sas(recording.streams["list-sas"], n)
    if kernel is not None:
        recording.streams["list-sas"] = with_kernel_children(
            recording.streams["list-sas"], kernel[0]
        )
    with tempfile.TemporaryDirectory() as folder:
        async with FakeViciServer(Path(folder) / "charon.vici", recording) as charon:
            view = CharonView(charon.address, 30.0, options)
            try:
                await view.refresh()
                if not view.up:
                    raise RuntimeError(f"the fake charon did not answer: {view.error}")
                scraper = Scraper(series_limit=series_limit)
                source = kernel[1] if kernel is not None else None
                collector = StrongswanCollector(view, options, scraper.limiter, source)
                scraper.add(collector)
                yield scraper, view, collector
            finally:
                await view.close()
                await charon.wait_until(lambda: not charon.open_connections)


# -- the scrapes --------------------------------------------------------------------------


@dataclasses.dataclass
class KernelExporter:
    """The kernel collectors and the users collector, wired as the daemon wires them."""

    scraper: Scraper
    source: KernelSource
    clock: SteppingClock
    kernel: RecordedKernel


@contextlib.asynccontextmanager
async def kernel_exporter(
    rec: Recording,
    n: int,
    ike: Callable[[], StrongswanSnapshot | None],
    series_limit: int,
    only: Sequence[str] | None = None,
) -> Any:
    """A scraper over the recorded kernel cloned to `n` clients: all kernel collectors
    (ppp, l2tp, xfrm, sessions, users), or `only` those named."""
    cloned = clone(rec, n)
    kernel = RecordedKernel(cloned, rec.l2tp_family)
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "ppp"
        (state / "ended").mkdir(parents=True)
        for name, text in cloned.hooks.items():
            (state / name).write_text(text)
        pppol2tp = Path(folder) / "pppol2tp"
        pppol2tp.write_text(cloned.pppol2tp)
        clock = SteppingClock()
        options = KernelOptions(state_dir=state)
        scraper = Scraper(series_limit=series_limit)
        source = KernelSource(options)
        collectors: list[Collector] = build_kernel_collectors(
            options, ike, limiter=scraper.limiter, source=source
        )
        tracker = LoginTracker(source, ike, LoginOptions(), state)
        collectors.append(UsersCollector(tracker, scraper.limiter))
        scraper.add(*(c for c in collectors if only is None or c.name in only))
        with kernel.serving(pppol2tp), mock.patch.object(kernel_source, "time", clock):
            yield KernelExporter(scraper, source, clock, kernel)


@dataclasses.dataclass
class Scrape:
    """One scrape: wall seconds to collect and to render, the process's CPU seconds for
    both (worker threads included: the procfs and hook reads run in them), the answer."""

    collect: float
    render: float
    cpu: float
    samples: int
    size: int


async def one_scrape(scraper: Scraper, before: Callable[[], None]) -> Scrape:
    before()
    cpu = time.process_time()
    started = time.perf_counter()
    families = await scraper.scrape()
    collected = time.perf_counter()
    body, _ = RenderCache().get(families, ACCEPT, "gzip")
    rendered = time.perf_counter()
    cpu = time.process_time() - cpu
    samples = sum(len(f.samples) for f in families)
    return Scrape(collected - started, rendered - collected, cpu, samples, len(body))


async def timed(
    scraper: Scraper, scrapes: int, before: Callable[[], None] = lambda: None
) -> list[Scrape]:
    """`scrapes` scrapes, after 2 unmeasured ones."""
    for _ in range(2):
        await one_scrape(scraper, before)
    return [await one_scrape(scraper, before) for _ in range(scrapes)]


async def peak_allocation(scraper: Scraper, before: Callable[[], None]) -> int:
    """The most Python memory one scrape (collection and rendering) held at once beyond
    what was allocated before it (tracemalloc)."""
    await one_scrape(scraper, before)  # caches warm
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        await one_scrape(scraper, before)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start


def metric_values(families: Sequence[Any], name: str) -> list[float]:
    return [s.value for f in families if f.name == name for s in f.samples]


async def check_counts(exp: KernelExporter, n: int, ike_users: bool) -> list[str]:
    """What a scrape of `n` cloned clients must say; the problems found."""
    problems = []
    exp.clock.next_scrape()
    families = await exp.scraper.scrape()
    want = {
        "ppp_interfaces": n,
        "l2tp_tunnels": n,
        "l2tp_sessions": n,
        "l2tp_ipsec_sessions": n,
        # The ledger tracks at most --collector.users.max logins.
        "l2tp_ipsec_users_tracked": min(n, LoginOptions().max_users),
    }
    for name, value in want.items():
        got = metric_values(families, name)
        if got != [value]:
            problems.append(f"{name}: {got}, want [{value}]")
    esp = sum(metric_values(families, "xfrm_states"))
    if esp != 2 * n:
        problems.append(f"xfrm_states: {esp}, want {2 * n}")
    joined = await exp.source.ppp(), await exp.source.l2tp(), await exp.source.xfrm()
    interfaces, l2tp, xfrm = joined
    distinct = {
        "ifindexes": len({i.index for i in interfaces}),
        "names": len({i.name for i in interfaces}),
        "inner addresses": len({i.peer_address for i in interfaces}),
        "tunnel ids": len({t.tunnel_id for t in l2tp.tunnels}),
        "tunnel peers": len({t.peer_address for t in l2tp.tunnels}),
        "session ids": len({(s.tunnel_id, s.session_id) for s in l2tp.sessions}),
        "session interfaces": len({s.interface for s in l2tp.sessions if s.interface}),
    }
    problems += [f"{what}: {got} distinct, want {n}" for what, got in distinct.items() if got != n]
    spis = len({(s.dst, s.spi) for s in xfrm.states})
    if spis != 2 * n:
        problems.append(f"SPIs: {spis} distinct, want {2 * n}")
    info = [f for f in families if f.name == "l2tp_ipsec_session_info"]
    shown = [s for f in info for s in f.samples]
    with_ike = [s for s in shown if s.labels.get("ike_uniqueid")]
    if ike_users and len(with_ike) != len(shown):
        problems.append(f"sessions joined to an IKE SA: {len(with_ike)} of {len(shown)}")
    return problems


# -- the run ------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    recording: str
    clients: int
    kernel: list[Scrape]
    #: Collector name → its scrapes when it runs alone (it then reads its dumps itself).
    alone: dict[str, list[Scrape]]
    strongswan: list[Scrape]
    listing: list[float]
    kernel_peak: int
    strongswan_peak: int
    problems: list[str]
    #: The collectors the issue names (ppp, l2tp, xfrm, sessions) together, sharing dumps.
    named: list[Scrape]
    floor: Floor
    #: The strongSwan collector reading its CHILD SAs' traffic from the kernel.
    strongswan_kernel: list[Scrape]


ALONE = ("ppp", "l2tp", "xfrm", "sessions", "users")
#: The kernel collectors issue 19's goal names (users, per-login accounting, is apart).
NAMED = ("ppp", "l2tp", "xfrm", "sessions")


# -- the floor ----------------------------------------------------------------------------


@dataclasses.dataclass
class Floor:
    """What no implementation of these collectors in Python can go below, at N: walking
    the dumps' messages (every datagram split, one header read per message; no attribute,
    no object, no join) and writing their samples (each line from a label part made
    beforehand, as a writer that cached label strings across scrapes would, and the value
    as `str`). CPU seconds per scrape, a list of repetitions."""

    messages: int
    walk: list[float]
    samples: int
    write: list[float]


#: The dumps one scrape of the named collectors reads (the L2TP family lookup aside).
FLOOR_DUMPS = ("links", "addresses", "tunnels", "sessions", "states", "policies")


def floor_walk(kernel: RecordedKernel) -> int:
    """Split every datagram of the scrape's dumps into messages, reading each header."""
    unpack = NLMSG.unpack_from
    count = 0
    for name in FLOOR_DUMPS:
        for datagram in kernel.datagrams(name):
            offset, end = 0, len(datagram)
            while offset + NLMSG.size <= end:
                length = unpack(datagram, offset)[0]
                if length < NLMSG.size:
                    break
                count += 1
                offset += (length + 3) & ~3
    return count


def floor_lines(families: Sequence[Any]) -> list[tuple[str, float]]:
    """(the sample's line up to its value, the value) of every sample, made once."""
    lines = []
    for family in families:
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            lines.append(
                (f"{sample.name}{{{labels}}} " if labels else f"{sample.name} ", sample.value)
            )
    return lines


def floor_write(lines: Sequence[tuple[str, float]]) -> int:
    return len("".join([f"{head}{value}\n" for head, value in lines]))


def cpu_of(work: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.process_time()
        work()
        out.append(time.process_time() - started)
    return out


async def measure_floor(exp: KernelExporter, repeat: int) -> Floor:
    exp.clock.next_scrape()
    families = await exp.scraper.scrape()
    lines = floor_lines(families)
    messages = floor_walk(exp.kernel)
    return Floor(
        messages=messages,
        walk=cpu_of(lambda: floor_walk(exp.kernel), repeat),
        samples=len(lines),
        write=cpu_of(lambda: floor_write(lines), repeat),
    )


async def measure(rec: Recording, n: int, scrapes: int, series_limit: int, profile: bool) -> Row:
    async with strongswan_exporter(n, series_limit) as (strongswan, view, _):
        ike = view.current
        swan = await timed(strongswan, scrapes)
        listing = []
        for _ in range(max(3, scrapes // 5)):
            started = time.perf_counter()
            await view.refresh()
            listing.append(time.perf_counter() - started)
        swan_peak = await peak_allocation(strongswan, lambda: None)
        async with kernel_exporter(rec, n, ike, series_limit) as exp:
            problems = await check_counts(exp, n, ike_users=True)
            kernel = await timed(exp.scraper, scrapes, exp.clock.next_scrape)
            kernel_peak = await peak_allocation(exp.scraper, exp.clock.next_scrape)
            # The strongSwan collector as on a kernel-netlink server: its CHILD SAs'
            # traffic from the XFRM dump of the same recorded kernel at each scrape.
            served = (rec, exp.source)
            async with strongswan_exporter(n, series_limit, served) as (swan_k, view_k, collector):
                swan_kernel = await timed(swan_k, scrapes, exp.clock.next_scrape)
                problems += both_directions_joined(view_k, await exp.source.xfrm(), n)
                joined = len(collector._kernel_counts)
                if joined != n:
                    problems.append(f"kernel traffic for {joined} of {n} CHILD SAs")
            if profile:
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(scrapes):
                    await one_scrape(exp.scraper, exp.clock.next_scrape)
                profiler.disable()
                print(f"\n## cProfile, kernel collectors, {n} clients", file=sys.stderr)
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        alone = {}
        for name in ALONE:
            async with kernel_exporter(rec, n, ike, series_limit, only=(name,)) as exp:
                alone[name] = await timed(exp.scraper, max(3, scrapes // 3), exp.clock.next_scrape)
        async with kernel_exporter(rec, n, ike, series_limit, only=NAMED) as exp:
            named = await timed(exp.scraper, scrapes, exp.clock.next_scrape)
            floor = await measure_floor(exp, max(5, scrapes))
    return Row(
        rec.name,
        n,
        kernel,
        alone,
        swan,
        listing,
        kernel_peak,
        swan_peak,
        problems,
        named,
        floor,
        swan_kernel,
    )


def p50(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def cpu(scrapes: Sequence[Scrape]) -> float:
    return p50([s.cpu for s in scrapes])


def wall(scrapes: Sequence[Scrape]) -> list[float]:
    return [s.collect + s.render for s in scrapes]


HEADER = (
    "| recording | clients | kernel CPU p50 ms | kernel wall p50 / p95 ms "
    "| alone, CPU p50 ms: ppp / l2tp / xfrm / sessions / users | strongSwan CPU p50 ms "
    "| strongSwan wall p50 / p95 ms | kernel ÷ strongSwan, CPU | samples, kernel / strongSwan "
    "| peak alloc per scrape, kernel / strongSwan | strongSwan listing round, wall p50 ms |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def format_row(row: Row) -> str:
    alone = " / ".join(ms(cpu(row.alone[name])) for name in ALONE)
    kw, sw = wall(row.kernel), wall(row.strongswan)
    return (
        f"| {row.recording} | {row.clients:,} | {ms(cpu(row.kernel))} "
        f"| {ms(p50(kw))} / {ms(p95(kw))} | {alone} | {ms(cpu(row.strongswan))} "
        f"| {ms(p50(sw))} / {ms(p95(sw))} | {cpu(row.kernel) / cpu(row.strongswan):.1f} "
        f"| {row.kernel[-1].samples:,} / {row.strongswan[-1].samples:,} "
        f"| {row.kernel_peak / 1e6:.1f} / {row.strongswan_peak / 1e6:.1f} MB "
        f"| {ms(p50(row.listing))} |"
    )


FLOOR_HEADER = (
    "| recording | clients | strongSwan CPU p50 ms: snapshot only / with kernel traffic "
    "| ppp + l2tp + xfrm + sessions CPU p50 ms (÷ strongSwan: snapshot only / with kernel "
    "traffic) | users alone, CPU p50 ms "
    "| floor, walk: messages, CPU p50 ms | floor, write: samples, CPU p50 ms "
    "| floor ÷ strongSwan snapshot only |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|"
)


def format_floor_row(row: Row) -> str:
    swan, swan_k, named = cpu(row.strongswan), cpu(row.strongswan_kernel), cpu(row.named)
    walk, write = p50(row.floor.walk), p50(row.floor.write)
    return (
        f"| {row.recording} | {row.clients:,} | {ms(swan)} / {ms(swan_k)} "
        f"| {ms(named)} ({named / swan:.1f} / {named / swan_k:.1f}) "
        f"| {ms(cpu(row.alone['users']))} | {row.floor.messages:,}, {ms(walk)} "
        f"| {row.floor.samples:,}, {ms(write)} | {(walk + write) / swan:.2f} |"
    )


def baseline_row(tree: Path, recording: str, n: int, scrapes: int, series_limit: int) -> str:
    """The row `tree`'s own copy of this bench prints for one size, its recording marked
    'before' (so before and after are measured in one run, minutes apart at most)."""
    command = [
        sys.executable,
        str(tree / "bench" / "kernel_scale.py"),
        f"--clients={n}",
        f"--recording={recording}",
        f"--scrapes={scrapes}",
        f"--series-limit={series_limit}",
    ]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=False)
    rows = [line for line in done.stdout.splitlines() if line.startswith(f"| {recording} |")]
    # (The first: the floor table that follows has a row of the same recording.)
    if done.returncode != 0 or not rows:
        raise RuntimeError(f"the baseline bench failed ({done.returncode}): {done.stderr[-2000:]}")
    return rows[0].replace(f"| {recording} |", f"| {recording} (before) |", 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--clients", default="100,1000,5000", help="client counts")
    parser.add_argument("--scrapes", type=int, default=20, help="scrapes timed per size")
    parser.add_argument(
        "--recording", choices=(*RECORDINGS, "both"), default="both", help="which guest dumps"
    )
    parser.add_argument(
        "--series-limit", type=int, default=1000, help="as the daemon's flag (default 1000)"
    )
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 clients, 5 scrapes")
    parser.add_argument("--profile", action="store_true", help="cProfile to stderr")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="TREE",
        help="another checkout of the exporter (e.g. `git archive <commit>` unpacked): its "
        "own bench/kernel_scale.py runs each size just before this one, in a subprocess, "
        "and its row is printed above this one's (recording marked 'before')",
    )
    args = parser.parse_args(argv)
    try:
        sizes = [int(n) for n in args.clients.split(",")]
    except ValueError:
        parser.error(f"--clients takes comma-separated numbers, not {args.clients!r}")
    if args.quick:
        sizes, args.scrapes = [n for n in sizes if n <= 1000] or [100], 5
    if max(sizes) > 65535:
        parser.error("at most 65,535 clients (L2TPv2 tunnel ids are 16-bit)")
    recordings = RECORDINGS if args.recording == "both" else (args.recording,)
    print(HEADER, flush=True)
    failed = []
    rows = []
    for name in recordings:
        rec = Recording.load(name)
        for n in sizes:
            if args.baseline is not None:
                print(baseline_row(args.baseline, name, n, args.scrapes, args.series_limit))
            row = asyncio.run(measure(rec, n, args.scrapes, args.series_limit, args.profile))
            print(format_row(row), flush=True)
            rows.append(row)
            failed += [f"{name}, {n} clients: {p}" for p in row.problems]
    print(f"\n{FLOOR_HEADER}")
    for row in rows:
        print(format_floor_row(row))
    for problem in failed:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
