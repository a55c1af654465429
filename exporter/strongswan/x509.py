"""Just enough DER to read a certificate's serial, subject and validity.

charon's `list-certs` hands out the raw certificate only; a full X.509 library would be a
large dependency for three fields.

The bytes are untrusted. Whatever they are, `read_certificate` returns `CertificateFacts` or
raises `CertificateError` (the caller counts those in `strongswan_certificates_unreadable`),
in time and memory linear in the bytes it was given, never in a length they declare. It
descends a fixed number of levels (certificate, TBSCertificate, Name, RDN, attribute): no
recursion, so nesting depth costs nothing.
"""

from __future__ import annotations

import calendar
import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass

_OID_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "1.2.840.113549.1.9.1": "E",
    "0.9.2342.19200300.100.1.25": "DC",
}

#: Bounds on what becomes a label value. Real certificates stay far below them (RFC 5280:
#: serials of at most 20 octets, a few short attributes in a name); past them a certificate
#: is unreadable rather than a label of hundreds of kilobytes on every scrape (a Prometheus
#: with `label_value_length_limit` would refuse the whole scrape) or a name of 60,000
#: attributes costing 40 times its size in memory.
_MAX_SERIAL_OCTETS = 64
_MAX_OID_OCTETS = 64
_MAX_NAME_ATTRIBUTES = 64
_MAX_SUBJECT_CHARS = 4096

#: Octets of one OID arc. 20 holds the longest in use (2.25.<128-bit UUID> needs 19); a longer
#: one is refused, as it would cost quadratic time to build and may not fit in str() at all.
_MAX_ARC_OCTETS = 20

#: String types whose octets are not UTF-8, decoded as openssl does; the rest (UTF8String,
#: PrintableString, IA5String, ...) are ASCII or UTF-8.
_STRING_CODECS = {
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
    0x14: "latin-1",  # TeletexString (T61): openssl reads it as Latin-1, so do CAs using it
}

#: UTCTime (two-digit year) or GeneralizedTime (four), seconds optional, GeneralizedTime's
#: fraction ignored, then Z, an offset, or nothing (read as UTC). ASCII digits only: int()
#: alone would also take " 1", "+1", "1_0" and Arabic-Indic digits.
_TIME = {
    0x17: re.compile(rb"(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)?(Z|[+-]\d{4})?", re.ASCII),
    0x18: re.compile(
        rb"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)?(?:[.,]\d+)?(Z|[+-]\d{4})?", re.ASCII
    ),
}


class CertificateError(ValueError):
    """The bytes are not a DER X.509 certificate this module can read."""


@dataclass(frozen=True)
class CertificateFacts:
    serial: str
    subject: str
    not_before: float
    not_after: float


def _read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """Return (tag, content, position after the element)."""
    if pos + 2 > len(data):
        raise CertificateError("truncated DER element")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise CertificateError("unsupported DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    # Checked before slicing: a declared length is never allocated, only the bytes present.
    if end > len(data):
        raise CertificateError("DER element runs past the end")
    return tag, data[pos:end], end


def _iter_children(content: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos < len(content):
        tag, value, pos = _read(content, pos)
        yield tag, value


def _children(content: bytes) -> list[tuple[int, bytes]]:
    return list(_iter_children(content))


def _first_children(content: bytes, count: int) -> list[tuple[int, bytes]]:
    """The first `count` elements only: what follows is never parsed nor held."""
    items = []
    for item in _iter_children(content):
        items.append(item)
        if len(items) == count:
            break
    return items


def _oid(value: bytes) -> str:
    if not value:
        raise CertificateError("empty OID")
    if len(value) > _MAX_OID_OCTETS:
        raise CertificateError(f"OID longer than {_MAX_OID_OCTETS} octets")
    arcs = []
    number = 0
    octets = 0
    for byte in value:
        number = (number << 7) | (byte & 0x7F)
        octets += 1
        if octets > _MAX_ARC_OCTETS:
            raise CertificateError(f"OID arc longer than {_MAX_ARC_OCTETS} octets")
        if not byte & 0x80:
            arcs.append(number)
            number = octets = 0
    if octets:
        raise CertificateError("OID ends inside an arc")
    # The first subidentifier holds two arcs: 40 * X + Y, X being 0, 1 or 2 (then Y may be >39).
    first = arcs[0]
    head = [first // 40, first % 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


def _time(tag: int, value: bytes) -> float:
    pattern = _TIME.get(tag)
    if pattern is None:
        raise CertificateError(f"unexpected time tag {tag:#x}")
    match = pattern.fullmatch(value)
    if match is None:
        raise CertificateError(f"bad time {value[:32]!r}")
    year, month, day, hour, minute = (int(match[i]) for i in range(1, 6))
    second = int(match[6] or 0)
    if tag == 0x17:
        year += 2000 if year < 50 else 1900  # RFC 5280 4.1.2.5.1
    zone = match[7] or b"Z"
    offset = 0
    if zone != b"Z":
        hours, minutes = int(zone[1:3]), int(zone[3:5])
        if hours > 12 or minutes > 59:  # openssl's bounds: "Bad time value" past them
            raise CertificateError(f"bad time offset {value[:32]!r}")
        offset = (hours * 60 + minutes) * 60 * (-1 if zone.startswith(b"-") else 1)
    try:  # range checks (month 13, day 32, hour 24): calendar.timegm would roll them over
        when = datetime.datetime(year, month, day, hour, minute, second)
    except ValueError as err:
        raise CertificateError(f"bad time {value[:32]!r}: {err}") from err
    return float(calendar.timegm(when.timetuple()) - offset)


def _text(tag: int, value: bytes) -> str:
    # "replace": a label value must be valid UTF-8, whatever the octets (odd-length BMPString,
    # surrogates, code points past U+10FFFF).
    return value.decode(_STRING_CODECS.get(tag, "utf-8"), errors="replace")


def _name(value: bytes) -> str:
    parts: list[str] = []
    chars = 0
    for _, rdn in _iter_children(value):
        for _, attribute in _iter_children(rdn):
            if len(parts) == _MAX_NAME_ATTRIBUTES:
                raise CertificateError(f"name of more than {_MAX_NAME_ATTRIBUTES} attributes")
            fields = _first_children(attribute, 3)
            if len(fields) != 2:
                raise CertificateError("malformed name attribute")
            oid = _oid(fields[0][1])
            parts.append(f"{_OID_NAMES.get(oid, oid)}={_text(*fields[1])}")
            chars += len(parts[-1]) + 2
            if chars > _MAX_SUBJECT_CHARS + 2:
                raise CertificateError(f"name longer than {_MAX_SUBJECT_CHARS} characters")
    return ", ".join(parts)


def read_certificate(der: bytes) -> CertificateFacts:
    tag, cert, _ = _read(der, 0)
    if tag != 0x30:
        raise CertificateError("not a DER SEQUENCE")
    tbs_tag, tbs, _ = _read(cert, 0)
    if tbs_tag != 0x30:
        raise CertificateError("no TBSCertificate")
    # version (optional), serial, signature, issuer, validity, subject: nothing further.
    fields = _first_children(tbs, 6)
    if fields and fields[0][0] == 0xA0:  # explicit version
        fields = fields[1:]
    if len(fields) < 5:
        raise CertificateError("TBSCertificate too short")
    raw_serial = fields[0][1]
    if len(raw_serial) > _MAX_SERIAL_OCTETS:
        raise CertificateError(f"serial longer than {_MAX_SERIAL_OCTETS} octets")
    if len(raw_serial) > 1 and raw_serial[0] == 0:  # DER sign byte, not part of the number
        raw_serial = raw_serial[1:]
    # The same colon-separated form `swanctl --list-certs` prints.
    serial = raw_serial.hex(":")
    validity = _first_children(fields[3][1], 3)
    if len(validity) != 2:
        raise CertificateError("malformed validity")
    return CertificateFacts(
        serial=serial,
        subject=_name(fields[4][1]),
        not_before=_time(*validity[0]),
        not_after=_time(*validity[1]),
    )
