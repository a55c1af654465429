"""What a responder said to a first IKE message, as plain data (no I/O, no metrics)."""

from __future__ import annotations

from dataclasses import dataclass


class IkeDecodeError(ValueError):
    """The bytes are not an IKE message this prober can read."""


#: Notify message types (RFC 2408 §3.14.1 for IKEv1 errors, RFC 7296 §3.10.1 for IKEv2;
#: the error numbers below 8192 are shared).
NOTIFY_NAMES = {
    1: "UNSUPPORTED_CRITICAL_PAYLOAD",  # IKEv1: INVALID_PAYLOAD_TYPE
    4: "INVALID_IKE_SPI",
    5: "INVALID_MAJOR_VERSION",
    7: "INVALID_SYNTAX",
    9: "INVALID_MESSAGE_ID",
    11: "INVALID_SPI",
    12: "ATTRIBUTES_NOT_SUPPORTED",
    13: "INVALID_KEY_INFORMATION",  # IKEv1 only
    14: "NO_PROPOSAL_CHOSEN",
    16: "PAYLOAD_MALFORMED",
    17: "INVALID_KE_PAYLOAD",
    18: "INVALID_ID_INFORMATION",
    24: "AUTHENTICATION_FAILED",
    36: "INTERNAL_ADDRESS_FAILURE",
    38: "TS_UNACCEPTABLE",
    43: "TEMPORARY_FAILURE",
    16388: "NAT_DETECTION_SOURCE_IP",
    16389: "NAT_DETECTION_DESTINATION_IP",
    16390: "COOKIE",
    16404: "MULTIPLE_AUTH_SUPPORTED",
    16406: "REDIRECT_SUPPORTED",
    16407: "REDIRECT",
    16418: "CHILDLESS_IKEV2_SUPPORTED",
    16430: "IKEV2_FRAGMENTATION_SUPPORTED",
    16431: "SIGNATURE_HASH_ALGORITHMS",
}
COOKIE = 16390
INVALID_KE_PAYLOAD = 17
NO_PROPOSAL_CHOSEN = 14
#: IKEv2 notify types below this are errors; above, status (RFC 7296 §3.10.1).
FIRST_STATUS_TYPE = 16384


def notify_name(kind: int) -> str:
    return NOTIFY_NAMES.get(kind, f"NOTIFY_{kind}")


@dataclass(frozen=True)
class Notify:
    kind: int
    data: bytes = b""

    @property
    def name(self) -> str:
        return notify_name(self.kind)

    @property
    def is_error(self) -> bool:
        return self.kind < FIRST_STATUS_TYPE


@dataclass(frozen=True)
class AcceptedProposal:
    """The transforms the responder chose, in strongSwan's names (e.g. aes256, sha256)."""

    encryption: str
    integrity: str
    prf: str
    dh_group: str
    auth_method: str = ""  # IKEv1 only


@dataclass(frozen=True)
class IkeResponse:
    version: int
    exchange: int
    initiator_spi: bytes
    responder_spi: bytes
    accepted: AcceptedProposal | None = None
    notifies: tuple[Notify, ...] = ()
    vendor_ids: tuple[bytes, ...] = ()
    ke_group: int | None = None

    def error_notify(self) -> Notify | None:
        """The first error notify, or a COOKIE request (both end a first exchange)."""
        for n in self.notifies:
            if n.is_error or n.kind == COOKIE:
                return n
        return None
