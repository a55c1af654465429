"""A self-signed X.509 certificate for the server, so ``list-certs`` has real data."""

from __future__ import annotations

import subprocess
from pathlib import Path

VALID_DAYS = 30


def self_signed(folder: Path, common_name: str) -> bytes:
    """Make an RSA key and a self-signed certificate in ``folder``; return the PEM cert.

    RSA, because the lab's charon parses keys with gmp/pkcs1 only (no openssl plugin).
    """
    folder.mkdir(parents=True, exist_ok=True)
    cert = folder / f"{common_name}.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-days", str(VALID_DAYS), "-keyout", str(folder / f"{common_name}.key"),
            "-out", str(cert), "-subj", f"/C=US/O=l2tp-ipsec-exporter lab/CN={common_name}",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert.read_bytes()
