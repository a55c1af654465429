"""Packet codecs against real bytes recorded from the lab's charon and xl2tpd
(tests/fixtures/probes/record.py re-records them)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from exporter.probes import dh, ikev1_packets, ikev2_packets, ppp
from exporter.probes import l2tp_packets as l2tp
from exporter.probes.ike_answer import IkeDecodeError
from exporter.probes.proposals import ProposalError, parse_ike_proposal

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probes"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def recorded(name: str) -> tuple[bytes, bytes]:
    return (
        (FIXTURES / f"{name}.request.bin").read_bytes(),
        (FIXTURES / f"{name}.response.bin").read_bytes(),
    )


def test_manifest_lists_every_recording() -> None:
    names = {p.name.split(".")[0] for p in FIXTURES.glob("*.bin")}
    assert names == set(MANIFEST)


# -- IKEv2 --------------------------------------------------------------------------------------


def test_ikev2_accepted() -> None:
    request, response = recorded("ikev2_accepted")
    answer = ikev2_packets.decode_response(response)
    assert answer.initiator_spi == request[:8]
    assert answer.responder_spi != bytes(8)
    assert answer.accepted is not None
    assert (answer.accepted.encryption, answer.accepted.integrity) == ("aes256", "sha256")
    assert (answer.accepted.prf, answer.accepted.dh_group) == ("prfsha256", "modp2048")
    assert answer.ke_group == 14
    assert answer.error_notify() is None
    assert "MULTIPLE_AUTH_SUPPORTED" in {n.name for n in answer.notifies}


def test_ikev2_no_proposal_chosen() -> None:
    request, response = recorded("ikev2_no_proposal_chosen")
    answer = ikev2_packets.decode_response(response)
    assert answer.initiator_spi == request[:8]
    assert answer.accepted is None
    notify = answer.error_notify()
    assert notify is not None and notify.name == "NO_PROPOSAL_CHOSEN" and notify.kind == 14


def test_ikev2_invalid_ke_payload_names_the_group() -> None:
    _, response = recorded("ikev2_invalid_ke_payload")
    notify = ikev2_packets.decode_response(response).error_notify()
    assert notify is not None and notify.name == "INVALID_KE_PAYLOAD"
    assert struct.unpack("!H", notify.data[:2])[0] == 14


def test_ikev2_natt_answer_carries_the_marker() -> None:
    request, response = recorded("ikev2_natt_accepted")
    assert request.startswith(ikev2_packets.NON_ESP_MARKER)
    assert response.startswith(ikev2_packets.NON_ESP_MARKER)
    answer = ikev2_packets.decode_response(response[4:])
    assert answer.initiator_spi == request[4:12] and answer.accepted is not None


def test_ikev2_request_layout() -> None:
    request, _ = recorded("ikev2_accepted")
    _spi, spi_r, first, version, exchange, flags, msgid, length = ikev2_packets.HEADER.unpack_from(
        request
    )
    assert (spi_r, first, version, exchange, flags, msgid) == (
        bytes(8), ikev2_packets.SA, 0x20, 34, 0x08, 0,
    )  # fmt: skip
    assert length == len(request)


def test_ikev2_encoder_puts_the_ke_group_first_and_nat_detection_last() -> None:
    proposal = parse_ike_proposal("aes128-sha256-modp2048-modp3072")
    packet = ikev2_packets.encode_sa_init(
        ikev2_packets.SaInitRequest(
            spi=b"\x01" * 8,
            proposals=(proposal,),
            ke_group=15,
            ke_data=b"\x02" * 384,
            nonce=b"\x03" * 32,
            cookie=b"cookie",
            addresses=("10.0.0.1", 500, "10.0.0.2", 500),
        )
    )
    # The first payload is the COOKIE notify when a cookie is echoed.
    assert packet[16] == ikev2_packets.NOTIFY
    assert b"cookie" in packet[:60]
    dh_ids = [
        struct.unpack_from("!H", packet, i + 6)[0]
        for i in range(len(packet) - 8)
        if packet[i + 4] == ikev2_packets.DH and packet[i + 1] == 0 and packet[i + 5] == 0
        and struct.unpack_from("!H", packet, i + 2)[0] == 8
    ]  # fmt: skip
    assert dh_ids[:2] == [15, 14]
    digest = ikev2_packets.nat_detection_hash(b"\x01" * 8, bytes(8), "10.0.0.2", 500)
    assert packet.endswith(digest)


def test_ikev2_decoder_rejects_garbage() -> None:
    with pytest.raises(IkeDecodeError):
        ikev2_packets.decode_response(b"\0" * 10)
    _, response = recorded("ikev2_accepted")
    with pytest.raises(IkeDecodeError):
        ikev2_packets.decode_response(response[:-10])
    with pytest.raises(IkeDecodeError):  # an IKEv1 answer is not an IKEv2 one
        ikev2_packets.decode_response(recorded("ikev1_accepted")[1])


# -- IKEv1 --------------------------------------------------------------------------------------


def test_ikev1_accepted() -> None:
    request, response = recorded("ikev1_accepted")
    answer = ikev1_packets.decode_response(response)
    assert answer.initiator_spi == request[:8]
    assert answer.exchange == ikev1_packets.IDENTITY_PROTECTION
    assert answer.accepted is not None
    accepted = answer.accepted
    assert (accepted.encryption, accepted.integrity, accepted.dh_group) == (
        "aes256", "sha256", "modp2048",
    )  # fmt: skip
    assert accepted.auth_method == "psk"
    # charon announces NAT-T (RFC 3947) back when we offered it.
    assert ikev1_packets.VENDOR_IDS[0] in answer.vendor_ids


def test_ikev1_no_proposal_chosen() -> None:
    _, response = recorded("ikev1_no_proposal_chosen")
    answer = ikev1_packets.decode_response(response)
    assert answer.exchange == ikev1_packets.INFORMATIONAL
    notify = answer.error_notify()
    assert notify is not None and notify.name == "NO_PROPOSAL_CHOSEN"


def test_ikev1_request_has_one_transform_per_combination() -> None:
    proposals = tuple(
        parse_ike_proposal(p) for p in ("aes256-aes128-sha256-sha1-modp2048", "3des-sha1-modp1024")
    )
    packet = ikev1_packets.encode_main_mode(
        ikev1_packets.MainModeRequest(b"\x07" * 8, proposals, auth="xauth_psk")
    )
    count = packet[ikev1_packets.HEADER.size + 12 + 7]  # proposal payload: transform count
    assert count == 2 * 2 * 1 + 1
    assert struct.pack("!HH", 0x8003, 65001) in packet  # XAUTHInitPreShared


def test_ikev1_gcm_only_is_refused() -> None:
    with pytest.raises(ValueError):
        ikev1_packets.encode_main_mode(
            ikev1_packets.MainModeRequest(
                b"\0" * 8, (parse_ike_proposal("aes256gcm16-prfsha256-modp2048"),)
            )
        )


# -- proposals and DH ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["aes256-sha256", "blowfish-sha1-modp2048", "aes256-modp2048"])
def test_bad_proposals(text: str) -> None:
    with pytest.raises(ProposalError):
        parse_ike_proposal(text)


@pytest.mark.parametrize(("group", "size"), [(2, 128), (14, 256), (15, 384), (19, 64), (31, 32)])
def test_dh_public_values(group: int, size: int) -> None:
    assert len(dh.public_value(group)) == size


def test_modp_primes_match_rfc_3526_ends() -> None:
    # Every MODP prime starts and ends with 64 one bits; group 14 begins FFFF...C90FDAA2.
    for group in (2, 5, 14, 15, 16):
        prime = dh.modp_prime(group)
        assert prime & (2**64 - 1) == 2**64 - 1
        assert prime >> (prime.bit_length() - 64) == 2**64 - 1
    assert hex(dh.modp_prime(14))[2:26] == "ffffffffffffffffc90fdaa2"


# -- L2TP ---------------------------------------------------------------------------------------


def test_l2tp_sccrp_from_xl2tpd() -> None:
    _, response = recorded("l2tp_sccrp")
    msg = l2tp.decode(response)
    assert isinstance(msg, l2tp.ControlMessage)
    assert msg.name == "SCCRP"
    assert msg.tunnel_id == 4242  # addressed to the tunnel id our SCCRQ assigned
    assert (msg.ns, msg.nr) == (0, 1)
    assert msg.u16(l2tp.ASSIGNED_TUNNEL_ID)
    assert msg.text(l2tp.VENDOR_NAME) == "xelerance.com"
    assert msg.avp(l2tp.PROTOCOL_VERSION) is not None


def test_l2tp_control_round_trip() -> None:
    out = l2tp.control(
        l2tp.STOPCCN, 7, 0, l2tp.u16(l2tp.ASSIGNED_TUNNEL_ID, 9),
        l2tp.Avp(l2tp.RESULT_CODE, b"\x00\x02\x00\x06oops"),
    )  # fmt: skip
    msg = l2tp.decode(out.encode(3, 4))
    assert isinstance(msg, l2tp.ControlMessage)
    assert (msg.tunnel_id, msg.ns, msg.nr, msg.name) == (7, 3, 4, "StopCCN")
    assert msg.result_code() == l2tp.ResultCode(2, 6, "oops")


def test_l2tp_zlb_and_data() -> None:
    zlb = l2tp.decode(l2tp.zlb(5, 1, 2))
    assert isinstance(zlb, l2tp.ControlMessage) and zlb.zlb and zlb.name == "ZLB"
    data = l2tp.decode(l2tp.encode_data(5, 6, b"\xff\x03\xc0\x21"))
    assert data == l2tp.DataMessage(5, 6, b"\xff\x03\xc0\x21")
    # With length, sequence and offset fields, as some LNSs send data.
    flags = l2tp.FLAG_LENGTH | l2tp.FLAG_SEQUENCE | l2tp.FLAG_OFFSET | 2
    body = struct.pack("!HHHHHHH", flags, 18, 5, 6, 0, 0, 2) + b"\0\0" + b"\xc0\x21"
    assert l2tp.decode(body) == l2tp.DataMessage(5, 6, b"\xc0\x21")


def test_l2tp_decoder_rejects_garbage() -> None:
    with pytest.raises(l2tp.L2tpDecodeError):
        l2tp.decode(b"\xc8\x03\0\x0c")  # version 3
    with pytest.raises(l2tp.L2tpDecodeError):
        l2tp.decode(struct.pack("!HHHHHH", l2tp.CONTROL_FLAGS, 20, 1, 0, 0, 0) + b"\x80\x30")


def test_sequence_space_wraps() -> None:
    assert l2tp.seq_after(1, 0) and l2tp.seq_after(0, 0xFFFF) and not l2tp.seq_after(0, 1)


# -- PPP ----------------------------------------------------------------------------------------


def test_ppp_frames() -> None:
    frame = ppp.encode_frame(ppp.LCP, ppp.Packet(1, 2, b"\x05\x06abcd").encode())
    assert frame[:4] == b"\xff\x03\xc0\x21"
    protocol, payload = ppp.decode_frame(frame)
    assert protocol == ppp.LCP
    assert ppp.Packet.decode(payload) == ppp.Packet(1, 2, b"\x05\x06abcd")
    assert ppp.decode_options(b"\x05\x06abcd") == [(5, b"abcd")]
    # Address/control and protocol field compressed (ACFC + PFC).
    assert ppp.decode_frame(b"\x21\x45") == (0x21, b"\x45")
    with pytest.raises(ppp.PppDecodeError):
        ppp.decode_options(b"\x05\x09ab")
