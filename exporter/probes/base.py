"""What every prober shares: the target, name resolution, and phase timing.

A prober is one coroutine with one signature (blackbox_exporter's shape)::

    async def probe(target, module, registry, log, deadline) -> bool

It writes its own families into `registry` (a fresh one per request) and returns whether
the probe succeeded; `deadline` is an absolute `loop.time()` it must not outlive.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge

from exporter.probes.addresses import AddressError, destination, parse_literal
from exporter.probes.config import AllowedTargets, IpProtocol, Module

Prober = Callable[["Target", Module, CollectorRegistry, logging.Logger, float], Awaitable[bool]]


class TargetError(ValueError):
    """The `target` parameter cannot be probed; the message says why."""


class ProbeFailure(Exception):
    """A phase failed; the message is safe to log (it never carries a secret)."""


@dataclass(frozen=True)
class Target:
    """`HOST[:PORT]` from the request, and where the probe may go."""

    host: str
    port: int | None = None
    allowed: AllowedTargets = field(default_factory=AllowedTargets)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host


def parse_target(text: str, allowed: AllowedTargets | None = None) -> Target:
    """`host`, `host:port`, `1.2.3.4`, `[2001:db8::1]:500` or a bare IPv6 address.

    An address literal is kept in its canonical form (an IPv4-mapped IPv6 address as
    IPv4) and checked against `allowed` as such; other spellings of IPv4 are refused."""
    allowed = allowed or AllowedTargets()
    text = text.strip()
    if not text:
        raise TargetError("target is empty")
    if "/" in text or "@" in text or any(c.isspace() for c in text):
        raise TargetError(f"target {text!r}: expected HOST or HOST:PORT")
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise TargetError(f"target {text!r}: unclosed [")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise TargetError(f"target {text!r}: expected [IPv6]:PORT")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    port = None
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise TargetError(f"target {text!r}: port must be 1-65535")
        port = int(port_text)
    try:
        address = parse_literal(host)
    except AddressError as err:
        raise TargetError(f"target {text!r}: {err}") from None
    if address is not None:
        host = str(address)
        if not allowed.allows_address(host):
            raise TargetError(f"target {text!r}: not in probe.allowed_targets")
    else:
        labels = host.rstrip(".").split(".")
        if not host or not all(
            label and len(label) < 64 and label.replace("-", "").isalnum() for label in labels
        ):
            raise TargetError(f"target {text!r}: {host!r} is not a host name or IP address")
        if not allowed.allows_name(host) and not allowed.networks:
            raise TargetError(f"target {text!r}: not in probe.allowed_targets")
    return Target(host, port, allowed)


def check_target_port(text: str, target: Target, module: Module) -> None:
    """Refuse a target port other than the module's, unless the module allows it."""
    if target.port is None or target.port == module.port or module.allow_target_port:
        return
    raise TargetError(
        f"target {text!r}: port {target.port} is not module {module.name}'s port "
        f"{module.port} (the module does not set allow_target_port)"
    )


async def resolve(target: Target, protocol: IpProtocol) -> str:
    """One address for the target, preferring `protocol` and falling back to the other."""
    try:
        ipaddress.ip_address(target.host)
        address = target.host
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(target.host, None, type=socket.SOCK_DGRAM)
        except socket.gaierror as err:
            raise ProbeFailure(f"cannot resolve {target.host}: {err.strerror}") from None
        preferred = socket.AF_INET if protocol == "ip4" else socket.AF_INET6
        infos.sort(key=lambda info: info[0] != preferred)
        if not infos:
            raise ProbeFailure(f"{target.host} has no address") from None
        address = str(infos[0][4][0])
    try:
        # What the socket will reach: a name may resolve to ::ffff:a.b.c.d or 0.0.0.0.
        address = str(destination(ipaddress.ip_address(address)))
    except AddressError as err:
        raise ProbeFailure(f"{target.host} resolved: {err}") from None
    allowed = target.allowed
    if not (allowed.allows_name(target.host) or allowed.allows_address(address)):
        raise ProbeFailure(f"{address} is not in probe.allowed_targets")
    return address


def ip_protocol(address: str) -> int:
    return ipaddress.ip_address(address).version


class Phases:
    """Times the phases of one probe and remembers the first that failed.

    `probe_failed_phase{phase}` has a series for every phase the prober knows (1 on the
    failed one), so dashboards see stable series whether the probe passed or not.
    """

    def __init__(self, registry: CollectorRegistry, names: tuple[str, ...]) -> None:
        self.names = names
        self.failed: str | None = None
        self._durations = Gauge(
            "probe_phase_duration_seconds",
            "Duration of each probe phase that ran",
            ["phase"],
            registry=registry,
        )
        self._failed = Gauge(
            "probe_failed_phase",
            "1 for the phase where the probe failed, 0 for the other phases",
            ["phase"],
            registry=registry,
        )
        for name in names:
            self._failed.labels(name).set(0)

    def set_duration(self, name: str, seconds: float) -> None:
        """Override a phase's duration with a better measurement (e.g. from an event)."""
        self._durations.labels(name).set(max(seconds, 0.0))

    def fail(self, name: str) -> None:
        if self.failed is None:
            self.failed = name
            self._failed.labels(name).set(1)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.fail(name)
            raise
        finally:
            self._durations.labels(name).set(time.monotonic() - start)


def info_gauge(registry: CollectorRegistry, name: str, doc: str, **labels: str) -> None:
    """A `..._info` series of value 1 carrying `labels`."""
    Gauge(name, doc, list(labels), registry=registry).labels(**labels).set(1)


def gauge(registry: CollectorRegistry, name: str, doc: str, value: float) -> None:
    Gauge(name, doc, registry=registry).set(value)


async def run_guarded(
    log: logging.Logger, phases: Phases, body: Callable[[], Awaitable[bool]]
) -> bool:
    """Run a prober's body; a failure or the deadline ends it as `False`, with the reason
    logged at debug (blackbox style: the /probe?debug=true view shows it)."""
    try:
        return await body()
    except ProbeFailure as err:
        log.debug("probe failed", extra={"phase": phases.failed, "reason": str(err)})
    except TimeoutError:
        log.debug("probe timed out", extra={"phase": phases.failed})
    return False
