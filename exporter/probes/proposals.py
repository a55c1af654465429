"""strongSwan-style proposal strings (``aes256-sha256-modp2048``) as IKE transform numbers.

Only what a first message needs: IKEv2 transform ids (RFC 7296 §3.3.2, IANA "IKEv2
Parameters") and IKEv1 Phase 1 attribute values (RFC 2409 Appendix A).
"""

from __future__ import annotations

from dataclasses import dataclass


class ProposalError(ValueError):
    """A proposal string names an algorithm this prober cannot offer."""


@dataclass(frozen=True)
class Cipher:
    name: str
    ikev2_id: int
    ikev1_id: int | None  # None: not defined for IKEv1
    key_bits: int | None  # None: fixed key length (no key-length attribute)
    aead: bool = False


@dataclass(frozen=True)
class Hash:
    name: str
    ikev2_integ: int
    ikev2_prf: int
    ikev1_hash: int


CIPHERS = {
    "aes128": Cipher("aes128", 12, 7, 128),
    "aes192": Cipher("aes192", 12, 7, 192),
    "aes256": Cipher("aes256", 12, 7, 256),
    "3des": Cipher("3des", 3, 5, None),
    "aes128gcm16": Cipher("aes128gcm16", 20, None, 128, aead=True),
    "aes256gcm16": Cipher("aes256gcm16", 20, None, 256, aead=True),
}
HASHES = {
    "md5": Hash("md5", 1, 1, 1),
    "sha1": Hash("sha1", 2, 2, 2),
    "sha256": Hash("sha256", 12, 5, 4),
    "sha384": Hash("sha384", 13, 6, 5),
    "sha512": Hash("sha512", 14, 7, 6),
}
#: Diffie-Hellman group numbers (shared by IKEv1 and IKEv2).
GROUPS = {
    "modp1024": 2,
    "modp1536": 5,
    "modp2048": 14,
    "modp3072": 15,
    "modp4096": 16,
    "ecp256": 19,
    "ecp384": 20,
    "ecp521": 21,
    "curve25519": 31,
}
GROUP_NAMES = {v: k for k, v in GROUPS.items()}


@dataclass(frozen=True)
class IkeProposal:
    """One proposal: any number of each transform kind, in preference order."""

    ciphers: tuple[Cipher, ...]
    hashes: tuple[Hash, ...]  # integrity (and PRF, unless prfs is given)
    prfs: tuple[Hash, ...]
    groups: tuple[int, ...]

    @property
    def aead(self) -> bool:
        return all(c.aead for c in self.ciphers)


def parse_ike_proposal(text: str) -> IkeProposal:
    ciphers: list[Cipher] = []
    hashes: list[Hash] = []
    prfs: list[Hash] = []
    groups: list[int] = []
    for token in text.strip().lower().split("-"):
        if token in CIPHERS:
            ciphers.append(CIPHERS[token])
        elif token in HASHES:
            hashes.append(HASHES[token])
        elif token.startswith("prf") and token[3:] in HASHES:
            prfs.append(HASHES[token[3:]])
        elif token in GROUPS:
            groups.append(GROUPS[token])
        else:
            raise ProposalError(f"proposal {text!r}: unknown algorithm {token!r}")
    if not ciphers or not groups:
        raise ProposalError(f"proposal {text!r}: needs an encryption algorithm and a DH group")
    if any(c.aead for c in ciphers) != all(c.aead for c in ciphers):
        raise ProposalError(f"proposal {text!r}: mixes AEAD and non-AEAD ciphers")
    if not hashes and not (ciphers[0].aead and prfs):
        raise ProposalError(f"proposal {text!r}: needs an integrity (or, with GCM, a PRF)")
    return IkeProposal(tuple(ciphers), tuple(hashes), tuple(prfs), tuple(groups))
