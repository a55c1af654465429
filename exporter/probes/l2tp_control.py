"""An L2TP LAC's side of one tunnel and one session, over a connected UDP socket.

Reliable delivery as RFC 2661 §5.8 asks, kept small: every received control message is
acknowledged at once (a ZLB, or the next message's Nr), unacknowledged ones are resent
every `retransmit_interval`. Data messages (PPP frames) go to their own queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from exporter.probes import l2tp_packets as p
from exporter.probes.udp import UdpEndpoint


class L2tpError(Exception):
    """The tunnel or session could not be (kept) up; the message says why."""


class L2tpClosed(L2tpError):
    """The peer sent StopCCN or CDN."""


def _closing_reason(msg: p.ControlMessage) -> str:
    rc = msg.result_code()
    if rc is None:
        return f"{msg.name} without a result code"
    table = p.STOPCCN_RESULTS if msg.message_type == p.STOPCCN else p.CDN_RESULTS
    text = table.get(rc.result, f"result {rc.result}")
    extra = f", error {rc.error}" if rc.error else ""
    extra += f": {rc.message}" if rc.message else ""
    return f"{msg.name} (result {rc.result} {text}{extra})"


class L2tpTunnel:
    def __init__(
        self, endpoint: UdpEndpoint, host_name: str, retransmit_interval: float = 1.0
    ) -> None:
        self.endpoint = endpoint
        self.host_name = host_name
        self.interval = retransmit_interval
        self.local_tunnel_id = secrets.randbelow(0xFFFE) + 1
        self.local_session_id = secrets.randbelow(0xFFFE) + 1
        self.peer_tunnel_id = 0
        self.peer_session_id = 0
        self.sccrp: p.ControlMessage | None = None
        self.closed_by_peer: str = ""
        self._ns = 0
        self._nr = 0
        self._unacked: dict[int, p.OutgoingControl] = {}
        self._control: asyncio.Queue[p.ControlMessage] = asyncio.Queue()
        self._data: asyncio.Queue[bytes] = asyncio.Queue()
        self._error: OSError | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- plumbing ------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._reader()),
            asyncio.create_task(self._retransmitter()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.endpoint.close()

    def _send(self, msg: p.OutgoingControl) -> None:
        ns = self._ns
        self._ns = (self._ns + 1) & 0xFFFF
        self._unacked[ns] = msg
        self.endpoint.send(msg.encode(ns, self._nr))

    def _ack(self) -> None:
        self.endpoint.send(p.zlb(self.peer_tunnel_id, self._ns, self._nr))

    async def _reader(self) -> None:
        while True:
            try:
                data = await self.endpoint.receive(3600)
            except OSError as err:  # ICMP unreachable: nothing listens on the port
                self._error = err
                self._wake.set()
                continue
            except TimeoutError:
                continue
            try:
                msg = p.decode(data)
            except p.L2tpDecodeError:
                continue
            if isinstance(msg, p.DataMessage):
                if msg.session_id == self.local_session_id:
                    self._data.put_nowait(msg.payload)
                continue
            # The peer's Nr acknowledges everything we sent before it.
            for ns in list(self._unacked):
                if p.seq_after(msg.nr, ns):
                    del self._unacked[ns]
            if msg.zlb:
                continue
            if msg.message_type == p.SCCRP and not self.peer_tunnel_id:
                # Known before the ack below, so that the ack reaches the right tunnel.
                self.peer_tunnel_id = msg.u16(p.ASSIGNED_TUNNEL_ID) or 0
            if msg.ns != self._nr:
                self._ack()  # a duplicate: our ack was lost, say it again
                continue
            self._nr = (self._nr + 1) & 0xFFFF
            self._ack()
            if msg.message_type in (p.STOPCCN, p.CDN):
                self.closed_by_peer = _closing_reason(msg)
            if msg.message_type != p.HELLO:
                self._control.put_nowait(msg)
            self._wake.set()

    async def _retransmitter(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for ns, msg in sorted(self._unacked.items()):
                self.endpoint.send(msg.encode(ns, self._nr))

    async def _expect(self, kinds: set[int]) -> p.ControlMessage:
        """The next control message, which must be one of `kinds` (or a close)."""
        while True:
            if self._error is not None:
                raise L2tpError(f"UDP error: {self._error.strerror or self._error}")
            if not self._control.empty():
                msg = self._control.get_nowait()
                if msg.message_type in (p.STOPCCN, p.CDN):
                    raise L2tpClosed(self.closed_by_peer)
                if msg.message_type in kinds:
                    return msg
                continue  # something we did not ask for (e.g. WEN/SLI): ignore
            self._wake.clear()
            await self._wake.wait()

    # -- the protocol ----------------------------------------------------------------------------

    async def connect(self) -> p.ControlMessage:
        """SCCRQ → SCCRP, then SCCCN. Returns the SCCRP (host name, vendor, ...)."""
        self._send(
            p.control(
                p.SCCRQ,
                0,
                0,
                p.Avp(p.PROTOCOL_VERSION, b"\x01\x00"),
                p.text(p.HOST_NAME, self.host_name),
                p.u32(p.FRAMING_CAPABILITIES, p.FRAMING_SYNC | p.FRAMING_ASYNC),
                p.u32(p.BEARER_CAPABILITIES, 0),
                p.u16(p.ASSIGNED_TUNNEL_ID, self.local_tunnel_id),
                p.u16(p.RECEIVE_WINDOW_SIZE, 4),
                p.text(p.VENDOR_NAME, "l2tp-ipsec-exporter", mandatory=False),
            )
        )
        sccrp = await self._expect({p.SCCRP})
        peer = self.peer_tunnel_id
        if not peer:
            raise L2tpError("SCCRP without an Assigned Tunnel ID")
        if sccrp.avp(p.CHALLENGE) is not None:
            raise L2tpError("the LNS asks for tunnel authentication (a secret): not supported")
        self.sccrp = sccrp
        self._send(p.control(p.SCCCN, peer, 0))
        return sccrp

    async def open_session(self) -> int:
        """ICRQ → ICRP, then ICCN. Returns the peer's session id."""
        self._send(
            p.control(
                p.ICRQ,
                self.peer_tunnel_id,
                0,
                p.u16(p.ASSIGNED_SESSION_ID, self.local_session_id),
                p.u32(p.CALL_SERIAL_NUMBER, secrets.randbelow(2**31)),
                p.u32(p.BEARER_TYPE, 0),
            )
        )
        icrp = await self._expect({p.ICRP})
        peer = icrp.u16(p.ASSIGNED_SESSION_ID)
        if not peer:
            raise L2tpError("ICRP without an Assigned Session ID")
        self.peer_session_id = peer
        self._send(
            p.control(
                p.ICCN,
                self.peer_tunnel_id,
                peer,
                p.u32(p.TX_CONNECT_SPEED, 100_000_000),
                p.u32(p.FRAMING_TYPE, p.FRAMING_SYNC),
            )
        )
        return peer

    def send_ppp(self, frame: bytes) -> None:
        self.endpoint.send(p.encode_data(self.peer_tunnel_id, self.peer_session_id, frame))

    async def receive_ppp(self, timeout: float) -> bytes:
        """The next PPP frame; L2tpClosed when the peer ends the session or tunnel."""
        async with asyncio.timeout(max(timeout, 0)):
            while True:
                if not self._data.empty():
                    return self._data.get_nowait()
                if self.closed_by_peer:
                    raise L2tpClosed(self.closed_by_peer)
                if self._error is not None:
                    raise L2tpError(f"UDP error: {self._error.strerror or self._error}")
                getter = asyncio.ensure_future(self._data.get())
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    done, _ = await asyncio.wait(
                        {getter, waker}, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    waker.cancel()
                    if not getter.done():
                        getter.cancel()
                if getter in done:
                    return getter.result()
                self._wake.clear()

    async def close(self, timeout: float = 2.0) -> bool:
        """CDN (if a session is up) and StopCCN; True when the peer acknowledged them."""
        if self.closed_by_peer and not self.peer_tunnel_id:
            return True
        if not self.peer_tunnel_id:
            return False
        if self.peer_session_id and not self.closed_by_peer.startswith("StopCCN"):
            self._send(
                p.control(
                    p.CDN,
                    self.peer_tunnel_id,
                    self.peer_session_id,
                    p.Avp(p.RESULT_CODE, b"\x00\x03"),  # administrative reason
                    p.u16(p.ASSIGNED_SESSION_ID, self.local_session_id),
                )
            )
        if not self.closed_by_peer.startswith("StopCCN"):
            self._send(
                p.control(
                    p.STOPCCN,
                    self.peer_tunnel_id,
                    0,
                    p.u16(p.ASSIGNED_TUNNEL_ID, self.local_tunnel_id),
                    p.Avp(p.RESULT_CODE, b"\x00\x01"),  # general request to clear
                )
            )
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while self._unacked and loop.time() < until:
            await asyncio.sleep(0.02)
        return not self._unacked
