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
