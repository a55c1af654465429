"""L2TPv2 message codec (RFC 2661 §3-4): control messages with AVPs, and data messages.

No I/O. Hidden AVPs (which need a tunnel secret) are kept as raw bytes, never decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

VERSION = 2
FLAG_TYPE = 0x8000  # T: control message
FLAG_LENGTH = 0x4000  # L
FLAG_SEQUENCE = 0x0800  # S
FLAG_OFFSET = 0x0200  # O
FLAG_PRIORITY = 0x0100  # P
CONTROL_FLAGS = FLAG_TYPE | FLAG_LENGTH | FLAG_SEQUENCE | VERSION

AVP_MANDATORY = 0x8000
AVP_HIDDEN = 0x4000
AVP_LENGTH_MASK = 0x03FF

# Message types (§3.2).
SCCRQ, SCCRP, SCCCN, STOPCCN, HELLO = 1, 2, 3, 4, 6
ICRQ, ICRP, ICCN, CDN, WEN, SLI = 10, 11, 12, 14, 15, 16
MESSAGE_NAMES = {
    SCCRQ: "SCCRQ",
    SCCRP: "SCCRP",
    SCCCN: "SCCCN",
    STOPCCN: "StopCCN",
    HELLO: "HELLO",
    7: "OCRQ",
    8: "OCRP",
    9: "OCCN",
    ICRQ: "ICRQ",
    ICRP: "ICRP",
    ICCN: "ICCN",
    CDN: "CDN",
    WEN: "WEN",
    SLI: "SLI",
}

# AVP types (§4.4).
MESSAGE_TYPE = 0
RESULT_CODE = 1
PROTOCOL_VERSION = 2
FRAMING_CAPABILITIES = 3
BEARER_CAPABILITIES = 4
FIRMWARE_REVISION = 6
HOST_NAME = 7
VENDOR_NAME = 8
ASSIGNED_TUNNEL_ID = 9
RECEIVE_WINDOW_SIZE = 10
CHALLENGE = 11
ASSIGNED_SESSION_ID = 14
CALL_SERIAL_NUMBER = 15
BEARER_TYPE = 18
FRAMING_TYPE = 19
TX_CONNECT_SPEED = 24

FRAMING_SYNC = 1
FRAMING_ASYNC = 2

#: StopCCN result codes (§4.4.2) — CDN uses its own table, see `cdn_result_name`.
STOPCCN_RESULTS = {
    1: "general request to clear control connection",
    2: "general error",
    3: "control channel already exists",
    4: "requester is not authorized",
    5: "protocol version not supported",
    6: "requester is being shut down",
    7: "finite state machine error",
}
CDN_RESULTS = {
    1: "lost carrier",
    2: "general error",
    3: "administrative reason",
    4: "no facilities available (temporary)",
    5: "no facilities available (permanent)",
    6: "invalid destination",
    7: "no carrier detected",
    8: "busy signal",
    9: "no dial tone",
    10: "no answer within the time allotted",
    11: "invalid call",
}


class L2tpDecodeError(ValueError):
    """Bytes that are not an L2TPv2 message this prober can read."""


@dataclass(frozen=True)
class Avp:
    kind: int
    value: bytes
    mandatory: bool = True
    vendor: int = 0
    hidden: bool = False

    def encode(self) -> bytes:
        flags = (AVP_MANDATORY if self.mandatory else 0) | (AVP_HIDDEN if self.hidden else 0)
        return struct.pack("!HHH", flags | (6 + len(self.value)), self.vendor, self.kind) + (
            self.value
        )


def u16(kind: int, value: int) -> Avp:
    return Avp(kind, struct.pack("!H", value))


def u32(kind: int, value: int) -> Avp:
    return Avp(kind, struct.pack("!I", value))


def text(kind: int, value: str, mandatory: bool = True) -> Avp:
    return Avp(kind, value.encode(), mandatory)


@dataclass(frozen=True)
class ResultCode:
    result: int
    error: int | None = None
    message: str = ""


@dataclass(frozen=True)
class ControlMessage:
    tunnel_id: int
    session_id: int
    ns: int
    nr: int
    avps: tuple[Avp, ...] = ()

    @property
    def zlb(self) -> bool:
        """A zero-length body: only an acknowledgement."""
        return not self.avps

    @property
    def message_type(self) -> int | None:
        avp = self.avp(MESSAGE_TYPE)
        return struct.unpack("!H", avp.value[:2])[0] if avp and len(avp.value) >= 2 else None

    @property
    def name(self) -> str:
        kind = self.message_type
        return "ZLB" if kind is None else MESSAGE_NAMES.get(kind, f"message {kind}")

    def avp(self, kind: int) -> Avp | None:
        for a in self.avps:
            if a.kind == kind and a.vendor == 0 and not a.hidden:
                return a
        return None

    def u16(self, kind: int) -> int | None:
        a = self.avp(kind)
        return struct.unpack("!H", a.value[:2])[0] if a and len(a.value) >= 2 else None

    def text(self, kind: int) -> str:
        a = self.avp(kind)
        return a.value.decode("utf-8", errors="replace") if a else ""

    def result_code(self) -> ResultCode | None:
        a = self.avp(RESULT_CODE)
        if a is None or len(a.value) < 2:
            return None
        (result,) = struct.unpack_from("!H", a.value)
        error = struct.unpack_from("!H", a.value, 2)[0] if len(a.value) >= 4 else None
        message = a.value[4:].decode("utf-8", errors="replace")
        return ResultCode(result, error, message)


@dataclass(frozen=True)
class DataMessage:
    tunnel_id: int
    session_id: int
    payload: bytes


@dataclass
class OutgoingControl:
    """A control message before sequence numbers are stamped on it (at each (re)send)."""

    tunnel_id: int
    session_id: int
    avps: list[Avp] = field(default_factory=list)

    def encode(self, ns: int, nr: int) -> bytes:
        body = b"".join(a.encode() for a in self.avps)
        length = 12 + len(body)
        header = struct.pack(
            "!HHHHHH", CONTROL_FLAGS, length, self.tunnel_id, self.session_id, ns, nr
        )
        return header + body


def control(kind: int, tunnel_id: int, session_id: int, *avps: Avp) -> OutgoingControl:
    return OutgoingControl(tunnel_id, session_id, [u16(MESSAGE_TYPE, kind), *avps])


def zlb(tunnel_id: int, ns: int, nr: int) -> bytes:
    return OutgoingControl(tunnel_id, 0).encode(ns, nr)


def encode_data(tunnel_id: int, session_id: int, payload: bytes) -> bytes:
    """A data message without length, sequence or offset fields (what Linux sends)."""
    return struct.pack("!HHH", VERSION, tunnel_id, session_id) + payload


def _avps(body: bytes) -> tuple[Avp, ...]:
    out: list[Avp] = []
    pos = 0
    while pos < len(body):
        if pos + 6 > len(body):
            raise L2tpDecodeError("truncated AVP header")
        flags, vendor, kind = struct.unpack_from("!HHH", body, pos)
        length = flags & AVP_LENGTH_MASK
        if length < 6 or pos + length > len(body):
            raise L2tpDecodeError(f"AVP {kind} length {length} out of range")
        out.append(
            Avp(
                kind,
                body[pos + 6 : pos + length],
                bool(flags & AVP_MANDATORY),
                vendor,
                bool(flags & AVP_HIDDEN),
            )
        )
        pos += length
    return tuple(out)


def decode(packet: bytes) -> ControlMessage | DataMessage:
    """One L2TPv2 message."""
    if len(packet) < 6:
        raise L2tpDecodeError(f"{len(packet)} bytes is shorter than an L2TP header")
    (flags,) = struct.unpack_from("!H", packet)
    if flags & 0x000F != VERSION:
        raise L2tpDecodeError(f"L2TP version {flags & 0x000F}, expected 2")
    pos = 2
    length = len(packet)
    if flags & FLAG_LENGTH:
        (length,) = struct.unpack_from("!H", packet, pos)
        pos += 2
        if length > len(packet) or length < 6:
            raise L2tpDecodeError("length field out of range")
    if pos + 4 > length:
        raise L2tpDecodeError("truncated header")
    tunnel_id, session_id = struct.unpack_from("!HH", packet, pos)
    pos += 4
    ns = nr = 0
    if flags & FLAG_SEQUENCE:
        if pos + 4 > length:
            raise L2tpDecodeError("truncated sequence numbers")
        ns, nr = struct.unpack_from("!HH", packet, pos)
        pos += 4
    if flags & FLAG_TYPE:
        if flags & (FLAG_LENGTH | FLAG_SEQUENCE) != FLAG_LENGTH | FLAG_SEQUENCE:
            raise L2tpDecodeError("control message without length or sequence numbers")
        return ControlMessage(tunnel_id, session_id, ns, nr, _avps(packet[pos:length]))
    if flags & FLAG_OFFSET:
        if pos + 2 > length:
            raise L2tpDecodeError("truncated offset size")
        (offset,) = struct.unpack_from("!H", packet, pos)
        pos += 2 + offset
    return DataMessage(tunnel_id, session_id, packet[pos:length])


def seq_after(a: int, b: int) -> bool:
    """a comes after b in 16-bit sequence space (RFC 2661 §5.8)."""
    return a != b and (a - b) & 0xFFFF < 0x8000
