"""The VICI decoder and transport fed what a broken or hostile peer could send.

Contract: `decode_packet` returns a `Frame` or raises `ViciProtocolError`;
`ViciConnection.receive` returns a `Frame` or raises a `ViciError`, refuses a packet
above `MAX_PACKET` from its header alone (without buffering it), and never waits past
the caller's deadline.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from vici.protocol import Message, Packet

from exporter.vici.codec import HEADER, MAX_PACKET, Frame, decode_packet
from exporter.vici.connection import ViciConnection
from exporter.vici.errors import ViciConnectionError, ViciError, ViciProtocolError

from .helpers import HOSTILE, HOSTILE_STRUCTURED, no_hang

PACKETS = Path(__file__).resolve().parents[1] / "fixtures" / "vici-packets"
RECORDED = [p.read_bytes() for p in sorted(PACKETS.glob("*.bin"))]

names = st.text(st.characters(codec="utf-8"), max_size=12)
blobs = st.binary(max_size=64)
vici_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(blobs, st.lists(blobs, max_size=4)),
    lambda inner: st.dictionaries(names, inner, max_size=4),
    max_leaves=8,
)
vici_messages = st.dictionaries(names, vici_values, max_size=6)


def decode_or_protocol_error(packet: bytes) -> Frame | None:
    with no_hang():
        try:
            return decode_packet(packet)
        except ViciProtocolError:
            return None


@HOSTILE
@given(st.binary(max_size=512))
@example(b"")
@example(bytes([Packet.CMD_RESPONSE, Message.SECTION_END]))
@example(bytes([Packet.CMD_RESPONSE, Message.LIST_START, 1, 0x61, Message.LIST_ITEM]))
@example(bytes([Packet.EVENT, 200]))
def test_random_bytes(packet: bytes) -> None:
    decode_or_protocol_error(packet)


@HOSTILE_STRUCTURED
@given(vici_messages)
def test_well_formed_messages_round_trip(message: dict[str, Any]) -> None:
    packet = bytes([Packet.CMD_RESPONSE]) + Message.serialize(message)
    frame = decode_or_protocol_error(packet)
    assert frame is not None and frame.kind == Packet.CMD_RESPONSE
    assert set(frame.message) == {k.encode().decode() for k in message}


@HOSTILE_STRUCTURED
@given(vici_messages, st.data())
def test_truncated_messages(message: dict[str, Any], data: st.DataObject) -> None:
    packet = bytes([Packet.EVENT, 4]) + b"list" + Message.serialize(message)
    cut = data.draw(st.integers(0, len(packet) - 1))
    # Cut on an element boundary it may still decode (to a shorter message); otherwise
    # ViciProtocolError — never a plausible-looking message from a half-read element.
    decode_or_protocol_error(packet[:cut])


@HOSTILE
@given(st.sampled_from(RECORDED), st.data())
def test_mutated_recorded_packets(packet: bytes, data: st.DataObject) -> None:
    mutated = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        mutated = mutated[: data.draw(st.integers(0, len(mutated)))]
    decode_or_protocol_error(bytes(mutated))


def test_recorded_packets_decode() -> None:
    assert RECORDED
    for packet in RECORDED:
        assert decode_or_protocol_error(packet) is not None


# ---- the transport: ViciConnection.receive over a StreamReader -----------------------------


class _NullWriter:
    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    async def wait_closed(self) -> None:
        pass


def connection(data: bytes, eof: bool = True) -> ViciConnection:
    reader = asyncio.StreamReader(limit=2**16)
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return ViciConnection(reader, _NullWriter())  # type: ignore[arg-type]


async def receive_all(conn: ViciConnection, deadline: float = 2.0) -> list[Frame]:
    frames = []
    async with asyncio.timeout(deadline):
        while True:
            try:
                frames.append(await conn.receive())
            except ViciConnectionError:
                return frames  # end of stream
            except ViciError:
                return frames


@HOSTILE
@given(st.binary(max_size=2048))
async def test_receive_random_stream(data: bytes) -> None:
    await receive_all(connection(data))


@HOSTILE_STRUCTURED
@given(st.lists(vici_messages, min_size=1, max_size=4), st.data())
async def test_receive_framed_stream_cut_anywhere(
    messages: list[dict[str, Any]], data: st.DataObject
) -> None:
    stream = b"".join(
        HEADER.pack(len(p)) + p
        for p in (bytes([Packet.CMD_RESPONSE]) + Message.serialize(m) for m in messages)
    )
    cut = data.draw(st.integers(0, len(stream)))
    frames = await receive_all(connection(stream[:cut]))
    assert len(frames) <= len(messages)
    if cut == len(stream):
        assert len(frames) == len(messages)


@HOSTILE
@given(st.integers(MAX_PACKET + 1, 2**32 - 1))
async def test_oversized_packet_refused_from_its_header(length: int) -> None:
    # Only the header is there: the refusal must not wait for (or buffer) the body.
    conn = connection(HEADER.pack(length), eof=False)
    async with asyncio.timeout(1):
        with pytest.raises(ViciProtocolError, match="exceeds"):
            await conn.receive()


async def test_packet_at_the_limit_is_read() -> None:
    body = bytes([Packet.CMD_RESPONSE]) + Message.serialize({"k": b"x" * 1000})
    conn = connection(HEADER.pack(len(body)) + body)
    assert (await conn.receive()).message == {"k": "x" * 1000}


async def test_a_peer_that_stops_sending_is_bounded_by_the_callers_deadline() -> None:
    conn = connection(HEADER.pack(100) + b"\x01" * 10, eof=False)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await conn.receive()


async def test_wrong_kind_of_answer_to_a_request() -> None:
    event = bytes([Packet.EVENT, 3]) + b"log" + Message.serialize({"a": b"b"})
    conn = connection(HEADER.pack(len(event)) + event)
    conn._send = _no_send  # type: ignore[method-assign]
    with pytest.raises(ViciProtocolError):
        await conn.request("version")


async def _no_send(_data: bytes) -> None:
    pass


def test_header_format() -> None:
    assert HEADER.size == 4 and HEADER.pack(1) == struct.pack("!I", 1)
