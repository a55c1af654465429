"""Key-exchange values for the first IKE message: a real public value of the group.

A responder checks the KE payload (range, point on the curve) before it answers with its
own, so random bytes are not enough. The MODP primes (RFC 2409 §6.2, RFC 3526) are built
from pi rather than pasted as hex: the formula is the definition and cannot be mistyped.
"""

from __future__ import annotations

import secrets
from functools import cache

from Crypto.PublicKey import ECC

# RFC 3526: p = 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) * pi) + offset), generator 2.
_MODP = {2: (1024, 129093), 5: (1536, 741804), 14: (2048, 124476), 15: (3072, 1690314),
         16: (4096, 240904)}  # fmt: skip
_ECP = {19: "P-256", 20: "P-384", 21: "P-521"}
SUPPORTED_GROUPS = frozenset(_MODP) | frozenset(_ECP) | {31}


_PI_BITS = 4096


@cache
def _pi() -> int:
    """floor(pi * 2^4096), by Machin's formula in integer arithmetic."""
    guard = 64
    one = 1 << (_PI_BITS + guard)

    def arctan_inv(x: int) -> int:
        total = term = one // x
        n, sign, x2 = 1, -1, x * x
        while term:
            term //= x2
            total += sign * (term // (2 * n + 1))
            sign, n = -sign, n + 1
        return total

    return (16 * arctan_inv(5) - 4 * arctan_inv(239)) >> guard


@cache
def modp_prime(group: int) -> int:
    n, offset = _MODP[group]
    pi_part: int = _pi() >> (_PI_BITS - (n - 130))
    prime: int = (1 << n) - (1 << (n - 64)) - 1 + (1 << 64) * (pi_part + offset)
    return prime


def public_value(group: int) -> bytes:
    """A fresh public key-exchange value for `group`, as carried in a KE payload."""
    if group in _MODP:
        p = modp_prime(group)
        x = secrets.randbelow(p - 3) + 2
        return pow(2, x, p).to_bytes((p.bit_length() + 7) // 8, "big")
    if group in _ECP:
        key = ECC.generate(curve=_ECP[group])
        raw: bytes = key.public_key().export_key(format="raw")
        return raw[1:]  # IKE carries x || y without the 0x04 prefix (RFC 5903 §7)
    if group == 31:
        raw = ECC.generate(curve="Curve25519").public_key().export_key(format="raw")
        return bytes(raw)
    raise ValueError(f"no key exchange for DH group {group}")
