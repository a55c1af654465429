"""The `login` prober: a user's whole journey, as a Windows or macOS client would make it.

charon (over VICI) brings up IKE and the CHILD SA that protects UDP/1701; this process then
speaks L2TP and PPP itself over a UDP socket whose packets the kernel's IPsec policy (or
kernel-libipsec's TUN route, in tunnel mode) sends through that SA. Each phase is timed;
the first that fails is reported. Teardown — LCP terminate, CDN, StopCCN, terminate,
unload-conn, unload-shared — always runs, shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from exporter.probes.base import (
    Phases,
    ProbeFailure,
    Target,
    gauge,
    info_gauge,
    ip_protocol,
    resolve,
    run_guarded,
)
from exporter.probes.charon_session import CharonSession
from exporter.probes.config import LoginOptions, Module
from exporter.probes.l2tp import record_peer
from exporter.probes.l2tp_control import L2tpError, L2tpTunnel
from exporter.probes.ppp_client import PppClient, PppError
from exporter.probes.udp import UdpEndpoint
from exporter.vici import ViciError

PHASES = (
    "resolve",
    "load",
    "ike",
    "child",
    "l2tp_tunnel",
    "l2tp_session",
    "ppp_lcp",
    "ppp_auth",
    "ppp_ipcp",
    "ppp_echo",
    "teardown",
)
#: Teardown's own budget, used even when the probe's deadline has passed.
TEARDOWN_TIMEOUT = 10.0
#: One login per local L2TP port at a time: two sockets cannot both own UDP/1701.
_PORT_LOCKS: dict[int, asyncio.Lock] = {}


class _Journey:
    """The state one login carries from phase to phase, and its teardown."""

    def __init__(
        self,
        opts: LoginOptions,
        registry: CollectorRegistry,
        log: logging.Logger,
        phases: Phases,
        deadline: float,
    ) -> None:
        self.opts = opts
        self.registry = registry
        self.log = log
        self.phases = phases
        self.deadline = deadline
        self.name = f"probe-login-{secrets.token_hex(4)}"
        self.charon: CharonSession | None = None
        self.tunnel: L2tpTunnel | None = None
        self.ppp: PppClient | None = None
        self.vips: list[str] = []

    def _left(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    async def run(self, target: Target) -> bool:
        opts = self.opts
        with self.phases("resolve"):
            address = await resolve(target, opts.preferred_ip_protocol)
        gauge(self.registry, "probe_ip_protocol", "IP version of the address", ip_protocol(address))
        async with asyncio.timeout_at(self.deadline):
            await self._ipsec(address)
            local_ip = await self._virtual_ip()
            await self._l2tp(opts.l2tp_server or address, local_ip)
            await self._ppp()
        return True

    async def _ipsec(self, address: str) -> None:
        opts = self.opts
        with self.phases("load"):
            self.charon = CharonSession(opts.vici_socket, self.name)
            try:
                await self.charon.open()
                await self.charon.load(opts, address)
            except ViciError as err:
                raise ProbeFailure(f"charon: {err}") from None
        start = time.monotonic()
        with self.phases("ike"):
            try:
                await self.charon.initiate(self._left())
                failure = ""
            except ViciError as err:
                failure = str(err)
            updown = self.charon.updown
            ike_up = updown.ike_up
            if ike_up is None and not failure:
                ike_up = time.monotonic()  # the event was late; initiate's return is the bound
            if ike_up is None:
                self._log_charon(updown.messages)
                raise ProbeFailure(f"IKE SA not established: {failure or 'no up event'}")
        self.phases.set_duration("ike", ike_up - start)
        with self.phases("child"):
            if failure:
                self._log_charon(updown.messages)
                raise ProbeFailure(f"CHILD SA not established: {failure}")
        child_up = updown.child_up or time.monotonic()
        self.phases.set_duration("child", child_up - ike_up)
        await self._record_sa()

    def _log_charon(self, messages: list[str]) -> None:
        for message in messages[-8:]:
            self.log.debug("charon", extra={"charon": message})

    async def _record_sa(self) -> None:
        assert self.charon is not None
        try:
            sa = await self.charon.ike_sa()
        except (ViciError, TimeoutError):
            return
        if not sa:
            return
        info_gauge(
            self.registry,
            "probe_login_ike_proposal_info",
            "The IKE SA's negotiated algorithms",
            version=str(sa.get("version", "")),
            encryption=f"{sa.get('encr-alg', '')}{sa.get('encr-keysize', '')}",
            integrity=str(sa.get("integ-alg", "")),
            prf=str(sa.get("prf-alg", "")),
            dh_group=str(sa.get("dh-group", "")),
        )
        for child in (sa.get("child-sas") or {}).values():
            info_gauge(
                self.registry,
                "probe_login_child_sa_info",
                "The CHILD SA protecting L2TP",
                mode=str(child.get("mode", "")),
                protocol=str(child.get("protocol", "")),
                encap=str(child.get("encap", "no")),
                encryption=f"{child.get('encr-alg', '')}{child.get('encr-keysize', '')}",
                integrity=str(child.get("integ-alg", "")),
            )
            break
        self.vips = [str(v) for v in sa.get("local-vips") or []]

    async def _virtual_ip(self) -> str:
        vips = self.vips
        if self.opts.vips and not vips:
            raise ProbeFailure("no virtual IP assigned by the server")
        if vips:
            info_gauge(
                self.registry,
                "probe_login_virtual_ip_info",
                "The inner address IKE mode config assigned",
                address=vips[0],
            )
            return str(vips[0])
        return "0.0.0.0"

    async def _l2tp(self, server: str, local_ip: str) -> None:
        opts = self.opts
        with self.phases("l2tp_tunnel"):
            try:
                endpoint = await UdpEndpoint.open(
                    (server, opts.l2tp_port), local=(local_ip, opts.local_port)
                )
            except OSError as err:
                raise ProbeFailure(f"cannot open the L2TP socket: {err.strerror}") from None
            self.tunnel = L2tpTunnel(endpoint, opts.host_name)
            self.tunnel.start()
            try:
                sccrp = await self.tunnel.connect()
            except L2tpError as err:
                raise ProbeFailure(f"L2TP tunnel: {err}") from None
            record_peer(self.registry, "probe_login_l2tp", sccrp)
        with self.phases("l2tp_session"):
            try:
                await self.tunnel.open_session()
            except L2tpError as err:
                raise ProbeFailure(f"L2TP session: {err}") from None

    async def _ppp(self) -> None:
        opts = self.opts
        assert self.tunnel is not None and opts.password is not None
        ppp = self.ppp = PppClient(self.tunnel, opts.username, opts.password.reveal(), opts.auth)
        loop = asyncio.get_running_loop()
        steps: list[tuple[str, Callable[[float], Awaitable[object]]]] = [
            ("ppp_lcp", ppp.lcp),
            ("ppp_auth", ppp.authenticate),
            ("ppp_ipcp", ppp.ipcp),
        ]
        if opts.lcp_echo:
            steps.append(("ppp_echo", ppp.echo))
        for phase, step in steps:
            with self.phases(phase):
                try:
                    await step(self.deadline)
                except (PppError, L2tpError) as err:
                    raise ProbeFailure(f"{phase}: {err}") from None
                except TimeoutError:
                    if loop.time() < self.deadline:
                        raise ProbeFailure(f"{phase}: no answer") from None
                    raise
        result = ppp.result
        info_gauge(
            self.registry,
            "probe_login_ppp_auth_info",
            "The PPP authentication method used",
            method=result.auth_method,
        )
        info_gauge(
            self.registry,
            "probe_login_ppp_address_info",
            "The inner addresses IPCP assigned: ours and the server's",
            local=result.local_address,
            peer=result.peer_address,
        )
        if result.echo_rtt is not None:
            gauge(
                self.registry,
                "probe_login_lcp_echo_rtt_seconds",
                "LCP echo round trip through the tunnel",
                result.echo_rtt,
            )
        self.log.debug(
            "login complete",
            extra={"address": result.local_address, "peer": result.peer_address},
        )

    async def teardown(self) -> None:
        """Undo everything that was set up; never raises, bounded by TEARDOWN_TIMEOUT."""
        with self.phases("teardown"):
            clean = True
            try:
                async with asyncio.timeout(TEARDOWN_TIMEOUT):
                    if self.ppp is not None and not (self.tunnel and self.tunnel.closed_by_peer):
                        await self.ppp.terminate()
                    if self.tunnel is not None:
                        await self.tunnel.close()
                        await self.tunnel.stop()
                    if self.charon is not None:
                        clean = await self.charon.cleanup()
            except Exception as err:  # teardown must finish whatever broke
                self.log.warning("teardown incomplete", extra={"err": str(err)})
                clean = False
            gauge(
                self.registry,
                "probe_login_teardown_clean",
                "1 if the connection, SAs and secrets were removed from charon",
                1 if clean else 0,
            )
            if not clean:
                self.log.warning("the probe's connection may still be loaded in charon",
                                 extra={"connection": self.name})  # fmt: skip


async def probe(
    target: Target,
    module: Module,
    registry: CollectorRegistry,
    log: logging.Logger,
    deadline: float,
) -> bool:
    opts = module.login
    phases = Phases(registry, PHASES)
    lock = _PORT_LOCKS.setdefault(opts.local_port, asyncio.Lock()) if opts.local_port else None

    async def body() -> bool:
        journey = _Journey(opts, registry, log, phases, deadline)
        try:
            return await journey.run(target)
        finally:
            # A task of its own: a cancelled probe still unloads what it loaded.
            await asyncio.shield(asyncio.ensure_future(journey.teardown()))

    async def locked() -> bool:
        if lock is None:
            return await body()
        try:
            async with asyncio.timeout_at(deadline):
                await lock.acquire()
        except TimeoutError:
            raise ProbeFailure(f"another login holds UDP port {opts.local_port}") from None
        try:
            return await body()
        finally:
            lock.release()

    return await run_guarded(log, phases, locked)
