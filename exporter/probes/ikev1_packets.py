"""IKEv1 Main Mode first message encoder and response decoder (RFC 2408, RFC 2409). No I/O.

The first message carries only an SA payload (and vendor ids); the responder answers with
the one transform it chose, or with an Informational exchange carrying a notify.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from exporter.probes.ike_answer import AcceptedProposal, IkeDecodeError, IkeResponse, Notify
from exporter.probes.proposals import CIPHERS, GROUP_NAMES, HASHES, IkeProposal

HEADER = struct.Struct("!8s8sBBBBII")  # ICookie RCookie next version exchange flags msgid len
GENERIC = struct.Struct("!BBH")
VERSION = 0x10
IDENTITY_PROTECTION = 2  # Main Mode
INFORMATIONAL = 5
FLAG_ENCRYPTED = 0x01

# Payload types (RFC 2408 §3.1).
SA, PROPOSAL, TRANSFORM, NOTIFY, VENDOR_ID = 1, 2, 3, 11, 13
DOI_IPSEC = 1
SIT_IDENTITY_ONLY = 1
PROTO_ISAKMP = 1
KEY_IKE = 1

# Phase 1 attribute types and values (RFC 2409 Appendix A).
ATTR_ENCRYPTION, ATTR_HASH, ATTR_AUTH, ATTR_GROUP = 1, 2, 3, 4
ATTR_LIFE_TYPE, ATTR_LIFE_DURATION, ATTR_KEY_LENGTH = 11, 12, 14
LIFE_SECONDS = 1
AUTH_METHODS = {"psk": 1, "rsa": 3, "xauth_psk": 65001, "xauth_rsa": 65005}
_AUTH_NAMES = {v: k for k, v in AUTH_METHODS.items()}
_ENCR_NAMES = {(c.ikev1_id, c.key_bits): n for n, c in CIPHERS.items() if c.ikev1_id}
_HASH_NAMES = {h.ikev1_hash: n for n, h in HASHES.items()}


def _vid(text: bytes) -> bytes:
    return hashlib.md5(text).digest()


#: NAT-T (RFC 3947 and the drafts clients still send), DPD (RFC 3706), XAuth.
VENDOR_IDS = (
    _vid(b"RFC 3947"),
    _vid(b"draft-ietf-ipsec-nat-t-ike-02\n"),
    bytes.fromhex("afcad71368a1f1c96b8696fc77570100"),
    bytes.fromhex("09002689dfd6b712"),
)


@dataclass(frozen=True)
class MainModeRequest:
    cookie: bytes
    proposals: tuple[IkeProposal, ...]
    auth: str = "psk"
    lifetime: int = 28800


def _attribute(kind: int, value: int) -> bytes:
    return struct.pack("!HH", 0x8000 | kind, value)  # TV format: all our values fit 16 bits


def _transforms(proposals: tuple[IkeProposal, ...], auth: int, lifetime: int) -> list[bytes]:
    """IKEv1 has one algorithm of each kind per transform: one transform per combination."""
    out: list[bytes] = []
    for p in proposals:
        for c in p.ciphers:
            if c.ikev1_id is None:
                continue  # GCM has no IKEv1 Phase 1 code point
            for h in p.hashes:
                for g in p.groups:
                    attrs = _attribute(ATTR_ENCRYPTION, c.ikev1_id)
                    if c.key_bits:
                        attrs += _attribute(ATTR_KEY_LENGTH, c.key_bits)
                    attrs += (
                        _attribute(ATTR_HASH, h.ikev1_hash)
                        + _attribute(ATTR_AUTH, auth)
                        + _attribute(ATTR_GROUP, g)
                        + _attribute(ATTR_LIFE_TYPE, LIFE_SECONDS)
                        + _attribute(ATTR_LIFE_DURATION, lifetime)
                    )
                    out.append(attrs)
    return out


def encode_main_mode(req: MainModeRequest) -> bytes:
    """Main Mode message 1: HDR, SA (one proposal, one transform per combination), VIDs."""
    attrs = _transforms(req.proposals, AUTH_METHODS[req.auth], req.lifetime)
    if not attrs:
        raise ValueError("no proposal has an IKEv1 cipher")
    if len(attrs) > 255:
        raise ValueError(f"{len(attrs)} transforms; IKEv1 allows 255")
    transforms = b""
    for i, a in enumerate(attrs):
        nxt = TRANSFORM if i + 1 < len(attrs) else 0
        body = struct.pack("!BBH", i + 1, KEY_IKE, 0) + a
        transforms += GENERIC.pack(nxt, 0, GENERIC.size + len(body)) + body
    proposal_body = struct.pack("!BBBB", 1, PROTO_ISAKMP, 0, len(attrs)) + transforms
    proposal = GENERIC.pack(0, 0, GENERIC.size + len(proposal_body)) + proposal_body
    sa_body = struct.pack("!II", DOI_IPSEC, SIT_IDENTITY_ONLY) + proposal
    payloads = GENERIC.pack(VENDOR_ID, 0, GENERIC.size + len(sa_body)) + sa_body
    for i, vid in enumerate(VENDOR_IDS):
        nxt = VENDOR_ID if i + 1 < len(VENDOR_IDS) else 0
        payloads += GENERIC.pack(nxt, 0, GENERIC.size + len(vid)) + vid
    length = HEADER.size + len(payloads)
    header = HEADER.pack(req.cookie, bytes(8), SA, VERSION, IDENTITY_PROTECTION, 0, 0, length)
    return header + payloads


def _accepted(sa: bytes) -> AcceptedProposal:
    # SA: DOI(4) situation(4), then one proposal payload with one transform.
    pos = 8
    if len(sa) < pos + 8:
        raise IkeDecodeError("SA payload too short")
    _n, _r, _plen = GENERIC.unpack_from(sa, pos)
    _num, _proto, spi_size, _count = struct.unpack_from("!BBBB", sa, pos + 4)
    tpos = pos + 8 + spi_size
    if tpos + 8 > len(sa):
        raise IkeDecodeError("proposal without a transform")
    _tn, _tr, tlen = GENERIC.unpack_from(sa, tpos)
    attrs = sa[tpos + 8 : tpos + tlen]
    values: dict[int, int] = {}
    apos = 0
    while apos + 4 <= len(attrs):
        kind, value = struct.unpack_from("!HH", attrs, apos)
        if kind & 0x8000:
            values[kind & 0x7FFF] = value
            apos += 4
        else:  # TLV: a long value (e.g. a life duration above 65535)
            vlen = value
            data = attrs[apos + 4 : apos + 4 + vlen]
            values[kind] = int.from_bytes(data, "big")
            apos += 4 + vlen
    encr = values.get(ATTR_ENCRYPTION, 0)
    bits = values.get(ATTR_KEY_LENGTH)
    hash_name = _HASH_NAMES.get(values.get(ATTR_HASH, 0), f"hash{values.get(ATTR_HASH)}")
    auth = values.get(ATTR_AUTH, 0)
    group = values.get(ATTR_GROUP, 0)
    return AcceptedProposal(
        encryption=_ENCR_NAMES.get((encr, bits), f"encr{encr}"),
        integrity=hash_name,
        prf="prf" + hash_name,
        dh_group=GROUP_NAMES.get(group, f"group{group}"),
        auth_method=_AUTH_NAMES.get(auth, f"auth{auth}"),
    )


def decode_response(packet: bytes) -> IkeResponse:
    """Decode a Main Mode message 2 or an Informational notify."""
    if len(packet) < HEADER.size:
        raise IkeDecodeError(f"{len(packet)} bytes is shorter than an ISAKMP header")
    cookie_i, cookie_r, nxt, version, exchange, flags, _msgid, length = HEADER.unpack_from(packet)
    if version >> 4 != 1:
        raise IkeDecodeError(f"ISAKMP major version {version >> 4}, expected 1")
    if flags & FLAG_ENCRYPTED:
        raise IkeDecodeError("encrypted message: not an answer to a first message")
    if length > len(packet):
        raise IkeDecodeError("truncated message")
    pos = HEADER.size
    accepted = None
    notifies: list[Notify] = []
    vendor_ids: list[bytes] = []
    while nxt:
        if pos + GENERIC.size > length:
            raise IkeDecodeError("payload header runs past the message")
        following, _r, plen = GENERIC.unpack_from(packet, pos)
        if plen < GENERIC.size or pos + plen > length:
            raise IkeDecodeError("payload length out of range")
        body = packet[pos + GENERIC.size : pos + plen]
        if nxt == SA:
            accepted = _accepted(body)
        elif nxt == NOTIFY and len(body) >= 8:
            _doi, _proto, spi_size, kind = struct.unpack_from("!IBBH", body)
            notifies.append(Notify(kind, body[8 + spi_size :]))
        elif nxt == VENDOR_ID:
            vendor_ids.append(body)
        nxt, pos = following, pos + plen
    return IkeResponse(
        version=1,
        exchange=exchange,
        initiator_spi=cookie_i,
        responder_spi=cookie_r,
        accepted=accepted,
        notifies=tuple(notifies),
        vendor_ids=tuple(vendor_ids),
    )
