"""The probers' packet decoders on random bytes and on mutated real answers.

A probe target is any host an operator lists, and its answers are untrusted: each decoder
may only return a value or raise its own error type (`IkeDecodeError`, `L2tpDecodeError`,
`PppDecodeError`; the probers catch exactly those).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.probes import ikev1_packets, ikev2_packets, l2tp_packets, ppp
from exporter.probes.base import TargetError, parse_target
from exporter.probes.ike_answer import IkeDecodeError

from .helpers import HOSTILE, no_hang

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probes"


def recorded(prefix: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(FIXTURES.glob(f"{prefix}*.response.bin"))]


IKEV1 = recorded("ikev1")
IKEV2 = [p[4:] if p[:4] == b"\0\0\0\0" else p for p in recorded("ikev2")]  # non-ESP marker
L2TP = recorded("l2tp")


def decodes_or_raises(decode: Callable[[bytes], Any], error: type[Exception], data: bytes) -> None:
    with no_hang(), contextlib.suppress(error):
        decode(data)


def mutate(packet: bytes, data: st.DataObject) -> bytes:
    out = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 6), label="mutations")):
        choice = data.draw(st.integers(0, 2))
        pos = data.draw(st.integers(0, max(len(out) - 1, 0)))
        if choice == 0 and out:
            out[pos] = data.draw(st.integers(0, 255))
        elif choice == 1:
            out = out[:pos]
        else:
            out[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    return bytes(out)


def test_fixtures_are_there() -> None:
    assert IKEV1 and IKEV2 and L2TP
    for packet in IKEV1:
        ikev1_packets.decode_response(packet)
    for packet in IKEV2:
        ikev2_packets.decode_response(packet)
    for packet in L2TP:
        l2tp_packets.decode(packet)


# ---- IKE -----------------------------------------------------------------------------


def _ikev2_sa_with_short_transform() -> bytes:
    """IKE_SA_INIT response whose one transform says length 12 (it has a key-length
    attribute) but the SA payload ends after its first 8 bytes."""
    proposal = struct.pack("!BBHBBBB", 0, 0, 16, 1, 1, 0, 1)
    transform = struct.pack("!BBHBBH", 0, 0, 12, 1, 0, 12)
    sa = proposal + transform
    payload = struct.pack("!BBH", 0, 0, 4 + len(sa)) + sa
    header = ikev2_packets.HEADER.pack(bytes(8), bytes(8), ikev2_packets.SA, 0x20, 34, 0x20, 0,
                                       28 + len(payload))  # fmt: skip
    return header + payload


def test_ikev2_transform_longer_than_its_sa_payload() -> None:
    with pytest.raises(IkeDecodeError):
        ikev2_packets.decode_response(_ikev2_sa_with_short_transform())


@HOSTILE
@given(st.binary(max_size=400))
def test_ikev1_random(data: bytes) -> None:
    decodes_or_raises(ikev1_packets.decode_response, IkeDecodeError, data)


@HOSTILE
@given(st.sampled_from(IKEV1), st.data())
def test_ikev1_mutated_real_answers(packet: bytes, data: st.DataObject) -> None:
    decodes_or_raises(ikev1_packets.decode_response, IkeDecodeError, mutate(packet, data))


@HOSTILE
@given(st.binary(max_size=400))
def test_ikev2_random(data: bytes) -> None:
    decodes_or_raises(ikev2_packets.decode_response, IkeDecodeError, data)


@HOSTILE
@given(st.sampled_from(IKEV2), st.data())
def test_ikev2_mutated_real_answers(packet: bytes, data: st.DataObject) -> None:
    decodes_or_raises(ikev2_packets.decode_response, IkeDecodeError, mutate(packet, data))


# ---- L2TP and PPP ----------------------------------------------------------------------


@HOSTILE
@given(st.binary(max_size=300))
@example(b"\xc8\x02\x00\x0c\x00\x01\x00\x00\x00\x00\x00\x00")  # control, length 12, no AVPs
@example(b"\x02\x02\x00\x00\x00\x00\xff\xff")  # data with an offset past the end
def test_l2tp_random(data: bytes) -> None:
    decodes_or_raises(l2tp_packets.decode, l2tp_packets.L2tpDecodeError, data)


@HOSTILE
@given(st.sampled_from(L2TP), st.data())
def test_l2tp_mutated_real_answers(packet: bytes, data: st.DataObject) -> None:
    mutated = mutate(packet, data)
    with no_hang():
        try:
            message = l2tp_packets.decode(mutated)
        except l2tp_packets.L2tpDecodeError:
            return
        # What the prober reads of an answer must not fail either.
        if isinstance(message, l2tp_packets.ControlMessage):
            _ = (message.name, message.message_type, message.result_code())
            _ = (message.text(l2tp_packets.HOST_NAME), message.u16(l2tp_packets.ASSIGNED_TUNNEL_ID))


@HOSTILE
@given(st.binary(max_size=200))
def test_ppp_random(data: bytes) -> None:
    with no_hang():
        try:
            _protocol, payload = ppp.decode_frame(data)
            packet = ppp.Packet.decode(payload)
            ppp.decode_options(packet.data)
        except ppp.PppDecodeError:
            pass


@HOSTILE
@given(
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=12)), max_size=6),
    st.data(),
)
def test_ppp_mutated_real_shapes(options: list[tuple[int, bytes]], data: st.DataObject) -> None:
    """An LCP Configure-Request as pppd sends it, then mutated."""
    packet = ppp.Packet(ppp.CONF_REQ, 1, ppp.encode_options(options)).encode()
    frame = ppp.encode_frame(ppp.LCP, packet)
    with no_hang():
        try:
            _, payload = ppp.decode_frame(mutate(frame, data))
            ppp.decode_options(ppp.Packet.decode(payload).data)
        except ppp.PppDecodeError:
            pass


# ---- /probe's target parameter ---------------------------------------------------------


@HOSTILE
@given(st.text(max_size=60))
@example("[::1")
@example("[::1]x")
@example("host:99999")
@example("host:٣")  # an Arabic-Indic digit: str.isdigit() is True, int() accepts it
@example("a" * 300)
def test_parse_target(text: str) -> None:
    with no_hang(), contextlib.suppress(TargetError):
        parse_target(text)


def _spellings(value: int) -> list[str]:
    """Ways the system resolver (inet_aton) reads `value` as an IPv4 address."""
    a, b, c, d = value.to_bytes(4, "big")
    return [
        f"{a}.{b}.{c}.{d}",
        str(value),
        hex(value),
        f"{a}.{value & 0xFFFFFF}",
        f"{a}.{b}.{value & 0xFFFF}",
        f"{a:#o}.{b}.{c}.{d}",
        f"{a:#x}.{b:#x}.{c:#x}.{d:#x}",
        f"{a}.{b}.{c}.{d:03}",
        f"[::ffff:{a}.{b}.{c}.{d}]",
        f"{a}.{b}.{c}.{d}.",
    ]


def _resolver_reading(host: str) -> str | None:
    """What glibc's inet_aton makes of `host` (getaddrinfo asks it before DNS)."""
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


@HOSTILE
@given(st.integers(1, 2**32 - 1), st.integers(0, 9), st.text("0123456789abcdefx.:[]", max_size=24))
@example(0x7F000001, 1, "127.1")
@example(0x7F000001, 2, "0x7f.0.0.1")
def test_an_accepted_target_has_one_spelling(value: int, which: int, text: str) -> None:
    """An accepted target's host is either a canonical address or a name the resolver
    looks up: never a second spelling of an address that an allow list would miss."""
    for candidate in (_spellings(value)[which], text):
        try:
            with no_hang():
                target = parse_target(candidate)
        except TargetError:
            continue
        reading = _resolver_reading(target.host)
        assert reading is None or reading == target.host, (candidate, target.host)
        if ":" not in target.host and reading is None:
            assert not target.host.replace(".", "").isdigit(), (candidate, target.host)
