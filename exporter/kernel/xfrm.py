"""XFRM (the kernel's IPsec SAs and policies) over the `NETLINK_XFRM` socket.

pyroute2 opens the socket but has no XFRM message classes, so they are defined here on its
nlmsg primitives, field by field after `include/uapi/linux/xfrm.h`. The key-carrying
attributes (XFRMA_ALG_*) are mapped to pyroute2's `none` type: keys are never decoded
or kept.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterable
from typing import Any

from pyroute2.netlink import NETLINK_XFRM, NLM_F_DUMP, NLM_F_REQUEST, nla, nlmsg
from pyroute2.netlink.nlsocket import AsyncNetlinkSocket, Marshal

from exporter.kernel.gcpause import gc_paused
from exporter.kernel.model import XfrmPolicy, XfrmSnapshot, XfrmState
from exporter.kernel.netlink import (
    check_errors,
    collect_dump,
    netns_error,
    socket_args,
    struct_attr,
)
from exporter.kernel.nlraw import NLMSG_LEN, RawMarshal, attributes, each_message

XFRM_MSG_NEWSA = 0x10
XFRM_MSG_GETSA = 0x12
XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_GETPOLICY = 0x15

#: IPPROTO_* numbers of the XFRM protocols, as `ip xfrm` names them.
PROTOCOLS = {50: "esp", 51: "ah", 108: "comp", 43: "route2", 60: "hao"}
#: XFRM_MODE_* (xfrm.h).
MODES = {0: "transport", 1: "tunnel", 2: "ro", 3: "in_trigger", 4: "beet"}
#: XFRM_POLICY_IN/OUT/FWD, and the per-socket policies the kernel lists as dir + 3
#: (XFRM_POLICY_MAX + dir; `ip xfrm policy` shows them as "socket in/out").
DIRECTIONS = {
    0: "in",
    1: "out",
    2: "fwd",
    3: "socket_in",
    4: "socket_out",
    5: "socket_fwd",
}

# struct xfrm_selector (56 bytes): addresses are xfrm_address_t (16 bytes, IPv4 in the
# first 4), ports big-endian.
_SELECTOR = (
    ("sel_daddr", "16s"),
    ("sel_saddr", "16s"),
    ("sel_dport", ">H"),
    ("sel_dport_mask", ">H"),
    ("sel_sport", ">H"),
    ("sel_sport_mask", ">H"),
    ("sel_family", "H"),
    ("sel_prefixlen_d", "B"),
    ("sel_prefixlen_s", "B"),
    ("sel_proto", "B"),
    ("__sel_pad", "3x"),
    ("sel_ifindex", "i"),
    ("sel_user", "I"),
)
# struct xfrm_lifetime_cfg (64 bytes) and struct xfrm_lifetime_cur (32 bytes).
_LIFETIME_CFG = tuple(
    (f"lft_{name}", "Q")
    for name in (
        "soft_byte_limit",
        "hard_byte_limit",
        "soft_packet_limit",
        "hard_packet_limit",
        "soft_add_expires_seconds",
        "hard_add_expires_seconds",
        "soft_use_expires_seconds",
        "hard_use_expires_seconds",
    )
)
_LIFETIME_CUR = (
    ("cur_bytes", "Q"),
    ("cur_packets", "Q"),
    ("cur_add_time", "Q"),
    ("cur_use_time", "Q"),
)


class _xfrm_msg(nlmsg):  # type: ignore[misc]
    """The XFRMA_* attribute table shared by SA and policy messages."""

    prefix = "XFRMA_"
    nla_map = (
        ("XFRMA_UNSPEC", "none"),
        ("XFRMA_ALG_AUTH", "none"),  # key: not decoded
        ("XFRMA_ALG_CRYPT", "none"),  # key: not decoded
        ("XFRMA_ALG_COMP", "none"),
        ("XFRMA_ENCAP", "encap_tmpl"),
        ("XFRMA_TMPL", "user_tmpl"),
        ("XFRMA_SA", "none"),
        ("XFRMA_POLICY", "none"),
        ("XFRMA_SEC_CTX", "none"),
        ("XFRMA_LTIME_VAL", "none"),
        ("XFRMA_REPLAY_VAL", "replay_state"),
        ("XFRMA_REPLAY_THRESH", "uint32"),
        ("XFRMA_ETIMER_THRESH", "uint32"),
        ("XFRMA_SRCADDR", "none"),
        ("XFRMA_COADDR", "none"),
        ("XFRMA_LASTUSED", "uint64"),
        ("XFRMA_POLICY_TYPE", "none"),
        ("XFRMA_MIGRATE", "none"),
        ("XFRMA_ALG_AEAD", "none"),  # key: not decoded
        ("XFRMA_KMADDRESS", "none"),
        ("XFRMA_ALG_AUTH_TRUNC", "none"),  # key: not decoded
        ("XFRMA_MARK", "none"),
        ("XFRMA_TFCPAD", "uint32"),
        ("XFRMA_REPLAY_ESN_VAL", "none"),
        ("XFRMA_SA_EXTRA_FLAGS", "uint32"),
        ("XFRMA_PROTO", "uint8"),
        ("XFRMA_ADDRESS_FILTER", "none"),
        ("XFRMA_PAD", "none"),
        ("XFRMA_OFFLOAD_DEV", "none"),
        ("XFRMA_SET_MARK", "uint32"),
        ("XFRMA_SET_MARK_MASK", "uint32"),
        ("XFRMA_IF_ID", "uint32"),
        ("XFRMA_MTIMER_THRESH", "uint32"),
    )

    class encap_tmpl(nla):  # type: ignore[misc]
        """struct xfrm_encap_tmpl: NAT-T UDP encapsulation of an SA."""

        fields = (
            ("encap_type", "H"),
            ("encap_sport", ">H"),
            ("encap_dport", ">H"),
            ("__pad", "2x"),
            ("encap_oa", "16s"),
        )

    class replay_state(nla):  # type: ignore[misc]
        """struct xfrm_replay_state: sequence numbers and the replay bitmap."""

        fields = (("oseq", "I"), ("seq", "I"), ("bitmap", "I"))

    class user_tmpl(nla):  # type: ignore[misc]
        """struct xfrm_user_tmpl (64 bytes); a policy may carry several, back to back."""

        fields = (
            ("id_daddr", "16s"),
            ("id_spi", ">I"),
            ("id_proto", "B"),
            ("__id_pad", "3x"),
            ("family", "H"),
            ("__family_pad", "2x"),
            ("saddr", "16s"),
            ("reqid", "I"),
            ("mode", "B"),
            ("share", "B"),
            ("optional", "B"),
            ("__pad", "x"),
            ("aalgos", "I"),
            ("ealgos", "I"),
            ("calgos", "I"),
        )


class xfrm_usersa_info(_xfrm_msg):
    """struct xfrm_usersa_info (224 bytes): one SA of an XFRM_MSG_NEWSA answer."""

    fields = (
        *_SELECTOR,
        ("id_daddr", "16s"),
        ("id_spi", ">I"),
        ("id_proto", "B"),
        ("__id_pad", "3x"),
        ("saddr", "16s"),
        *_LIFETIME_CFG,
        *_LIFETIME_CUR,
        ("stats_replay_window", "I"),
        ("stats_replay", "I"),
        ("stats_integrity_failed", "I"),
        ("seq", "I"),
        ("reqid", "I"),
        ("family", "H"),
        ("mode", "B"),
        ("replay_window", "B"),
        ("flags", "B"),
        ("__pad", "7x"),
    )


class xfrm_userpolicy_info(_xfrm_msg):
    """struct xfrm_userpolicy_info (168 bytes): one policy of an XFRM_MSG_NEWPOLICY answer."""

    fields = (
        *_SELECTOR,
        *_LIFETIME_CFG,
        *_LIFETIME_CUR,
        ("priority", "I"),
        ("index", "I"),
        ("dir", "B"),
        ("action", "B"),
        ("flags", "B"),
        ("share", "B"),
        ("__pad", "4x"),
    )


class xfrm_request(nlmsg):  # type: ignore[misc]
    """An empty payload: what `ip xfrm state/policy list` sends for a whole-table dump."""

    fields = ()


class MarshalXfrm(Marshal):  # type: ignore[misc]
    msg_map = {
        XFRM_MSG_NEWSA: xfrm_usersa_info,
        XFRM_MSG_NEWPOLICY: xfrm_userpolicy_info,
    }


class AsyncXfrmSocket(AsyncNetlinkSocket):  # type: ignore[misc]
    """pyroute2's async netlink socket on `NETLINK_XFRM`, decoding with `MarshalXfrm`."""

    marshal_class = MarshalXfrm

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(family=NETLINK_XFRM, **kwargs)


class MarshalXfrmDump(RawMarshal):
    raw_types = frozenset({XFRM_MSG_NEWSA, XFRM_MSG_NEWPOLICY})


class AsyncXfrmDumpSocket(AsyncXfrmSocket):
    """`AsyncXfrmSocket` for the dumps: SAs and policies come as bytes (`RawMessage`),
    which `decode_states` / `decode_policies` read without pyroute2 decoding them."""

    marshal_class = MarshalXfrmDump


def address(raw: bytes, family: int) -> str:
    """An xfrm_address_t (16 bytes) as text."""
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def state_of(info: Any, attrs: Any | None = None) -> XfrmState:
    """The SA described by `info`, whose fields are xfrm_usersa_info's: an XFRM_MSG_NEWSA
    message, or the XFRMA_SA attribute of an XFRM_MSG_DELSA notification. `attrs` is the
    message carrying the other attributes (XFRMA_ENCAP), `info` itself when omitted."""
    family = info["family"]
    encap = struct_attr(info if attrs is None else attrs, "XFRMA_ENCAP")
    return XfrmState(
        src=address(info["saddr"], family),
        dst=address(info["id_daddr"], family),
        spi=info["id_spi"],
        proto=PROTOCOLS.get(info["id_proto"], str(info["id_proto"])),
        mode=MODES.get(info["mode"], str(info["mode"])),
        reqid=info["reqid"],
        bytes=info["cur_bytes"],
        packets=info["cur_packets"],
        added_at=float(info["cur_add_time"]),
        replay_window_errors=info["stats_replay_window"],
        replay_errors=info["stats_replay"],
        integrity_errors=info["stats_integrity_failed"],
        encap_sport=encap["encap_sport"] if encap is not None else None,
        encap_dport=encap["encap_dport"] if encap is not None else None,
    )


#: struct xfrm_usersa_info, the fields `XfrmState` takes: selector (skipped), id.daddr,
#: id.spi (big-endian), id.proto, saddr, lifetime config (skipped), curlft bytes,
#: packets, add_time (use_time skipped), stats (replay_window, replay, integrity_failed),
#: seq (skipped), reqid, family, mode.
_USERSA_INFO = struct.Struct("=56x16s4sB3x16s64xQQQ8xIII4xIHB")
_USERSA_INFO_LEN = 224
#: struct xfrm_userpolicy_info: selector daddr, saddr, (ports), family, prefixlens,
#: proto, (ifindex, user, lifetimes), priority, index, dir, action.
_USERPOLICY_INFO = struct.Struct("=16s16s8xHBBB11x96xIIBB")
_USERPOLICY_INFO_LEN = 168
XFRMA_ENCAP = 4
#: The one attribute of an SA message read (the walk stops there; keys are never cut out).
_ENCAP_ONLY = frozenset({XFRMA_ENCAP})
#: struct xfrm_encap_tmpl: type, sport, dport (big-endian), pad, original address.
_ENCAP = struct.Struct("=2x2s2s18x")
_BE32 = struct.Struct(">I")
_BE16 = struct.Struct(">H")


def _state_of_bytes(raw: bytes, start: int, end: int) -> XfrmState | None:
    """`state_of` for one XFRM_MSG_NEWSA message, `raw[start:end]`; None when too short."""
    if end - start < NLMSG_LEN + _USERSA_INFO_LEN:
        return None
    (
        daddr,
        spi,
        proto,
        saddr,
        cur_bytes,
        cur_packets,
        add_time,
        replay_window,
        replay,
        integrity,
        reqid,
        family,
        mode,
    ) = _USERSA_INFO.unpack_from(raw, start + NLMSG_LEN)
    encap = attributes(raw, start + NLMSG_LEN + _USERSA_INFO_LEN, end, _ENCAP_ONLY).get(XFRMA_ENCAP)
    sport = dport = None
    if encap is not None and len(encap) >= _ENCAP.size:
        raw_sport, raw_dport = _ENCAP.unpack_from(encap)
        sport, dport = _BE16.unpack(raw_sport)[0], _BE16.unpack(raw_dport)[0]
    return XfrmState(
        src=address(saddr, family),
        dst=address(daddr, family),
        spi=_BE32.unpack(spi)[0],
        proto=PROTOCOLS.get(proto, str(proto)),
        mode=MODES.get(mode, str(mode)),
        reqid=reqid,
        bytes=cur_bytes,
        packets=cur_packets,
        added_at=float(add_time),
        replay_window_errors=replay_window,
        replay_errors=replay,
        integrity_errors=integrity,
        encap_sport=sport,
        encap_dport=dport,
    )


@gc_paused
def decode_states(msgs: Iterable[Any]) -> list[XfrmState]:
    """SAs of an XFRM_MSG_GETSA dump answer (`RawMessage`s from the dump socket, or
    pyroute2 messages from `MarshalXfrm`)."""
    states = []
    for msg in check_errors(msgs):
        if msg["header"]["type"] != XFRM_MSG_NEWSA:
            continue
        for buf, start, end in each_message(msg):
            state = _state_of_bytes(buf, start, end)
            if state is not None:
                states.append(state)
    return states


def _policy_of_bytes(raw: bytes, start: int, end: int) -> XfrmPolicy | None:
    if end - start < NLMSG_LEN + _USERPOLICY_INFO_LEN:
        return None
    (
        daddr,
        saddr,
        sel_family,
        prefixlen_d,
        prefixlen_s,
        proto,
        priority,
        index,
        direction,
        action,
    ) = _USERPOLICY_INFO.unpack_from(raw, start + NLMSG_LEN)
    family = sel_family or socket.AF_INET
    return XfrmPolicy(
        direction=DIRECTIONS.get(direction, str(direction)),
        priority=priority,
        index=index,
        src=f"{address(saddr, family)}/{prefixlen_s}",
        dst=f"{address(daddr, family)}/{prefixlen_d}",
        proto=proto,
        action="block" if action == 1 else "allow",
    )


@gc_paused
def decode_policies(msgs: Iterable[Any]) -> list[XfrmPolicy]:
    """Policies of an XFRM_MSG_GETPOLICY dump answer (`RawMessage`s, or pyroute2
    messages from `MarshalXfrm`)."""
    policies = []
    for msg in check_errors(msgs):
        if msg["header"]["type"] != XFRM_MSG_NEWPOLICY:
            continue
        for buf, start, end in each_message(msg):
            policy = _policy_of_bytes(buf, start, end)
            if policy is not None:
                policies.append(policy)
    return policies


async def _dump(sock: AsyncXfrmDumpSocket, msg_type: int) -> list[Any]:
    return await collect_dump(
        await sock.nlm_request(
            xfrm_request(), msg_type=msg_type, msg_flags=NLM_F_REQUEST | NLM_F_DUMP
        )
    )


async def dump_xfrm(timeout: float, netns: str | None = None) -> XfrmSnapshot:
    """SAs and policies, one dump each on one socket; `TimeoutError` after `timeout`."""
    sock = AsyncXfrmDumpSocket(**socket_args(netns))
    try:
        async with asyncio.timeout(timeout):
            try:
                await sock.setup_endpoint()
            except OSError as err:
                raise netns_error(netns, err) from None
            states = decode_states(await _dump(sock, XFRM_MSG_GETSA))
            policies = decode_policies(await _dump(sock, XFRM_MSG_GETPOLICY))
    finally:
        sock.close()
    return XfrmSnapshot(states=tuple(states), policies=tuple(policies))
