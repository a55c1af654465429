"""Just enough DER to read a certificate's serial, subject and validity.

charon's `list-certs` hands out the raw certificate only; a full X.509 library would be a
large dependency for three fields.
"""

from __future__ import annotations

import calendar
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
    if end > len(data):
        raise CertificateError("DER element runs past the end")
    return tag, data[pos:end], end


def _children(content: bytes) -> list[tuple[int, bytes]]:
    items = []
    pos = 0
    while pos < len(content):
        tag, value, pos = _read(content, pos)
        items.append((tag, value))
    return items


def _oid(value: bytes) -> str:
    if not value:
        raise CertificateError("empty OID")
    parts = [value[0] // 40, value[0] % 40]
    number = 0
    for byte in value[1:]:
        number = (number << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(number)
            number = 0
    return ".".join(str(p) for p in parts)


def _time(tag: int, value: bytes) -> float:
    text = value.decode("ascii", errors="replace").rstrip("Z")
    try:
        if tag == 0x17:  # UTCTime: YYMMDDHHMMSS
            year = int(text[:2])
            year += 2000 if year < 50 else 1900
            rest = text[2:]
        elif tag == 0x18:  # GeneralizedTime: YYYYMMDDHHMMSS
            year = int(text[:4])
            rest = text[4:]
        else:
            raise CertificateError(f"unexpected time tag {tag:#x}")
        month, day, hour, minute = (int(rest[i : i + 2]) for i in range(0, 8, 2))
        second = int(rest[8:10]) if len(rest) >= 10 else 0
    except ValueError as err:
        raise CertificateError(f"bad time {text!r}") from err
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def _name(value: bytes) -> str:
    parts = []
    for _, rdn in _children(value):
        for _, attribute in _children(rdn):
            fields = _children(attribute)
            if len(fields) != 2:
                raise CertificateError("malformed name attribute")
            oid = _oid(fields[0][1])
            text = fields[1][1].decode("utf-8", errors="replace")
            parts.append(f"{_OID_NAMES.get(oid, oid)}={text}")
    return ", ".join(parts)


def read_certificate(der: bytes) -> CertificateFacts:
    tag, cert, _ = _read(der, 0)
    if tag != 0x30:
        raise CertificateError("not a DER SEQUENCE")
    tbs_tag, tbs, _ = _read(cert, 0)
    if tbs_tag != 0x30:
        raise CertificateError("no TBSCertificate")
    fields = _children(tbs)
    if fields and fields[0][0] == 0xA0:  # explicit version
        fields = fields[1:]
    if len(fields) < 5:
        raise CertificateError("TBSCertificate too short")
    raw_serial = fields[0][1]
    if len(raw_serial) > 1 and raw_serial[0] == 0:  # DER sign byte, not part of the number
        raw_serial = raw_serial[1:]
    # The same colon-separated form `swanctl --list-certs` prints.
    serial = raw_serial.hex(":")
    validity = _children(fields[3][1])
    if len(validity) != 2:
        raise CertificateError("malformed validity")
    return CertificateFacts(
        serial=serial,
        subject=_name(fields[4][1]),
        not_before=_time(*validity[0]),
        not_after=_time(*validity[1]),
    )
