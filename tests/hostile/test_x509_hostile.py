"""Mutated real certificates through `exporter/strongswan/x509.py`, with openssl as the oracle.

The exporter reads the DER that charon's `list-certs` hands out with a small decoder of its own.
Contract (the module's docstring): `read_certificate` returns `CertificateFacts` or raises
`CertificateError`; `parse_certificates` counts the latter in
`strongswan_certificates_unreadable`, while any other exception fails the whole strongSwan
refresh. So, for any bytes: that result or that error, nothing else, no hang, no recursion,
and no memory that grows with a length the bytes declare rather than with the bytes.

The certificates mutated are real: the lab server's, recorded from charon's `list-certs`
(tests/fixtures/vici/), and the ones tests/fixtures/x509/make.sh made with openssl.
"""

from __future__ import annotations

import base64
import calendar
import json
import re
import ssl
import subprocess
import time
import tracemalloc
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exporter.strongswan.parse import parse_certificates
from exporter.strongswan.x509 import _OID_NAMES as OID_NAMES
from exporter.strongswan.x509 import CertificateError, CertificateFacts, read_certificate

from .helpers import HOSTILE, HOSTILE_STRUCTURED, no_hang

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _recorded_lab_certificate() -> bytes:
    events = json.loads((FIXTURES / "vici" / "remote-access" / "list-certs.json").read_text())
    (event,) = (e for e in events if e["type"] == "X509")
    return base64.b64decode(event["data"]["$base64"])


def _pem(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


#: name -> DER of a real, well-formed certificate.
CERTIFICATES = {
    "lab-server (recorded from charon)": _recorded_lab_certificate(),
    "vpn.example.test (ECDSA, v3)": _pem(FIXTURES / "certs" / "vpn.example.test.pem"),
    **{path.stem: _pem(path) for path in sorted((FIXTURES / "x509").glob("*.pem"))},
}


# ---- openssl, the oracle ---------------------------------------------------------------------


@dataclass(frozen=True)
class OpensslView:
    serial: str  # hex as openssl prints it: upper case, no separators
    not_before: float | None  # None: openssl printed "Bad time value"
    not_after: float | None
    subject: tuple[tuple[tuple[str, str], ...], ...]  # RDNs of (our name for the OID, value)

    def flat_subject(self) -> str:
        """The exporter's (strongSwan's) form: every attribute, RDN sets flattened, ", "."""
        return ", ".join(f"{name}={value}" for rdn in self.subject for name, value in rdn)


#: The attribute names the exporter prints (strongSwan's); any other OID is printed dotted.
NAMES = OID_NAMES


def _openssl_time(text: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(text, "%b %d %H:%M:%S %Y GMT")))
    except ValueError:
        return None


def openssl_view(der: bytes) -> OpensslView | None:
    """What `openssl x509 -noout -subject -serial -startdate -enddate` says; None if it refuses."""
    run = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-noout", "-serial", "-startdate", "-enddate",
         "-subject", "-nameopt", "sep_multiline,utf8,oid"],
        input=der, capture_output=True, timeout=10, check=False,
    )  # fmt: skip
    if run.returncode != 0:
        return None
    text = run.stdout.decode("utf-8", errors="replace")
    serial = re.search(r"^serial=(.*)$", text, re.M)
    start = re.search(r"^notBefore=(.*)$", text, re.M)
    end = re.search(r"^notAfter=(.*)$", text, re.M)
    subject = text.split("subject=", 1)[1] if "subject=" in text else None
    if not (serial and start and end and subject is not None):
        return None
    rdns = []
    for line in subject.splitlines()[1:]:  # one RDN per line, indented by four spaces
        pairs = []
        for attribute in line.strip().split(" + "):
            oid, _, value = attribute.partition("=")
            pairs.append((NAMES.get(oid, oid), value))
        rdns.append(tuple(pairs))
    return OpensslView(
        serial.group(1), _openssl_time(start.group(1)), _openssl_time(end.group(1)), tuple(rdns)
    )


def _hex(serial: str) -> str:
    return serial.replace(":", "").upper()


@pytest.mark.parametrize("name", sorted(CERTIFICATES))
def test_fields_agree_with_openssl(name: str) -> None:
    der = CERTIFICATES[name]
    view = openssl_view(der)
    assert view is not None, "openssl cannot read a fixture"
    facts = read_certificate(der)
    assert _hex(facts.serial) == view.serial
    assert facts.not_before == view.not_before
    assert facts.not_after == view.not_after
    assert facts.subject == view.flat_subject()


# ---- the contract ------------------------------------------------------------------------------


def read_within_contract(der: bytes) -> CertificateFacts | None:
    """`read_certificate(der)`, failing the test on any breach of the contract."""
    tracemalloc.start()
    try:
        with no_hang(2.0):
            try:
                facts: CertificateFacts | None = read_certificate(der)
            except CertificateError:
                facts = None
            except Exception as err:  # RecursionError, ValueError, IndexError, ...
                pytest.fail(f"read_certificate raised {err!r} for {der[:64].hex()}...")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A few copies of the input at most; a declared length must never be allocated.
    assert peak < 8 * len(der) + 256 * 1024, f"{peak} bytes for {len(der)} bytes of input"
    if facts is not None:
        for text in (facts.serial, facts.subject):
            text.encode("utf-8")  # a label value: no lone surrogates
        assert facts.not_before == facts.not_before and facts.not_after == facts.not_after
    return facts


# ---- where the length fields are (openssl asn1parse, so not our own walker) --------------------


@dataclass(frozen=True)
class Header:
    offset: int  # of the tag
    header_length: int  # tag and length octets
    length: int
    constructed: bool


@cache
def headers(name: str) -> tuple[Header, ...]:
    run = subprocess.run(
        ["openssl", "asn1parse", "-inform", "DER"],
        input=CERTIFICATES[name], capture_output=True, check=True, timeout=10,
    )  # fmt: skip
    found = []
    for line in run.stdout.decode("ascii", errors="replace").splitlines():
        match = re.match(r"\s*(\d+):d=\s*\d+\s+hl=\s*(\d+)\s+l=\s*(\d+)\s+(cons|prim)", line)
        if match:
            offset, hl, length, kind = match.groups()
            found.append(Header(int(offset), int(hl), int(length), kind == "cons"))
    return tuple(found)


def _encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


#: Length octets that lie: wrong by little, huge, indefinite, too many octets, non-minimal.
lying_lengths = st.one_of(
    st.integers(min_value=0, max_value=2**32 - 1).map(_encode_length),
    st.sampled_from([b"\x80", b"\x84\xff\xff\xff\xff", b"\x85\x01\x00\x00\x00\x00", b"\xff",
                     b"\x88\x7f\xff\xff\xff\xff\xff\xff\xff", b"\x81\x00", b"\x82\x00\x01"]),
)  # fmt: skip


#: Tags to put where another was: primitive, string, time, constructed, high-tag-number form.
TAGS = (0x02, 0x04, 0x05, 0x06, 0x0C, 0x13, 0x17, 0x18, 0x1E, 0x1F, 0x30, 0x31, 0xA0, 0xFF)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real certificate with one to three mutations."""
    name = draw(st.sampled_from(sorted(CERTIFICATES)))
    der = bytearray(CERTIFICATES[name])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if not der:
            break
        at = draw(st.integers(min_value=0, max_value=len(der) - 1))
        kind = draw(st.sampled_from(["flip", "byte", "cut", "insert", "delete", "length", "tag"]))
        if kind == "flip":
            der[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "byte":
            der[at] = draw(st.integers(min_value=0, max_value=255))
        elif kind == "cut":
            del der[at:]
        elif kind == "insert":
            der[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del der[at : at + draw(st.integers(min_value=1, max_value=8))]
        else:
            # Rewrite one element's header, found in the unmutated certificate (it may have
            # moved by an earlier mutation: that is one more kind of nonsense).
            header = draw(st.sampled_from(headers(name)))
            start, end = header.offset, header.offset + header.header_length
            if start >= len(der):
                continue
            if kind == "length":
                der[start + 1 : end] = draw(lying_lengths)
            else:
                der[start] = draw(st.sampled_from(TAGS))
    return bytes(der)


@HOSTILE
@given(mutated())
def test_mutated_real_certificates(der: bytes) -> None:
    read_within_contract(der)


@HOSTILE
@given(st.binary(max_size=2048))
def test_random_bytes(der: bytes) -> None:
    read_within_contract(der)


@HOSTILE
@given(st.binary(max_size=64), st.sampled_from([b"\x30", b"\x30\x30", b"\x30\x80\x30"]))
def test_random_bytes_behind_a_sequence(tail: bytes, head: bytes) -> None:
    read_within_contract(head + tail)


@st.composite
def values_mutated(draw: st.DrawFn) -> bytes:
    """A real certificate with octets changed inside primitive values only, which openssl
    mostly still reads: serials, times, strings, OIDs."""
    name = draw(st.sampled_from(sorted(CERTIFICATES)))
    der = bytearray(CERTIFICATES[name])
    primitives = [h for h in headers(name) if not h.constructed and h.length]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        header = draw(st.sampled_from(primitives))
        at = header.offset + header.header_length
        at += draw(st.integers(min_value=0, max_value=header.length - 1))
        if draw(st.booleans()):
            der[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        else:
            der[at] = draw(st.sampled_from(b"0123456789Z+-.\x00\x7f\x80\xff"))
    return bytes(der)


@settings(HOSTILE_STRUCTURED, max_examples=max(HOSTILE.max_examples // 6, 10))  # ~50 ms each
@given(st.one_of(values_mutated(), mutated()))
def test_what_openssl_reads_we_read_alike(der: bytes) -> None:
    """Where openssl still reads a mutated certificate, the fields we report are openssl's."""
    facts = read_within_contract(der)
    # openssl's file loader also takes a certificate behind eight zero octets; charon does not.
    view = openssl_view(der) if der[:1] == b"\x30" else None
    if view is None or view.not_before is None or view.not_after is None:
        return  # openssl cannot read it, or not a date ("Bad time value"): unreadable is fair
    assert facts is not None, "openssl reads it, the exporter calls it unreadable"
    if not view.serial.startswith("-"):  # negative: openssl prints a sign, we the octets
        assert _hex(facts.serial) == view.serial
    assert (facts.not_before, facts.not_after) == (view.not_before, view.not_after)
    # Octets a string type does not allow (0xff in a PrintableString): openssl shows them as
    # Latin-1, the exporter as U+FFFD. Either is fair. Line breaks and " + " would split
    # openssl's output where it has no attribute boundary. The rest must agree.
    subject = facts.subject
    if "\ufffd" not in subject and len(subject.splitlines()) == 1 and " + " not in subject:
        assert subject == view.flat_subject()


# ---- shapes aimed at each part of the decoder ------------------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _encode_length(len(content)) + content


def _certificate(
    *,
    serial: bytes = b"\x01",
    name: bytes | None = None,
    not_before: bytes = _tlv(0x17, b"260101000000Z"),
    not_after: bytes = _tlv(0x17, b"270101000000Z"),
) -> bytes:
    """A certificate's skeleton: just the fields the decoder reads, the rest empty."""
    if name is None:
        name = _tlv(0x30, _tlv(0x31, _tlv(0x30, _tlv(0x06, b"\x55\x04\x03") + _tlv(0x0C, b"x"))))
    tbs = (
        _tlv(0xA0, _tlv(0x02, b"\x02"))
        + _tlv(0x02, serial)
        + _tlv(0x30, b"")  # signature algorithm
        + name  # issuer
        + _tlv(0x30, not_before + not_after)
        + name  # subject
        + _tlv(0x30, b"")  # subjectPublicKeyInfo
    )
    return _tlv(0x30, _tlv(0x30, tbs) + _tlv(0x30, b"") + _tlv(0x03, b"\x00"))


def _attribute_name(oid: bytes, tag: int = 0x0C, value: bytes = b"x") -> bytes:
    return _tlv(0x30, _tlv(0x31, _tlv(0x30, _tlv(0x06, oid) + _tlv(tag, value))))


def test_the_skeleton_is_read() -> None:
    facts = read_certificate(_certificate())
    assert facts == CertificateFacts("01", "CN=x", 1767225600.0, 1798761600.0)


def _nested(depth: int) -> bytes:
    """`depth` SEQUENCEs, each holding the next (built outside in: concatenating is quadratic)."""
    headers, length = [], 0
    for _ in range(depth):
        header = b"\x30" + _encode_length(length)
        headers.append(header)
        length += len(header)
    return b"".join(reversed(headers))


@pytest.mark.parametrize("depth", [100, 10_000, 200_000])
def test_deeply_nested_sequences(depth: int) -> None:
    nested = _nested(depth)
    read_within_contract(nested)
    read_within_contract(_certificate(name=nested))
    indefinite = b"\x30\x80" * depth  # never closed
    read_within_contract(indefinite)


@pytest.mark.parametrize(
    "declared", [b"\x84\xff\xff\xff\xff", b"\x84\x7f\xff\xff\xff", b"\x83\xff\xff\xff"]
)
def test_huge_declared_lengths_allocate_nothing(declared: bytes) -> None:
    for tag in (0x30, 0x02, 0x06, 0x0C, 0x17):
        read_within_contract(b"\x30" + declared + bytes([tag]) + declared + b"\x00" * 64)


@HOSTILE
@given(st.binary(max_size=40))
@example(b"\x2a" + b"\x88" * 2500 + b"\x01")  # an arc of 17,500 bits: too long for str()
@example(b"\xff" * 40)
@example(b"\x2a\x86")  # an arc never ended
@example(b"")
def test_any_oid_in_a_name(oid: bytes) -> None:
    read_within_contract(_certificate(name=_attribute_name(oid)))


def test_an_oid_arc_of_a_megabyte_does_not_hang() -> None:
    """Shifting a growing int per octet is quadratic: 1 MiB of continuation octets hung."""
    read_within_contract(_certificate(name=_attribute_name(b"\x2a" + b"\xff" * (1 << 20))))


times = st.one_of(
    st.binary(max_size=20),
    st.text(alphabet="0123456789Z+-. _\u0660", max_size=17).map(lambda t: t.encode()),
    st.sampled_from([b"991301000000Z", b"990001000000Z", b"990100000000Z", b"991232000000Z",
                     b"990101250000Z", b"990101006000Z", b"990101000061Z", b"00000101000000Z",
                     b"-1-1-1-1-1-1Z", b"+1+1+1+1+1+1", b"1_1_1_1_1_1_", b" 1 1 1 1 1 1",
                     b"99999999999999Z", b"990101000000+0200", b"20500101000000.5Z"]),
)  # fmt: skip


@HOSTILE
@given(times, st.sampled_from([0x17, 0x18, 0x04, 0x30]))
def test_any_time(value: bytes, tag: int) -> None:
    read_within_contract(_certificate(not_after=_tlv(tag, value)))


@HOSTILE
@given(st.binary(max_size=24), st.sampled_from([0x0C, 0x13, 0x14, 0x16, 0x1C, 0x1E, 0x04, 0x30]))
def test_any_string_in_a_name(value: bytes, tag: int) -> None:
    read_within_contract(_certificate(name=_attribute_name(b"\x55\x04\x03", tag, value)))


@HOSTILE
@given(st.binary(max_size=24))
def test_any_serial(serial: bytes) -> None:
    read_within_contract(_certificate(serial=serial))


#: The largest certificate charon can hand over: one VICI segment (exporter/vici/codec.py).
_LARGEST = 512 * 1024


@pytest.mark.parametrize(
    "shape",
    ["attributes", "rdns", "arcs", "serial", "tbs fields", "validity", "string"],
)
def test_the_largest_certificates_cost_time_and_memory_in_their_size(shape: str) -> None:
    attribute = _attribute_name(b"\x55\x04\x03")[2:]  # one SET of one attribute
    count = _LARGEST // 2 // len(attribute)  # the name is there twice: issuer and subject
    if shape == "attributes":  # one RDN of many attributes
        name = _tlv(
            0x30, _tlv(0x31, _tlv(0x30, _tlv(0x06, b"\x55\x04\x03") + _tlv(0x0C, b"")) * count)
        )
        der = _certificate(name=name)
    elif shape == "rdns":
        der = _certificate(name=_tlv(0x30, attribute * count))
    elif shape == "arcs":
        der = _certificate(name=_attribute_name(b"\x2a" * (_LARGEST // 2)))
    elif shape == "serial":
        der = _certificate(serial=b"\x7f" * _LARGEST)
    elif shape == "validity":  # a quarter million times
        der = _certificate(not_after=_tlv(0x17, b"270101000000Z") * (_LARGEST // 15))
    elif shape == "tbs fields":  # a TBSCertificate of a quarter million NULLs
        der = _tlv(0x30, _tlv(0x30, b"\x05\x00" * (_LARGEST // 2)))
    else:
        der = _certificate(
            name=_attribute_name(b"\x55\x04\x03", 0x1E, b"\xd8\x00" * (_LARGEST // 4))
        )
    read_within_contract(der)  # memory, under tracemalloc (which slows it down)
    started = time.monotonic()
    with pytest.raises(CertificateError):
        read_certificate(der)  # no real certificate looks like this
    assert time.monotonic() - started < 0.5


def test_a_bad_certificate_is_counted_not_raised() -> None:
    """The caller's side of the contract: unreadable, counted, the others still read."""
    good = CERTIFICATES["lab-server (recorded from charon)"]
    bad = _certificate(not_after=_tlv(0x17, b"991301000000Z"))
    events = [
        {"type": "X509", "data": der.decode("utf-8", errors="surrogateescape")}
        for der in (good, bad)
    ]
    certificates, unreadable = parse_certificates(events)
    assert len(certificates) == 1 and unreadable == 1
