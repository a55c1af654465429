"""MS-CHAPv2 against the worked example of RFC 2759 §9.2, and CHAP-MD5 by definition."""

from __future__ import annotations

import hashlib

from exporter.probes import mschapv2

USER = "User"
PASSWORD = "clientPass"
AUTH_CHALLENGE = bytes.fromhex("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = bytes.fromhex("21402324255E262A28295F2B3A337C7E")
CHALLENGE = bytes.fromhex("D02E4386BCE91226")
PASSWORD_HASH = bytes.fromhex("44EBBA8D5312B8D611474411F56989AE")
NT_RESPONSE = bytes.fromhex("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
AUTH_RESPONSE = "S=407A5589115FD0D6209F510FE9C04566932CDA56"


def test_challenge_hash() -> None:
    assert mschapv2.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, USER) == CHALLENGE


def test_password_hash() -> None:
    assert mschapv2.nt_password_hash(PASSWORD) == PASSWORD_HASH


def test_nt_response() -> None:
    assert mschapv2.nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, PASSWORD) == NT_RESPONSE


def test_authenticator_response() -> None:
    got = mschapv2.authenticator_response(
        PASSWORD, NT_RESPONSE, PEER_CHALLENGE, AUTH_CHALLENGE, USER
    )
    assert got == AUTH_RESPONSE
    assert mschapv2.verify_authenticator_response(AUTH_RESPONSE, (got + " M=ok").encode())
    assert not mschapv2.verify_authenticator_response(AUTH_RESPONSE, b"S=" + b"0" * 40)


def test_domain_prefix_is_not_hashed() -> None:
    assert mschapv2.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, "CORP\\User") == CHALLENGE


def test_chap_md5() -> None:
    got = mschapv2.chap_md5_response(7, "secret", b"\x01\x02")
    assert got == hashlib.md5(b"\x07secret\x01\x02").digest()
