#!/usr/bin/env python3
"""Dump raw netlink answers and VICI answers in the guest, for test fixtures.

Runs inside the vmlab guest (the host's record.py starts it over the control channel)
and prints one JSON object on stdout. Netlink requests are built and sent with plain
sockets and the answers kept byte for byte as the kernel sent them (every recv()
concatenated), so no decoder is involved. VICI answers are decoded the way
tests/fixtures/record_vici.py does (values as strings, streamed commands as lists).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys
from pathlib import Path
from typing import Any

NETLINK_ROUTE = 0
NETLINK_XFRM = 6
NETLINK_GENERIC = 16

NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3

RTM_GETLINK = 18
RTM_GETADDR = 22
XFRM_MSG_GETSA = 0x12
XFRM_MSG_GETPOLICY = 0x15
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
L2TP_CMD_TUNNEL_GET = 4
L2TP_CMD_SESSION_GET = 8
L2TP_GENL_VERSION = 1


def nlmsg(mtype: int, flags: int, seq: int, payload: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 0) + payload


def nla(atype: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), atype) + data
    return raw + b"\0" * (-len(raw) % 4)


def messages(raw: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload) of each message in raw; only to know when to stop."""
    out = []
    off = 0
    while off + 16 <= len(raw):
        length, mtype, flags, seq, _pid = struct.unpack_from("=IHHII", raw, off)
        if length < 16:
            break
        out.append((mtype, flags, seq, raw[off + 16 : off + length]))
        off += (length + 3) & ~3
    return out


def exchange(proto: int, request: bytes, dump: bool) -> bytes:
    """Send request, return every byte received until the answer is complete."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((0, 0))
        s.settimeout(10)
        s.sendto(request, (0, 0))
        got = b""
        while True:
            chunk = s.recv(1 << 20)
            got += chunk
            types = [m[0] for m in messages(chunk)]
            if not dump or NLMSG_DONE in types or NLMSG_ERROR in types:
                return got


def record(name: str, proto: int, request: bytes, dump: bool, what: str) -> dict[str, Any]:
    raw = exchange(proto, request, dump)
    msgs = messages(raw)
    return {
        "name": name,
        "protocol": {
            NETLINK_ROUTE: "NETLINK_ROUTE",
            NETLINK_XFRM: "NETLINK_XFRM",
            NETLINK_GENERIC: "NETLINK_GENERIC",
        }[proto],
        "request": what,
        "dump": dump,
        "request_b64": base64.b64encode(request).decode(),
        "response_b64": base64.b64encode(raw).decode(),
        "bytes": len(raw),
        "messages": len(msgs),
        "message_types": sorted({m[0] for m in msgs}),
    }


def l2tp_family(answer: bytes) -> int:
    for mtype, _flags, _seq, payload in messages(answer):
        if mtype != GENL_ID_CTRL:
            continue
        off = 4  # genlmsghdr
        while off + 4 <= len(payload):
            alen, atype = struct.unpack_from("=HH", payload, off)
            if atype == CTRL_ATTR_FAMILY_ID:
                return int(struct.unpack_from("=H", payload, off + 4)[0])
            off += (alen + 3) & ~3
    raise SystemExit("no l2tp generic netlink family (is l2tp_netlink loaded?)")


def netlink_dumps() -> list[dict[str, Any]]:
    """The recorded requests and their answers (an error answer, such as EPERM
    without CAP_NET_ADMIN, is recorded like any other)."""
    dump = NLM_F_REQUEST | NLM_F_DUMP
    out = [
        record(
            "rtnl-getlink",
            NETLINK_ROUTE,
            nlmsg(RTM_GETLINK, dump, 1, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)),
            True,
            "RTM_GETLINK dump, ifinfomsg AF_UNSPEC, no attributes",
        ),
        record(
            "rtnl-getaddr",
            NETLINK_ROUTE,
            nlmsg(RTM_GETADDR, dump, 2, struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0)),
            True,
            "RTM_GETADDR dump, ifaddrmsg AF_UNSPEC",
        ),
        record(
            "xfrm-getsa",
            NETLINK_XFRM,
            nlmsg(XFRM_MSG_GETSA, dump, 3, b""),
            True,
            "XFRM_MSG_GETSA dump, empty payload",
        ),
        record(
            "xfrm-getpolicy",
            NETLINK_XFRM,
            nlmsg(XFRM_MSG_GETPOLICY, dump, 4, b""),
            True,
            "XFRM_MSG_GETPOLICY dump, empty payload",
        ),
    ]
    ctrl = record(
        "genl-ctrl-getfamily-l2tp",
        NETLINK_GENERIC,
        nlmsg(
            GENL_ID_CTRL,
            NLM_F_REQUEST,
            5,
            struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0) + nla(CTRL_ATTR_FAMILY_NAME, b"l2tp\0"),
        ),
        False,
        "CTRL_CMD_GETFAMILY family name 'l2tp' (not a dump)",
    )
    family = l2tp_family(base64.b64decode(ctrl["response_b64"]))
    ctrl["l2tp_family_id"] = family
    out.append(ctrl)
    genl = struct.pack("=BBH", L2TP_CMD_TUNNEL_GET, L2TP_GENL_VERSION, 0)
    out.append(
        record(
            "genl-l2tp-tunnel-get",
            NETLINK_GENERIC,
            nlmsg(family, dump, 6, genl),
            True,
            f"L2TP_CMD_TUNNEL_GET dump, family id {family}, version 1",
        )
    )
    genl = struct.pack("=BBH", L2TP_CMD_SESSION_GET, L2TP_GENL_VERSION, 0)
    out.append(
        record(
            "genl-l2tp-session-get",
            NETLINK_GENERIC,
            nlmsg(family, dump, 7, genl),
            True,
            f"L2TP_CMD_SESSION_GET dump, family id {family}, version 1",
        )
    )
    return out


def first_error(raw: bytes) -> int | None:
    """The error code of the answer's first NLMSG_ERROR carrying one (negative errno)."""
    for mtype, _flags, _seq, payload in messages(raw):
        if mtype == NLMSG_ERROR:
            code = int(struct.unpack_from("=i", payload)[0])
            return code or None
    return None


def netlink_dumps_each() -> list[dict[str, Any]]:
    """Each request of netlink_dumps with "error" (the negative errno of a refusal,
    or None) and "messages", for the privilege check."""
    out = []
    for rec in netlink_dumps():
        raw = base64.b64decode(rec["response_b64"])
        out.append({"name": rec["name"], "messages": rec["messages"], "error": first_error(raw)})
    return out


# --- VICI --------------------------------------------------------------------------------

VICI_COMMANDS: list[tuple[str, str, str | None, dict[str, str]]] = [
    ("version", "version", None, {}),
    ("stats", "stats", None, {}),
    ("list-sas", "list-sas", "list-sa", {}),
    ("list-conns", "list-conns", "list-conn", {}),
    ("get-pools", "get-pools", None, {"leases": "yes"}),
    ("list-certs", "list-certs", "list-cert", {}),
    ("get-counters", "get-counters", None, {"all": "yes"}),
    ("get-counters-global", "get-counters", None, {}),
]


def decode(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"$base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {decode(k): decode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [decode(v) for v in value]
    return value


def vici_answers(path: str) -> dict[str, Any]:
    from vici.protocol import Message, Packet, Transport

    def one(command: str, event: str | None, args: dict[str, str]) -> Any:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            t = Transport(s)
            msg = Message.serialize(args) if args else None
            if event is None:
                t.send(Packet.request(command, msg))
                return decode(Message.deserialize(Packet.parse(t.receive()).payload))
            t.send(Packet.register_event(event))
            Packet.parse(t.receive())
            t.send(Packet.request(command, msg))
            events = []
            while True:
                p = Packet.parse(t.receive())
                if p.response_type == Packet.EVENT:
                    events.append(decode(Message.deserialize(p.payload)))
                elif p.response_type == Packet.CMD_RESPONSE:
                    break
            t.send(Packet.unregister_event(event))
            Packet.parse(t.receive())
            return events

    return {name: one(cmd, ev, args) for name, cmd, ev, args in VICI_COMMANDS}


def main() -> None:
    out: dict[str, Any] = {
        "kernel": os.uname().release,
        "netlink": netlink_dumps(),
        "xfrm_stat": Path("/proc/net/xfrm_stat").read_text(),
    }
    # "--no-vici": a server without charon (the Libreswan flavour).
    if sys.argv[1:] != ["--no-vici"]:
        out["vici"] = vici_answers(sys.argv[1] if len(sys.argv) > 1 else "/var/run/charon.vici")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
