"""Authentication arithmetic for PPP: MS-CHAPv2 (RFC 2759) and CHAP-MD5 (RFC 1994).

MD4 and DES come from pycryptodome: OpenSSL 3 (and so hashlib) no longer offers MD4.
"""

from __future__ import annotations

import hashlib
import hmac

from Crypto.Cipher import DES
from Crypto.Hash import MD4

# RFC 2759 §8.7: the two magic constants of GenerateAuthenticatorResponse.
MAGIC1 = b"Magic server to client signing constant"
MAGIC2 = b"Pad to make it do more than one iteration"


def nt_password_hash(password: str) -> bytes:
    return MD4.new(password.encode("utf-16-le")).digest()


def challenge_hash(peer_challenge: bytes, authenticator_challenge: bytes, username: str) -> bytes:
    # Only the user name proper: a "DOMAIN\\user" prefix is stripped (RFC 2759 §8.2).
    name = username.rsplit("\\", 1)[-1].encode()
    return hashlib.sha1(peer_challenge + authenticator_challenge + name).digest()[:8]


def _des_key(seven: bytes) -> bytes:
    """Spread 56 key bits over 8 bytes (the parity bits are ignored by DES)."""
    bits = int.from_bytes(seven, "big")
    return bytes(((bits >> (49 - 7 * i)) & 0x7F) << 1 for i in range(8))


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    key = password_hash.ljust(21, b"\0")
    return b"".join(
        DES.new(_des_key(key[i : i + 7]), DES.MODE_ECB).encrypt(challenge) for i in (0, 7, 14)
    )


def nt_response(
    authenticator_challenge: bytes, peer_challenge: bytes, username: str, password: str
) -> bytes:
    challenge = challenge_hash(peer_challenge, authenticator_challenge, username)
    return challenge_response(challenge, nt_password_hash(password))


def authenticator_response(
    password: str,
    nt_resp: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    username: str,
) -> str:
    """The "S=<40 hex digits>" the server must send back: proof it knows the password."""
    hash_hash = MD4.new(nt_password_hash(password)).digest()
    digest = hashlib.sha1(hash_hash + nt_resp + MAGIC1).digest()
    challenge = challenge_hash(peer_challenge, authenticator_challenge, username)
    return "S=" + hashlib.sha1(digest + challenge + MAGIC2).hexdigest().upper()


def verify_authenticator_response(expected: str, message: bytes) -> bool:
    """Whether a Success packet's message starts with the expected "S=..." value."""
    got = message[:42].decode("ascii", errors="replace").upper()
    return hmac.compare_digest(got, expected.upper())


def chap_md5_response(identifier: int, secret: str, challenge: bytes) -> bytes:
    return hashlib.md5(bytes([identifier]) + secret.encode() + challenge).digest()
