"""The kernel collectors' netlink decoders on mutated real dumps.

tests/fixtures/netlink/ holds every byte the guest kernel answered to each dump. Here
those bytes are mutated (bytes changed, cut, spliced) and go through the same path as in
tests/unit/test_kernel_decode.py: pyroute2's marshal for the socket, then the production
decoder. A kernel does not send such bytes, but a decoder that only survives well-formed
input turns one kernel quirk into a crashing collector. Contract: a list of snapshots,
or `NetlinkError` (what `check_errors` raises for an error message), in bounded time.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st
from pyroute2.netlink import GENL_ID_CTRL, ctrlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nlsocket import Marshal
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from exporter.kernel.l2tp import decode_sessions, decode_tunnels, l2tp_msg, parse_pppol2tp
from exporter.kernel.rtnl import decode_addresses, decode_links, ppp_interfaces
from exporter.kernel.xfrm import MarshalXfrm, decode_policies, decode_states
from exporter.kernel.xfrm_stat import parse_xfrm_stat

from .helpers import HOSTILE, no_hang
from .test_probe_packets_hostile import mutate

NETLINK = Path(__file__).resolve().parents[1] / "fixtures" / "netlink"


def raw(name: str) -> bytes:
    return (NETLINK / f"{name}.bin").read_bytes()


def l2tp_marshal() -> Marshal:
    marshal = Marshal()
    marshal.msg_map[GENL_ID_CTRL] = ctrlmsg
    (answer,) = marshal.parse(raw("genl-ctrl-getfamily-l2tp"))
    family = int(answer.get_attr("CTRL_ATTR_FAMILY_ID"))
    marshal = Marshal()
    marshal.msg_map[family] = l2tp_msg
    return marshal


def _links(msgs: Any) -> Any:
    links = decode_links(msgs)
    return ppp_interfaces(links, [], "ppp*", 0.0)


#: name → (recording, marshal factory, decoder)
DUMPS: dict[str, tuple[str, Callable[[], Any], Callable[[Any], Any]]] = {
    "xfrm-states": ("xfrm-getsa", MarshalXfrm, decode_states),
    "xfrm-policies": ("xfrm-getpolicy", MarshalXfrm, decode_policies),
    "l2tp-tunnels": ("genl-l2tp-tunnel-get", l2tp_marshal, decode_tunnels),
    "l2tp-sessions": ("genl-l2tp-session-get", l2tp_marshal, decode_sessions),
    "rtnl-links": ("rtnl-getlink", MarshalRtnl, _links),
    "rtnl-addresses": ("rtnl-getaddr", MarshalRtnl, decode_addresses),
}


def run(dump: str, data: bytes) -> None:
    _, marshal, decode = DUMPS[dump]
    with no_hang(5.0):
        try:
            msgs = list(marshal().parse(data))
        except (struct.error, NetlinkError):
            # pyroute2's own parsing of a cut buffer; a live socket reads whole datagrams.
            reject()
        with contextlib.suppress(NetlinkError):
            decode(msgs)


def first_message_cut(name: str, length: int) -> bytes:
    """The recording's first message, its nlmsg_len set to `length` and the bytes cut
    there: a well-formed header over an attribute that ends early."""
    data = raw(name)
    return struct.pack("=I", length) + data[4:length]


#: (dump, cut length, where): the smallest such cuts that once crashed a decoder.
CRASHING_CUTS = [
    ("l2tp-sessions", 96, "l2tp._stats: L2TP_ATTR_STATS left as bytes → .get_attr"),
    ("l2tp-tunnels", 64, "l2tp._stats: L2TP_ATTR_STATS left as bytes → .get_attr"),
    ("rtnl-addresses", 60, "rtnl.decode_addresses: IFA_CACHEINFO left as bytes → ['cstamp']"),
    ("rtnl-links", 36, "rtnl.is_ppp: IFLA_IFNAME left as bytes → fnmatchcase(bytes, str)"),
    ("rtnl-links", 284, "rtnl.decode_links: IFLA_STATS64 left as bytes → .get"),
]


@pytest.mark.parametrize(
    ("dump", "length"),
    [
        pytest.param(dump, length, id=f"{dump}-{length}") for dump, length, _ in CRASHING_CUTS
    ],
)  # fmt: skip
def test_attribute_cut_short(dump: str, length: int) -> None:
    _, marshal, decode = DUMPS[dump]
    msgs = list(marshal().parse(first_message_cut(DUMPS[dump][0], length)))
    with contextlib.suppress(NetlinkError):
        decode(msgs)


def test_recordings_decode() -> None:
    for dump, (name, _, decode) in DUMPS.items():
        assert decode(list(DUMPS[dump][1]().parse(raw(name)))) is not None


@HOSTILE
@given(st.sampled_from(sorted(DUMPS)), st.data())
def test_mutated_recorded_dumps(dump: str, data: st.DataObject) -> None:
    run(dump, mutate(raw(DUMPS[dump][0]), data))


@HOSTILE
@given(st.sampled_from(sorted(DUMPS)), st.binary(max_size=600))
def test_random_bytes(dump: str, data: bytes) -> None:
    run(dump, data)


@HOSTILE
@given(st.text(max_size=200))
def test_proc_files(text: str) -> None:
    with no_hang():
        parse_pppol2tp(text)
        parse_xfrm_stat(text)


def test_xfrm_stat_with_a_non_ascii_digit() -> None:
    assert parse_xfrm_stat("XfrmInError ²\nXfrmInNoStates 3\n") == {"XfrmInNoStates": 3}
