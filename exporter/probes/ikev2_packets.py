"""IKEv2 IKE_SA_INIT request encoder and response decoder (RFC 7296 §3). No I/O."""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import dataclass

from exporter.probes.ike_answer import (
    AcceptedProposal,
    IkeDecodeError,
    IkeResponse,
    Notify,
)
from exporter.probes.proposals import CIPHERS, GROUP_NAMES, HASHES, IkeProposal

HEADER = struct.Struct("!8s8sBBBBII")  # SPIi SPIr next version exchange flags msgid length
GENERIC = struct.Struct("!BBH")  # next payload, critical bit, length
VERSION = 0x20
IKE_SA_INIT = 34
FLAG_INITIATOR = 0x08
FLAG_RESPONSE = 0x20

# Payload types (RFC 7296 §3.2).
SA, KE, NONCE, NOTIFY, VENDOR_ID = 33, 34, 40, 41, 43
# Transform types (§3.3.2).
ENCR, PRF, INTEG, DH = 1, 2, 3, 4
KEY_LENGTH_ATTR = 14
NAT_DETECTION_SOURCE_IP = 16388
NAT_DETECTION_DESTINATION_IP = 16389
NON_ESP_MARKER = b"\0\0\0\0"

_ENCR_NAMES = {(c.ikev2_id, c.key_bits): n for n, c in CIPHERS.items()}
_INTEG_NAMES = {h.ikev2_integ: n for n, h in HASHES.items()}
_PRF_NAMES = {h.ikev2_prf: n for n, h in HASHES.items()}


@dataclass(frozen=True)
class SaInitRequest:
    """What goes into one IKE_SA_INIT request; `ke_group` picks the KE payload's group."""

    spi: bytes
    proposals: tuple[IkeProposal, ...]
    ke_group: int
    ke_data: bytes
    nonce: bytes
    cookie: bytes = b""
    #: (source ip, source port, destination ip, destination port) for NAT detection.
    addresses: tuple[str, int, str, int] | None = None


def _payload(kind_next: int, body: bytes) -> bytes:
    return GENERIC.pack(kind_next, 0, GENERIC.size + len(body)) + body


def _transform(last: bool, kind: int, ident: int, key_bits: int | None = None) -> bytes:
    attrs = struct.pack("!HH", 0x8000 | KEY_LENGTH_ATTR, key_bits) if key_bits else b""
    body = struct.pack("!BBH", kind, 0, ident) + attrs
    return struct.pack("!BBH", 0 if last else 3, 0, 8 + len(attrs)) + body


def _proposal(number: int, last: bool, proposal: IkeProposal, ke_group: int) -> bytes:
    items: list[tuple[int, int, int | None]] = []
    for c in proposal.ciphers:
        items.append((ENCR, c.ikev2_id, c.key_bits))
    for h in proposal.prfs or proposal.hashes:
        items.append((PRF, h.ikev2_prf, None))
    if not proposal.aead:
        for h in proposal.hashes:
            items.append((INTEG, h.ikev2_integ, None))
    # The KE payload's group goes first so that a responder accepting it needs no retry.
    groups = sorted(proposal.groups, key=lambda g: g != ke_group)
    for g in groups:
        items.append((DH, g, None))
    transforms = b"".join(
        _transform(i == len(items) - 1, kind, ident, bits)
        for i, (kind, ident, bits) in enumerate(items)
    )
    body = struct.pack("!BBBB", number, 1, 0, len(items)) + transforms  # protocol 1 = IKE
    return struct.pack("!BBH", 0 if last else 2, 0, 4 + len(body)) + body


def nat_detection_hash(spi_i: bytes, spi_r: bytes, address: str, port: int) -> bytes:
    """SHA-1(SPIi | SPIr | IP | port) (RFC 7296 §2.23)."""
    packed = ipaddress.ip_address(address).packed
    return hashlib.sha1(spi_i + spi_r + packed + struct.pack("!H", port)).digest()


def encode_sa_init(req: SaInitRequest) -> bytes:
    """The IKE_SA_INIT request: [N(COOKIE)], SA, KE, Ni, [N(NAT_DETECTION_*)]."""
    parts: list[tuple[int, bytes]] = []
    if req.cookie:
        parts.append((NOTIFY, struct.pack("!BBH", 0, 0, 16390) + req.cookie))
    proposals = b"".join(
        _proposal(i + 1, i == len(req.proposals) - 1, p, req.ke_group)
        for i, p in enumerate(req.proposals)
    )
    parts.append((SA, proposals))
    parts.append((KE, struct.pack("!HH", req.ke_group, 0) + req.ke_data))
    parts.append((NONCE, req.nonce))
    if req.addresses:
        src, sport, dst, dport = req.addresses
        zero = bytes(8)
        for kind, (ip, port) in (
            (NAT_DETECTION_SOURCE_IP, (src, sport)),
            (NAT_DETECTION_DESTINATION_IP, (dst, dport)),
        ):
            digest = nat_detection_hash(req.spi, zero, ip, port)
            parts.append((NOTIFY, struct.pack("!BBH", 0, 0, kind) + digest))
    body = b""
    for i, (_kind, data) in enumerate(parts):
        following = parts[i + 1][0] if i + 1 < len(parts) else 0
        body += _payload(following, data)
    first = parts[0][0]
    length = HEADER.size + len(body)
    header = HEADER.pack(req.spi, bytes(8), first, VERSION, IKE_SA_INIT, FLAG_INITIATOR, 0, length)
    return header + body


def _accepted(data: bytes) -> AcceptedProposal:
    if len(data) < 8:
        raise IkeDecodeError("SA payload too short")
    _more, _r, _plen, _num, _proto, spi_size, count = struct.unpack_from("!BBHBBBB", data)
    pos = 8 + spi_size
    chosen: dict[int, str] = {}
    for _ in range(count):
        if pos + 8 > len(data):
            raise IkeDecodeError("transform runs past the SA payload")
        _last, _r2, tlen, kind, _r3, ident = struct.unpack_from("!BBHBBH", data, pos)
        if tlen < 8 or pos + tlen > len(data):
            raise IkeDecodeError("transform length below 8 or past the SA payload")
        key_bits = None
        if tlen >= 12:
            attr, value = struct.unpack_from("!HH", data, pos + 8)
            if attr == 0x8000 | KEY_LENGTH_ATTR:
                key_bits = value
        if kind == ENCR:
            chosen[ENCR] = _ENCR_NAMES.get((ident, key_bits), f"encr{ident}")
        elif kind == PRF:
            chosen[PRF] = "prf" + _PRF_NAMES.get(ident, str(ident))
        elif kind == INTEG:
            chosen[INTEG] = _INTEG_NAMES.get(ident, f"integ{ident}")
        elif kind == DH:
            chosen[DH] = GROUP_NAMES.get(ident, f"group{ident}")
        pos += tlen
    return AcceptedProposal(
        encryption=chosen.get(ENCR, ""),
        integrity=chosen.get(INTEG, ""),
        prf=chosen.get(PRF, ""),
        dh_group=chosen.get(DH, ""),
    )


def decode_response(packet: bytes) -> IkeResponse:
    """Decode an IKE_SA_INIT response (without the NAT-T non-ESP marker)."""
    if len(packet) < HEADER.size:
        raise IkeDecodeError(f"{len(packet)} bytes is shorter than an IKE header")
    spi_i, spi_r, nxt, version, exchange, flags, _msgid, length = HEADER.unpack_from(packet)
    if version >> 4 != 2:
        raise IkeDecodeError(f"IKE major version {version >> 4}, expected 2")
    if not flags & FLAG_RESPONSE:
        raise IkeDecodeError("not a response")
    if length > len(packet):
        raise IkeDecodeError("truncated message")
    pos = HEADER.size
    accepted = None
    ke_group = None
    notifies: list[Notify] = []
    vendor_ids: list[bytes] = []
    while nxt:
        if pos + GENERIC.size > length:
            raise IkeDecodeError("payload header runs past the message")
        following, _crit, plen = GENERIC.unpack_from(packet, pos)
        if plen < GENERIC.size or pos + plen > length:
            raise IkeDecodeError("payload length out of range")
        body = packet[pos + GENERIC.size : pos + plen]
        if nxt == SA:
            accepted = _accepted(body)
        elif nxt == KE and len(body) >= 2:
            (ke_group,) = struct.unpack_from("!H", body)
        elif nxt == NOTIFY and len(body) >= 4:
            _proto, spi_size, kind = struct.unpack_from("!BBH", body)
            notifies.append(Notify(kind, body[4 + spi_size :]))
        elif nxt == VENDOR_ID:
            vendor_ids.append(body)
        nxt, pos = following, pos + plen
    return IkeResponse(
        version=2,
        exchange=exchange,
        initiator_spi=spi_i,
        responder_spi=spi_r,
        accepted=accepted,
        notifies=tuple(notifies),
        vendor_ids=tuple(vendor_ids),
        ke_group=ke_group,
    )
