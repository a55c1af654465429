import calendar
import ssl
from pathlib import Path

import pytest

from exporter.strongswan.x509 import CertificateError, read_certificate

CERT = Path(__file__).parent.parent / "fixtures" / "certs" / "vpn.example.test.pem"


def der() -> bytes:
    return ssl.PEM_cert_to_DER_cert(CERT.read_text())


def test_reads_what_openssl_reports() -> None:
    facts = read_certificate(der())
    assert facts.serial == "66:61:dc:bc:5f:cd:1b:cc:e3:21:12:ff:46:2b:10:11:86:ce:1c:a2"
    assert facts.subject == "C=US, O=Example VPN, OU=Ops, CN=vpn.example.test"
    assert facts.not_before == calendar.timegm((2026, 11, 25, 4, 29, 34, 0, 0, 0))
    assert facts.not_after == calendar.timegm((2036, 11, 22, 4, 29, 34, 0, 0, 0))


@pytest.mark.parametrize("cut", [0, 1, 2, 10, 100, 300])
def test_truncated_certificate_is_an_error_not_a_crash(cut: int) -> None:
    with pytest.raises(CertificateError):
        read_certificate(der()[:cut])


def test_not_a_certificate() -> None:
    with pytest.raises(CertificateError):
        read_certificate(b"\x02\x01\x05")


# ---- regressions found by tests/hostile/test_x509_hostile.py (issue 15) -----------------------


def _tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def _certificate(not_after: bytes = b"270101000000Z", attribute: bytes | None = None) -> bytes:
    if attribute is None:
        attribute = _tlv(0x06, b"\x55\x04\x03") + _tlv(0x0C, b"x")
    name = _tlv(0x30, _tlv(0x31, _tlv(0x30, attribute)))
    validity = _tlv(0x30, _tlv(0x17, b"260101000000Z") + _tlv(0x17, not_after))
    tbs = _tlv(0x02, b"\x01") + _tlv(0x30, b"") + name + validity + name + _tlv(0x30, b"")
    return _tlv(0x30, _tlv(0x30, tbs))


@pytest.mark.parametrize(
    "not_after",
    [
        b"271301000000Z",  # month 13: calendar.timegm raised ValueError, not CertificateError
        b"270100000000Z",  # day 0: read as Dec 31
        b"270132000000Z",  # day 32: rolled over into February
        b"270101240000Z",  # hour 24
        b"270101000000+1300",  # offsets past 12 hours or 59 minutes (openssl's bounds)
        b"270101000000-0060",
        b"+1+1+1+1+1+1",  # int() takes signs, blanks, underscores: read as a date
        ("\u0661" * 12 + "Z").encode(),  # Arabic-Indic digits (refused before too)
    ],
)
def test_an_impossible_time_is_an_error(not_after: bytes) -> None:
    with pytest.raises(CertificateError):
        read_certificate(_certificate(not_after))


def test_a_time_offset_is_applied() -> None:
    facts = read_certificate(_certificate(b"270101000000+0200"))  # was read as 00:00 UTC
    assert facts.not_after == calendar.timegm((2026, 12, 31, 22, 0, 0, 0, 0, 0))


def test_an_oid_arc_too_long_to_print_is_an_error() -> None:
    # 17,500 bits: str() of it raised ValueError (more than 4,300 digits), a MiB of them hung.
    oid = b"\x2a" + b"\x88" * 2500 + b"\x01"
    with pytest.raises(CertificateError):
        read_certificate(_certificate(attribute=_tlv(0x06, oid) + _tlv(0x0C, b"x")))


def test_an_oid_first_arc_of_2() -> None:
    # 2.999 encodes its first two arcs as 40 * 2 + 999 = 1079: was printed as 26.39
    attribute = _tlv(0x06, b"\x88\x37") + _tlv(0x0C, b"x")
    assert read_certificate(_certificate(attribute=attribute)).subject == "2.999=x"


@pytest.mark.parametrize(
    ("tag", "octets", "text"),
    [
        (0x1E, "Łódź".encode("utf-16-be"), "Łódź"),  # BMPString: was "\x01A\x00..."
        (0x1C, "Łódź".encode("utf-32-be"), "Łódź"),  # UniversalString
        (0x14, "Zürich".encode("latin-1"), "Zürich"),  # T61String as openssl reads it
        (0x1E, b"\x00A\xd8", "A\ufffd"),  # odd length: replaced, not an exception
    ],
)
def test_string_types(tag: int, octets: bytes, text: str) -> None:
    attribute = _tlv(0x06, b"\x55\x04\x03") + _tlv(tag, octets)
    assert read_certificate(_certificate(attribute=attribute)).subject == f"CN={text}"
