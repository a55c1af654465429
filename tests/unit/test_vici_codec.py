"""The VICI decoder on real charon bytes (tests/fixtures/vici-packets) and on broken ones."""

import asyncio
import struct
from pathlib import Path

import pytest
from vici.protocol import Message, Packet

from exporter.vici import ViciCommandError, ViciConnectionError, ViciProtocolError
from exporter.vici.codec import MAX_DEPTH, MAX_PACKET, decode_packet, encode_request, frame
from exporter.vici.connection import ViciConnection

PACKETS = Path(__file__).parent.parent / "fixtures" / "vici-packets"


def packet(name: str) -> bytes:
    return (PACKETS / name).read_bytes()


def test_version_response_from_real_charon() -> None:
    decoded = decode_packet(packet("version-response.bin"))
    assert decoded.kind == Packet.CMD_RESPONSE
    assert decoded.message["daemon"] == "charon"
    assert decoded.message["version"] == "5.9.8"


def test_list_conn_event_from_real_charon() -> None:
    decoded = decode_packet(packet("list-conn-event-0.bin"))
    assert decoded.kind == Packet.EVENT
    assert decoded.name == "list-conn"
    conn = decoded.message["rw"]
    assert conn["version"] == "IKEv1"
    assert conn["children"]["net"]["local-ts"] == ["10.99.200.1/32"]
    assert conn["remote-2"]["class"] == "XAuth"


def test_unknown_command_packet() -> None:
    assert decode_packet(packet("unknown-command.bin")).kind == Packet.CMD_UNKNOWN


def test_request_encoding_round_trips_through_the_decoder() -> None:
    encoded = encode_request("list-sas", {"noblock": "yes", "ike": "rw"})
    (length,) = struct.unpack("!I", encoded[:4])
    assert length == len(encoded) - 4
    body = encoded[4:]
    assert body[0] == Packet.CMD_REQUEST
    assert body[2 : 2 + body[1]] == b"list-sas"


@pytest.mark.parametrize("cut", [3, 10, 40, 91])
def test_truncated_real_packet_raises_protocol_error(cut: int) -> None:
    data = packet("version-response.bin")[:cut]
    with pytest.raises(ViciProtocolError):
        decode_packet(data)


def test_empty_packet() -> None:
    with pytest.raises(ViciProtocolError):
        decode_packet(b"")


def test_unbalanced_section_end() -> None:
    with pytest.raises(ViciProtocolError):
        decode_packet(bytes([Packet.CMD_RESPONSE, 2]))


def test_binary_values_survive_decoding() -> None:
    # Certificates arrive as DER in a value; the codec must not lose bytes.
    der = bytes(range(256))
    body = bytes([Packet.CMD_RESPONSE]) + Message.serialize({"data": der})
    value = decode_packet(body).message["data"]
    assert value.encode("utf-8", errors="surrogateescape") == der


def connection_over(data: bytes) -> ViciConnection:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return ViciConnection(reader, writer=None)  # type: ignore[arg-type]


async def test_oversized_length_is_refused_before_reading() -> None:
    conn = connection_over(struct.pack("!I", MAX_PACKET + 1))
    with pytest.raises(ViciProtocolError, match="exceeds"):
        await conn.receive()


async def test_connection_closed_mid_packet() -> None:
    conn = connection_over(frame(packet("version-response.bin"))[:20])
    with pytest.raises(ViciConnectionError):
        await conn.receive()


async def test_streamed_sequence_from_real_packets() -> None:
    """register-confirm, two list-conn events, the response, unregister-confirm."""
    stream = b"".join(
        frame(packet(name))
        for name in (
            "register-confirm.bin",
            "list-conn-event-0.bin",
            "list-conn-event-1.bin",
            "list-conns-response.bin",
            "register-confirm.bin",
        )
    )
    conn = connection_over(stream)
    conn._send = _discard  # type: ignore[method-assign]
    events = await conn.streamed_request("list-conns", "list-conn")
    assert [next(iter(e)) for e in events] == ["rw", "s2s"]


async def test_unknown_command_raises_command_error() -> None:
    conn = connection_over(frame(packet("unknown-command.bin")))
    conn._send = _discard  # type: ignore[method-assign]
    with pytest.raises(ViciCommandError, match="no-such-command"):
        await conn.request("no-such-command")


async def _discard(data: bytes) -> None:
    return None


# ---- bounds of a hostile peer (issue 14, items 3 and 4) -------------------------------------


def response(body: bytes) -> bytes:
    return bytes([Packet.CMD_RESPONSE]) + body


def nested(depth: int) -> bytes:
    """`depth` sections, each inside the one before: `a { a { ... } }`."""
    return bytes([Message.SECTION_START, 1, 0x61]) * depth + bytes([Message.SECTION_END]) * depth


async def test_frame_limit_is_charons_own() -> None:
    # charon never sends more than VICI_MESSAGE_SIZE_MAX (512 KiB) in one segment.
    assert MAX_PACKET == 512 * 1024
    conn = connection_over(struct.pack("!I", 512 * 1024 + 1))
    with pytest.raises(ViciProtocolError, match="exceeds"):
        await conn.receive()


@pytest.mark.parametrize("element", [0, 7, 8, 255])
def test_unknown_element_type_is_refused(element: int) -> None:
    with pytest.raises(ViciProtocolError, match="element type"):
        decode_packet(response(bytes([element])))


@pytest.mark.parametrize("element", [Message.LIST_ITEM, Message.LIST_END])
def test_list_element_outside_a_list_is_refused(element: int) -> None:
    with pytest.raises(ViciProtocolError):
        decode_packet(response(bytes([element, 0, 0])))


@pytest.mark.parametrize("kind", [8, 99, 255])
def test_unknown_packet_type_is_refused(kind: int) -> None:
    with pytest.raises(ViciProtocolError, match="packet type"):
        decode_packet(bytes([kind]))


def test_deep_nesting_is_a_protocol_error_not_a_crash() -> None:
    # 5,000 levels made the old decoder raise RecursionError out of the event stream.
    with pytest.raises(ViciProtocolError, match="nest"):
        decode_packet(response(nested(5000)))


def test_nesting_up_to_the_limit_decodes() -> None:
    message = decode_packet(response(nested(MAX_DEPTH))).message
    for _ in range(MAX_DEPTH):
        message = message["a"]
    assert message == {}
    with pytest.raises(ViciProtocolError, match="nest"):
        decode_packet(response(nested(MAX_DEPTH + 1)))


def test_unclosed_section_and_list_are_refused() -> None:
    with pytest.raises(ViciProtocolError):
        decode_packet(response(bytes([Message.SECTION_START, 1, 0x61])))
    with pytest.raises(ViciProtocolError):
        decode_packet(response(bytes([Message.LIST_START, 1, 0x61, Message.LIST_ITEM, 0, 0])))


def test_every_element_kind_decodes() -> None:
    body = Message.serialize({"k": b"v", "s": {"t": {"x": b""}, "l": [b"1", b"\xff"]}, "empty": []})
    assert decode_packet(response(body)).message == {
        "k": "v",
        "s": {"t": {"x": ""}, "l": ["1", "\udcff"]},
        "empty": [],
    }
