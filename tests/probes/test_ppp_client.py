"""The PPP client against a scripted server speaking from the server's side of RFC 1661,
RFC 1994 and RFC 2759 (the genuine pppd is in test_login_vmlab.py)."""

from __future__ import annotations

import asyncio
import struct

import pytest

from exporter.probes import mschapv2
from exporter.probes import ppp as p
from exporter.probes.config import PppAuth
from exporter.probes.ppp_client import PppClient, PppError

AUTH_CHALLENGE = bytes(range(16))


class FakeServer:
    """An LNS-side PPP peer: asks for `auth`, checks the password, assigns 10.0.0.7."""

    def __init__(self, auth: PppAuth, password: str = "secret", forge: bool = False) -> None:
        self.auth = auth
        self.password = password
        self.forge = forge  # send a wrong MS-CHAPv2 authenticator response
        self.to_client: asyncio.Queue[bytes] = asyncio.Queue()
        self.seen: list[tuple[int, int]] = []

    # -- PppLink ---------------------------------------------------------------------------------

    def send_ppp(self, frame: bytes) -> None:
        protocol, payload = p.decode_frame(frame)
        pkt = p.Packet.decode(payload)
        self.seen.append((protocol, pkt.code))
        getattr(self, f"_on_{protocol:04x}")(pkt)

    async def receive_ppp(self, timeout: float) -> bytes:
        async with asyncio.timeout(timeout):
            return await self.to_client.get()

    # -- server side -----------------------------------------------------------------------------

    def _send(self, protocol: int, pkt: p.Packet) -> None:
        self.to_client.put_nowait(p.encode_frame(protocol, pkt.encode()))

    def start(self) -> None:
        auth = {"mschapv2": b"\xc2\x23\x81", "chap_md5": b"\xc2\x23\x05", "pap": b"\xc0\x23"}
        options = [(p.AUTH_PROTOCOL, auth[self.auth]), (p.MAGIC_NUMBER, b"\x11\x22\x33\x44"),
                   (p.MRU, struct.pack("!H", 1280))]  # fmt: skip
        self._send(p.LCP, p.Packet(p.CONF_REQ, 1, p.encode_options(options)))
        # Something the probe does not speak: it must answer with Protocol-Reject.
        self.to_client.put_nowait(p.encode_frame(0x80FD, p.Packet(1, 1).encode()))

    def _on_c021(self, pkt: p.Packet) -> None:  # LCP
        if pkt.code == p.CONF_REQ:
            self._send(p.LCP, p.Packet(p.CONF_ACK, pkt.identifier, pkt.data))
        elif pkt.code == p.CONF_ACK and self.auth != "pap":
            self._send(p.CHAP, p.Packet(p.CHAP_CHALLENGE, 9, b"\x10" + AUTH_CHALLENGE + b"lns"))
        elif pkt.code == p.CONF_NAK:
            self.auth = "chap_md5"  # a server that allows what the client asks for
            self.start()
        elif pkt.code == p.ECHO_REQ:
            self._send(p.LCP, p.Packet(p.ECHO_REP, pkt.identifier, b"\x11\x22\x33\x44"))
        elif pkt.code == p.TERM_REQ:
            self._send(p.LCP, p.Packet(p.TERM_ACK, pkt.identifier))

    def _on_c223(self, pkt: p.Packet) -> None:  # CHAP response
        value = pkt.data[1 : 1 + pkt.data[0]]
        name = pkt.data[1 + pkt.data[0] :].decode()
        if self.auth == "chap_md5":
            ok = value == mschapv2.chap_md5_response(pkt.identifier, self.password, AUTH_CHALLENGE)
            message = b"Welcome"
        else:
            peer_challenge, nt = value[:16], value[24:48]
            ok = nt == mschapv2.nt_response(AUTH_CHALLENGE, peer_challenge, name, self.password)
            s = mschapv2.authenticator_response(
                self.password, nt, peer_challenge, AUTH_CHALLENGE, name
            )
            message = (("S=" + "0" * 40) if self.forge else s).encode() + b" M=Access granted"
        if ok:
            self._send(p.CHAP, p.Packet(p.CHAP_SUCCESS, pkt.identifier, message))
            self._send(p.IPCP, p.Packet(p.CONF_REQ, 1, p.encode_options([(3, b"\x0a\0\0\x01")])))
        else:
            self._send(p.CHAP, p.Packet(p.CHAP_FAILURE, pkt.identifier, b"E=691 R=0 V=3"))

    def _on_c023(self, pkt: p.Packet) -> None:  # PAP
        n = pkt.data[0]
        ok = pkt.data[2 + n :].decode() == self.password
        self._send(p.PAP, p.Packet(p.PAP_ACK if ok else p.PAP_NAK, pkt.identifier, b"\0"))
        self._send(p.IPCP, p.Packet(p.CONF_REQ, 1, p.encode_options([(3, b"\x0a\0\0\x01")])))

    def _on_8021(self, pkt: p.Packet) -> None:  # IPCP
        if pkt.code != p.CONF_REQ:
            return
        options = dict(p.decode_options(pkt.data))
        if p.SECONDARY_DNS in options:
            self._send(p.IPCP, p.Packet(p.CONF_REJ, pkt.identifier, b"\x83\x06\0\0\0\0"))
        elif options.get(p.IP_ADDRESS) == b"\0\0\0\0":
            nak = p.encode_options([(3, b"\x0a\0\0\x07"), (129, b"\x0a\0\0\x35")])
            self._send(p.IPCP, p.Packet(p.CONF_NAK, pkt.identifier, nak))
        else:
            self._send(p.IPCP, p.Packet(p.CONF_ACK, pkt.identifier, pkt.data))


async def login(server: FakeServer, password: str, methods: tuple[PppAuth, ...]) -> PppClient:
    client = PppClient(server, "user", password, methods)
    until = asyncio.get_running_loop().time() + 5
    server.start()
    await client.lcp(until)
    await client.authenticate(until)
    await client.ipcp(until)
    await client.echo(until)
    await client.terminate(0.1)
    return client


@pytest.mark.parametrize("auth", ["mschapv2", "chap_md5", "pap"])
async def test_login(auth: PppAuth) -> None:
    server = FakeServer(auth)
    client = await login(server, "secret", ("mschapv2", "chap_md5", "pap"))
    result = client.result
    assert result.auth_method == auth
    assert (result.local_address, result.peer_address) == ("10.0.0.7", "10.0.0.1")
    assert result.dns == ["10.0.0.53"]
    assert result.mru == 1280
    assert result.echo_rtt is not None
    assert (p.LCP, p.PROTO_REJ) in server.seen  # CCP was refused politely


async def test_nak_steers_to_an_allowed_method() -> None:
    server = FakeServer("mschapv2")
    client = await login(server, "secret", ("chap_md5",))
    assert client.result.auth_method == "chap_md5"
    assert (p.LCP, p.CONF_NAK) in server.seen


@pytest.mark.parametrize("auth", ["mschapv2", "chap_md5"])
async def test_wrong_password(auth: PppAuth) -> None:
    with pytest.raises(PppError, match="refused the credentials"):
        await login(FakeServer(auth), "wrong", (auth,))


async def test_forged_authenticator_response_is_caught() -> None:
    with pytest.raises(PppError, match="authenticator response is wrong"):
        await login(FakeServer("mschapv2", forge=True), "secret", ("mschapv2",))


async def test_silent_server_times_out() -> None:
    server = FakeServer("pap")
    server.send_ppp = lambda frame: None  # type: ignore[method-assign]
    client = PppClient(server, "user", "secret", ("pap",))
    with pytest.raises(TimeoutError):
        await client.lcp(asyncio.get_running_loop().time() + 0.3)
