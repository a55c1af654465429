"""The client side of one PPP session: LCP, authentication, IPCP, LCP echo.

Deliberately a small subset of RFC 1661's automaton: the probe only needs to reach
"network layer up" once, answer what a server asks along the way, and say where it stopped.
Frames that belong to a later phase (a CHAP challenge racing the last LCP ack) are kept
for that phase.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from exporter.probes import mschapv2
from exporter.probes import ppp as p
from exporter.probes.config import PppAuth

#: Seconds between retransmissions of a Configure-Request / PAP request.
RESTART_INTERVAL = 1.0
#: An auth protocol option value for each method, as carried in LCP.
AUTH_OPTIONS: dict[PppAuth, bytes] = {
    "mschapv2": struct.pack("!HB", p.CHAP, p.CHAP_MSCHAPV2),
    "chap_md5": struct.pack("!HB", p.CHAP, p.CHAP_MD5),
    "pap": struct.pack("!H", p.PAP),
}
_METHOD_BY_OPTION = {v: k for k, v in AUTH_OPTIONS.items()}
#: LCP options the probe acks; others (e.g. callback, multilink) it rejects.
_LCP_KNOWN = (p.MRU, p.ACCM, p.AUTH_PROTOCOL, p.MAGIC_NUMBER, p.PFC, p.ACFC)


class PppLink(Protocol):
    def send_ppp(self, frame: bytes) -> None: ...

    async def receive_ppp(self, timeout: float) -> bytes: ...


class PppError(Exception):
    """A PPP phase failed; the message is safe to log."""


@dataclass
class _Negotiation:
    """Where one Configure-Request exchange stands, in each direction."""

    acked: bool = False  # the server acked our request
    acking: bool = False  # we acked the server's request
    request_id: int = 0


@dataclass
class PppResult:
    auth_method: str = ""
    local_address: str = ""
    peer_address: str = ""
    dns: list[str] = field(default_factory=list)
    mru: int = 1500
    echo_rtt: float | None = None


class PppClient:
    def __init__(
        self,
        link: PppLink,
        username: str,
        password: str,
        methods: tuple[PppAuth, ...],
    ) -> None:
        self.link = link
        self.username = username
        self._password = password
        self.methods = methods
        self.magic = secrets.randbits(32) or 1
        self.result = PppResult()
        self._auth: PppAuth | None = None
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()
        #: Frames stashed during the current phase; handed to the next one when it ends.
        self._later: list[tuple[int, bytes]] = []
        self._ids = iter(range(1, 1 << 30))
        self._lcp_acked_theirs = False
        #: An auth method the server asked for and we declined (Nak): when LCP then opens
        #: without authentication, the server is about to hang up on us.
        self._refused_auth = ""

    # -- plumbing ------------------------------------------------------------------------------

    def _id(self) -> int:
        return next(self._ids) & 0xFF

    def send(self, protocol: int, packet: p.Packet) -> None:
        self.link.send_ppp(p.encode_frame(protocol, packet.encode()))

    def _stash(self, protocol: int, payload: bytes) -> None:
        self._later.append((protocol, payload))

    def _end_phase(self) -> None:
        self._pending.extend(self._later)
        self._later.clear()

    async def _frame(self, until: float) -> tuple[int, bytes]:
        """The next frame: kept ones first. TimeoutError when `until` passes."""
        if self._pending:
            return self._pending.popleft()
        left = until - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError
        return p.decode_frame(await self.link.receive_ppp(left))

    def _common(self, protocol: int, payload: bytes) -> bool:
        """Handle what any phase must answer; True when the frame was consumed."""
        if protocol == p.LCP:
            pkt = p.Packet.decode(payload)
            if pkt.code == p.ECHO_REQ:
                self.send(
                    p.LCP, p.Packet(p.ECHO_REP, pkt.identifier, struct.pack("!I", self.magic))
                )
                return True
            if pkt.code == p.TERM_REQ:
                self.send(p.LCP, p.Packet(p.TERM_ACK, pkt.identifier))
                reason = pkt.data.decode("utf-8", errors="replace")
                raise PppError(f"the server terminated the link{': ' + reason if reason else ''}")
            if pkt.code in (p.DISCARD_REQ, p.ECHO_REP, p.CODE_REJ, p.PROTO_REJ, p.TERM_ACK):
                return True
        return False

    def _reject_protocol(self, protocol: int, payload: bytes) -> None:
        """LCP Protocol-Reject (RFC 1661 §5.7): e.g. CCP or IPV6CP, which the probe skips."""
        data = struct.pack("!H", protocol) + payload[:1400]
        self.send(p.LCP, p.Packet(p.PROTO_REJ, self._id(), data))

    async def _retrying(
        self, until: float, send: Callable[[], None], handle: Callable[[int, bytes], bool]
    ) -> None:
        """Call `send` now and every RESTART_INTERVAL until `handle` says done."""
        loop = asyncio.get_running_loop()
        send()
        resend_at = loop.time() + RESTART_INTERVAL
        try:
            await self._exchange(until, send, handle, resend_at)
        finally:
            self._end_phase()

    async def _exchange(
        self,
        until: float,
        send: Callable[[], None],
        handle: Callable[[int, bytes], bool],
        resend_at: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                protocol, payload = await self._frame(min(until, resend_at))
            except TimeoutError:
                if loop.time() >= until:
                    raise
                send()
                resend_at = loop.time() + RESTART_INTERVAL
                continue
            try:
                if self._common(protocol, payload):
                    continue
                if handle(protocol, payload):
                    return
            except p.PppDecodeError:
                continue

    # -- LCP -------------------------------------------------------------------------------------

    async def lcp(self, until: float) -> None:
        ours: list[p.Option] = [(p.MAGIC_NUMBER, struct.pack("!I", self.magic))]
        state = _Negotiation()

        def send() -> None:
            if not state.acked:
                state.request_id = self._id()
                payload = p.encode_options(ours)
                self.send(p.LCP, p.Packet(p.CONF_REQ, state.request_id, payload))

        def handle(protocol: int, payload: bytes) -> bool:
            if protocol != p.LCP:
                self._stash(protocol, payload)
                return False
            pkt = p.Packet.decode(payload)
            if pkt.code == p.CONF_REQ:
                self._answer_lcp_request(pkt)
                state.acking = self._lcp_acked_theirs
            elif pkt.code == p.CONF_ACK and pkt.identifier == state.request_id:
                state.acked = True
            elif pkt.code == p.CONF_NAK and pkt.identifier == state.request_id:
                for kind, value in p.decode_options(pkt.data):
                    if kind == p.MAGIC_NUMBER:  # a looped-back link or a clash: new magic
                        self.magic = secrets.randbits(32) or 1
                        value = struct.pack("!I", self.magic)
                    ours[:] = [(k, value if k == kind else v) for k, v in ours]
                send()
            elif pkt.code == p.CONF_REJ and pkt.identifier == state.request_id:
                rejected = {k for k, _ in p.decode_options(pkt.data)}
                ours[:] = [(k, v) for k, v in ours if k not in rejected]
                send()
            return state.acked and state.acking

        self._lcp_acked_theirs = False
        await self._retrying(until, send, handle)
        if self._auth is not None and self._auth not in self.methods:
            raise PppError(f"the server insists on {self._auth}, which the module does not allow")

    def _answer_lcp_request(self, pkt: p.Packet) -> None:
        options = p.decode_options(pkt.data)
        reject = [(k, v) for k, v in options if k not in _LCP_KNOWN]
        if reject:
            self.send(p.LCP, p.Packet(p.CONF_REJ, pkt.identifier, p.encode_options(reject)))
            return
        for kind, value in options:
            if kind == p.AUTH_PROTOCOL:
                method = _METHOD_BY_OPTION.get(value)
                if method is None or method not in self.methods:
                    self._refused_auth = method or f"protocol 0x{value.hex()}"
                    if not self.methods:
                        raise PppError("the server requires authentication, none allowed")
                    nak = [(p.AUTH_PROTOCOL, AUTH_OPTIONS[self.methods[0]])]
                    self.send(p.LCP, p.Packet(p.CONF_NAK, pkt.identifier, p.encode_options(nak)))
                    return
        self._auth = None
        for kind, value in options:
            if kind == p.AUTH_PROTOCOL:
                self._auth = _METHOD_BY_OPTION[value]
            elif kind == p.MRU and len(value) == 2:
                self.result.mru = struct.unpack("!H", value)[0]
        self.send(p.LCP, p.Packet(p.CONF_ACK, pkt.identifier, pkt.data))
        self._lcp_acked_theirs = True

    # -- authentication ------------------------------------------------------------------------

    async def authenticate(self, until: float) -> str:
        """Authenticate as negotiated in LCP; returns the method ("none" if not asked)."""
        method = self._auth
        self.result.auth_method = method or "none"
        if method is None and self._refused_auth:
            raise PppError(
                f"the server asked for {self._refused_auth}, which the module does not allow"
            )
        if method is None:
            return "none"
        if method == "pap":
            await self._pap(until)
        else:
            try:
                await self._chap(until, method)
            finally:
                self._end_phase()
        return method

    async def _pap(self, until: float) -> None:
        user, password = self.username.encode(), self._password.encode()
        data = bytes([len(user)]) + user + bytes([len(password)]) + password
        ident = self._id()
        outcome: list[bool] = []

        def send() -> None:
            self.send(p.PAP, p.Packet(p.PAP_REQUEST, ident, data))

        def handle(protocol: int, payload: bytes) -> bool:
            if protocol != p.PAP:
                return self._stash_or_reject(protocol, payload)
            pkt = p.Packet.decode(payload)
            if pkt.code in (p.PAP_ACK, p.PAP_NAK):
                outcome.append(pkt.code == p.PAP_ACK)
                return True
            return False

        await self._retrying(until, send, handle)
        if not outcome[0]:
            raise PppError("PAP: the server refused the credentials")

    async def _chap(self, until: float, method: PppAuth) -> None:
        expected_s = ""
        answered: dict[int, p.Packet] = {}
        while True:
            protocol, payload = await self._frame(until)
            try:
                if self._common(protocol, payload):
                    continue
                if protocol != p.CHAP:
                    self._stash_or_reject(protocol, payload)
                    continue
                pkt = p.Packet.decode(payload)
            except p.PppDecodeError:
                continue
            if pkt.code == p.CHAP_CHALLENGE:
                if pkt.identifier not in answered:
                    response, expected_s = self._chap_response(pkt, method)
                    answered[pkt.identifier] = response
                self.send(p.CHAP, answered[pkt.identifier])  # a resent challenge: same answer
            elif pkt.code == p.CHAP_SUCCESS:
                if method == "mschapv2" and not mschapv2.verify_authenticator_response(
                    expected_s, pkt.data
                ):
                    raise PppError("MS-CHAPv2: the server's authenticator response is wrong")
                return
            elif pkt.code == p.CHAP_FAILURE:
                message = pkt.data.decode("utf-8", errors="replace")
                raise PppError(f"{method}: the server refused the credentials ({message})")

    def _chap_response(self, challenge: p.Packet, method: PppAuth) -> tuple[p.Packet, str]:
        if not challenge.data:
            raise PppError("CHAP challenge without a value")
        size = challenge.data[0]
        value = challenge.data[1 : 1 + size]
        name = self.username.encode()
        if method == "chap_md5":
            digest = mschapv2.chap_md5_response(challenge.identifier, self._password, value)
            return p.Packet(p.CHAP_RESPONSE, challenge.identifier, bytes([16]) + digest + name), ""
        if len(value) != 16:
            raise PppError(f"MS-CHAPv2 challenge of {len(value)} bytes, expected 16")
        peer_challenge = secrets.token_bytes(16)
        nt = mschapv2.nt_response(value, peer_challenge, self.username, self._password)
        expected = mschapv2.authenticator_response(
            self._password, nt, peer_challenge, value, self.username
        )
        body = peer_challenge + bytes(8) + nt + b"\0"  # RFC 2759 §4: 49 bytes
        return p.Packet(p.CHAP_RESPONSE, challenge.identifier, bytes([49]) + body + name), expected

    def _stash_or_reject(self, protocol: int, payload: bytes) -> bool:
        if protocol == p.IPCP:
            self._stash(protocol, payload)
        elif protocol not in (p.LCP, p.CHAP, p.PAP, p.IP):
            self._reject_protocol(protocol, payload)
        return False

    # -- IPCP ------------------------------------------------------------------------------------

    async def ipcp(self, until: float) -> PppResult:
        zero = bytes(4)
        ours: list[p.Option] = [(p.IP_ADDRESS, zero), (p.PRIMARY_DNS, zero),
                                (p.SECONDARY_DNS, zero)]  # fmt: skip
        state = _Negotiation()

        def send() -> None:
            if not state.acked:
                state.request_id = self._id()
                payload = p.encode_options(ours)
                self.send(p.IPCP, p.Packet(p.CONF_REQ, state.request_id, payload))

        def handle(protocol: int, payload: bytes) -> bool:
            if protocol != p.IPCP:
                if protocol not in (p.LCP, p.CHAP, p.PAP, p.IP):
                    self._reject_protocol(protocol, payload)
                return False
            pkt = p.Packet.decode(payload)
            if pkt.code == p.CONF_REQ:
                state.acking = self._answer_ipcp_request(pkt)
            elif pkt.code == p.CONF_ACK and pkt.identifier == state.request_id:
                state.acked = True
                for kind, value in p.decode_options(pkt.data):
                    self._take_ipcp(kind, value)
            elif pkt.code == p.CONF_NAK and pkt.identifier == state.request_id:
                naked = dict(p.decode_options(pkt.data))
                ours[:] = [(k, naked.get(k, v)) for k, v in ours]
                send()
            elif pkt.code == p.CONF_REJ and pkt.identifier == state.request_id:
                rejected = {k for k, _ in p.decode_options(pkt.data)}
                if p.IP_ADDRESS in rejected:
                    raise PppError("IPCP: the server rejected the IP-Address option")
                ours[:] = [(k, v) for k, v in ours if k not in rejected]
                send()
            elif pkt.code == p.TERM_REQ:
                self.send(p.IPCP, p.Packet(p.TERM_ACK, pkt.identifier))
                raise PppError("IPCP: the server terminated the network layer")
            return state.acked and state.acking

        await self._retrying(until, send, handle)
        if not self.result.local_address or self.result.local_address == "0.0.0.0":
            raise PppError("IPCP finished without an address for us")
        return self.result

    def _take_ipcp(self, kind: int, value: bytes) -> None:
        if len(value) != 4:
            return
        address = str(ipaddress.IPv4Address(value))
        if kind == p.IP_ADDRESS:
            self.result.local_address = address
        elif kind in (p.PRIMARY_DNS, p.SECONDARY_DNS):
            self.result.dns.append(address)

    def _answer_ipcp_request(self, pkt: p.Packet) -> bool:
        options = p.decode_options(pkt.data)
        reject = [(k, v) for k, v in options if k != p.IP_ADDRESS]  # e.g. VJ compression
        if reject:
            self.send(p.IPCP, p.Packet(p.CONF_REJ, pkt.identifier, p.encode_options(reject)))
            return False
        for _kind, value in options:
            if len(value) == 4:
                self.result.peer_address = str(ipaddress.IPv4Address(value))
        self.send(p.IPCP, p.Packet(p.CONF_ACK, pkt.identifier, pkt.data))
        return True

    # -- after the session is up -----------------------------------------------------------------

    async def echo(self, until: float) -> float:
        """One LCP Echo-Request → Echo-Reply round trip, in seconds."""
        loop = asyncio.get_running_loop()
        ident = self._id()
        start = loop.time()
        self.send(p.LCP, p.Packet(p.ECHO_REQ, ident, struct.pack("!I", self.magic) + b"probe"))
        while True:
            protocol, payload = await self._frame(until)
            if protocol != p.LCP:
                continue  # e.g. IP the server sends at once: not ours to answer
            try:
                pkt = p.Packet.decode(payload)
                if pkt.code == p.ECHO_REP and pkt.identifier == ident:
                    self.result.echo_rtt = loop.time() - start
                    return self.result.echo_rtt
                self._common(protocol, payload)
            except p.PppDecodeError:
                continue

    async def terminate(self, wait: float = 0.5) -> None:
        """LCP Terminate-Request; a short wait for the ack (the L2TP CDN follows anyway)."""
        ident = self._id()
        self.send(p.LCP, p.Packet(p.TERM_REQ, ident, b"probe done"))
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while True:
            try:
                protocol, payload = await self._frame(until)
            except Exception:  # timeout, or the L2TP session already gone
                return
            if protocol == p.LCP and payload[:1] == bytes([p.TERM_ACK]):
                return
