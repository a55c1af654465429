"""The `ike` prober: one crafted first message (IKEv2 IKE_SA_INIT or IKEv1 Main Mode 1),
one answer, classified. Stateless for the responder: no SA is ever completed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from exporter.probes import dh, ikev1_packets, ikev2_packets
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
from exporter.probes.config import IkeOptions, Module
from exporter.probes.ike_answer import (
    COOKIE,
    INVALID_KE_PAYLOAD,
    IkeDecodeError,
    IkeResponse,
    Notify,
)
from exporter.probes.proposals import IkeProposal, parse_ike_proposal
from exporter.probes.udp import UdpEndpoint

PHASES = ("resolve", "ike")


@dataclass
class Outcome:
    """What the exchange ended with, before it becomes metrics."""

    answer: str  # proposal_accepted | notify | cookie | timeout | unreachable | malformed
    response: IkeResponse | None = None
    notify: Notify | None = None
    rtt: float | None = None
    exchanges: int = 0
    packets_sent: int = 0


class _Exchange:
    """Builds requests for one IKE version and matches answers to them."""

    def __init__(self, opts: IkeOptions, local: tuple[str, int], remote: tuple[str, int]):
        self.opts = opts
        self.proposals: tuple[IkeProposal, ...] = tuple(
            parse_ike_proposal(p) for p in opts.proposals
        )
        self.spi = secrets.token_bytes(8)
        self.local = local
        self.remote = remote
        self.ke_group = self.proposals[0].groups[0]
        self.cookie = b""
        self.sent = 0

    def request(self) -> bytes:
        if self.opts.version == 1:
            packet = ikev1_packets.encode_main_mode(
                ikev1_packets.MainModeRequest(self.spi, self.proposals, self.opts.ikev1_auth)
            )
        else:
            packet = ikev2_packets.encode_sa_init(
                ikev2_packets.SaInitRequest(
                    spi=self.spi,
                    proposals=self.proposals,
                    ke_group=self.ke_group,
                    ke_data=dh.public_value(self.ke_group),
                    nonce=secrets.token_bytes(32),
                    cookie=self.cookie,
                    addresses=(*self.local, *self.remote),
                )
            )
        # A client behind NAT talks IKE on 4500 with the non-ESP marker (RFC 3948 §2.2).
        return ikev2_packets.NON_ESP_MARKER + packet if self.opts.nat_t else packet

    def decode(self, data: bytes) -> IkeResponse | None:
        """The answer to our request, or None for a datagram that is not one."""
        if self.opts.nat_t:
            if not data.startswith(ikev2_packets.NON_ESP_MARKER):
                return None
            data = data[4:]
        if self.opts.version == 1:
            response = ikev1_packets.decode_response(data)
        else:
            response = ikev2_packets.decode_response(data)
        return response if response.initiator_spi == self.spi else None

    def follow(self, notify: Notify) -> bool:
        """Prepare a retry the responder asked for; False when it cannot be followed."""
        if self.opts.version != 2 or not self.opts.follow_notify:
            return False
        if notify.kind == COOKIE and not self.cookie and notify.data:
            self.cookie = notify.data
            return True
        if notify.kind == INVALID_KE_PAYLOAD and len(notify.data) >= 2:
            group = int.from_bytes(notify.data[:2], "big")
            offered = any(group in p.groups for p in self.proposals)
            if group != self.ke_group and offered and group in dh.SUPPORTED_GROUPS:
                self.ke_group = group
                return True
        return False


def _classify(response: IkeResponse) -> tuple[str, Notify | None]:
    notify = response.error_notify()
    if notify is not None:
        return ("cookie" if notify.kind == COOKIE else "notify"), notify
    if response.accepted is not None:
        return "proposal_accepted", None
    return "malformed", None


async def exchange(opts: IkeOptions, address: str, deadline: float) -> Outcome:
    """Send the first message (retransmitting), follow at most two notifies, classify."""
    loop = asyncio.get_running_loop()
    port = opts.effective_port
    endpoint = await UdpEndpoint.open((address, port))
    outcome = Outcome(answer="timeout")
    ex = _Exchange(opts, endpoint.local_address, (address, port))
    try:
        for _round in range(3):  # first try, then a cookie and/or a new KE group
            outcome.exchanges += 1
            response, rtt = await _round_trip(endpoint, ex, opts.attempts, deadline, loop)
            if response is None:
                return outcome
            outcome.answer, outcome.notify = _classify(response)
            outcome.response, outcome.rtt = response, rtt
            if outcome.notify is None or not ex.follow(outcome.notify):
                return outcome
        return outcome
    except OSError:  # ICMP port/host unreachable on the connected socket
        outcome.answer = "unreachable"
        return outcome
    finally:
        outcome.packets_sent = ex.sent
        endpoint.close()


async def _round_trip(
    endpoint: UdpEndpoint,
    ex: _Exchange,
    attempts: int,
    deadline: float,
    loop: asyncio.AbstractEventLoop,
) -> tuple[IkeResponse | None, float]:
    """Send up to `attempts` times, evenly spread until the deadline; first answer wins."""
    packet = ex.request()
    for attempt in range(attempts):
        left = deadline - loop.time()
        if left <= 0:
            break
        wait = left / (attempts - attempt)
        endpoint.send(packet)
        ex.sent += 1
        start = loop.time()
        until = start + wait
        while (remaining := until - loop.time()) > 0:
            try:
                data = await endpoint.receive(remaining)
            except TimeoutError:
                break
            try:
                response = ex.decode(data)
            except IkeDecodeError:
                continue  # not for us or garbage: keep listening
            if response is not None:
                return response, loop.time() - start
    return None, 0.0


def _record(registry: CollectorRegistry, opts: IkeOptions, outcome: Outcome) -> None:
    gauge(registry, "probe_ike_version", "IKE major version the probe spoke", opts.version)
    gauge(
        registry,
        "probe_ike_reached",
        "1 if the responder answered the first IKE message at all",
        1 if outcome.response is not None else 0,
    )
    info_gauge(
        registry,
        "probe_ike_answer_info",
        "How the responder answered: class and, for a notify, its type",
        answer=outcome.answer,
        notify=outcome.notify.name if outcome.notify else "",
    )
    gauge(
        registry,
        "probe_ike_notify_type",
        "Type number of the error notify the responder sent (0: none)",
        outcome.notify.kind if outcome.notify else 0,
    )
    if outcome.rtt is not None:
        gauge(registry, "probe_ike_rtt_seconds", "Round trip of the answered request", outcome.rtt)
    gauge(
        registry,
        "probe_ike_exchanges",
        "Request/answer rounds (2+ when a COOKIE or INVALID_KE_PAYLOAD was followed)",
        outcome.exchanges,
    )
    gauge(registry, "probe_ike_packets_sent", "Datagrams sent", outcome.packets_sent)
    accepted = outcome.response.accepted if outcome.response else None
    if accepted is not None and outcome.answer == "proposal_accepted":
        info_gauge(
            registry,
            "probe_ike_accepted_proposal_info",
            "The transforms the responder chose",
            encryption=accepted.encryption,
            integrity=accepted.integrity,
            prf=accepted.prf,
            dh_group=accepted.dh_group,
            auth_method=accepted.auth_method,
        )


async def probe(
    target: Target,
    module: Module,
    registry: CollectorRegistry,
    log: logging.Logger,
    deadline: float,
) -> bool:
    opts = module.ike
    phases = Phases(registry, PHASES)

    async def body() -> bool:
        with phases("resolve"):
            address = await resolve(target, opts.preferred_ip_protocol)
        gauge(registry, "probe_ip_protocol", "IP version of the address", ip_protocol(address))
        opts_port = dataclasses.replace(opts, port=target.port) if target.port else opts
        with phases("ike"):
            outcome = await exchange(opts_port, address, deadline)
            _record(registry, opts, outcome)
            log.debug(
                "IKE answer",
                extra={
                    "answer": outcome.answer,
                    "notify": outcome.notify.name if outcome.notify else "",
                    "rtt": outcome.rtt,
                },
            )
            if outcome.answer not in opts.valid_answers:
                detail = f" {outcome.notify.name}" if outcome.notify else ""
                raise ProbeFailure(f"IKE answer {outcome.answer}{detail}")
        return True

    return await run_guarded(log, phases, body)
