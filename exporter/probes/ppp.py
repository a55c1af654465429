"""PPP frames and control packets (RFC 1661 §5-6, RFC 1332 for IPCP). No I/O."""

from __future__ import annotations

import struct
from dataclasses import dataclass

LCP, PAP, CHAP, IPCP, IP = 0xC021, 0xC023, 0xC223, 0x8021, 0x0021
ADDRESS_CONTROL = b"\xff\x03"

# Control packet codes (LCP; IPCP uses 1-7).
CONF_REQ, CONF_ACK, CONF_NAK, CONF_REJ = 1, 2, 3, 4
TERM_REQ, TERM_ACK, CODE_REJ, PROTO_REJ = 5, 6, 7, 8
ECHO_REQ, ECHO_REP, DISCARD_REQ = 9, 10, 11

# LCP options.
MRU, ACCM, AUTH_PROTOCOL, MAGIC_NUMBER, PFC, ACFC = 1, 2, 3, 5, 7, 8
# IPCP options.
IP_ADDRESS, PRIMARY_DNS, SECONDARY_DNS = 3, 129, 131
# CHAP algorithms (RFC 1994; RFC 2759).
CHAP_MD5, CHAP_MSCHAPV2 = 0x05, 0x81
# CHAP and PAP codes.
CHAP_CHALLENGE, CHAP_RESPONSE, CHAP_SUCCESS, CHAP_FAILURE = 1, 2, 3, 4
PAP_REQUEST, PAP_ACK, PAP_NAK = 1, 2, 3


class PppDecodeError(ValueError):
    """Bytes that are not a PPP frame or control packet."""


def encode_frame(protocol: int, payload: bytes) -> bytes:
    """Address/control and a two-byte protocol: what Linux' PPPoL2TP sends too."""
    return ADDRESS_CONTROL + struct.pack("!H", protocol) + payload


def decode_frame(frame: bytes) -> tuple[int, bytes]:
    """(protocol, payload); accepts compressed address/control and protocol fields."""
    if frame.startswith(ADDRESS_CONTROL):
        frame = frame[2:]
    if not frame:
        raise PppDecodeError("empty PPP frame")
    if frame[0] & 1:  # protocol-field compression: one byte (RFC 1661 §6.5)
        return frame[0], frame[1:]
    if len(frame) < 2:
        raise PppDecodeError("truncated protocol field")
    return struct.unpack_from("!H", frame)[0], frame[2:]


@dataclass(frozen=True)
class Packet:
    """An LCP/IPCP/CHAP/PAP packet: code, identifier, data."""

    code: int
    identifier: int
    data: bytes = b""

    def encode(self) -> bytes:
        return struct.pack("!BBH", self.code, self.identifier, 4 + len(self.data)) + self.data

    @classmethod
    def decode(cls, payload: bytes) -> Packet:
        if len(payload) < 4:
            raise PppDecodeError("control packet shorter than 4 bytes")
        code, identifier, length = struct.unpack_from("!BBH", payload)
        if length < 4 or length > len(payload):
            raise PppDecodeError("control packet length out of range")
        return cls(code, identifier, payload[4:length])


Option = tuple[int, bytes]


def decode_options(data: bytes) -> list[Option]:
    options: list[Option] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise PppDecodeError("truncated option")
        kind, length = data[pos], data[pos + 1]
        if length < 2 or pos + length > len(data):
            raise PppDecodeError(f"option {kind} length {length} out of range")
        options.append((kind, data[pos + 2 : pos + length]))
        pos += length
    return options


def encode_options(options: list[Option]) -> bytes:
    return b"".join(bytes([kind, 2 + len(value)]) + value for kind, value in options)
