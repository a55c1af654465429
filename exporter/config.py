"""Validated settings of the daemon.

The command line fills a `Settings`; a config file (a later addition) will fill the same
object, so nothing else in the daemon knows where a setting came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from exporter.kernel.options import KernelOptions
from exporter.privacy import PrivacyOptions

# One duration grammar and one error class for every settings source (re-exported).
from exporter.settings.durations import MAX_DURATION as MAX_DURATION
from exporter.settings.durations import parse_duration as parse_duration
from exporter.settings.errors import SettingsError as SettingsError

# Re-exported: Settings holds one, and code that builds Settings names it from here.
from exporter.vici.address import ViciAddress as ViciAddress
from exporter.vici.address import ViciAddressError

#: Chosen from the gaps in Prometheus' default port allocations list.
DEFAULT_PORT = 9945
DEFAULT_VICI_SOCKET = "unix:///var/run/charon.vici"

LogFormat = Literal["logfmt", "json"]
LogLevel = Literal["debug", "info", "warn", "error"]


# -- the telemetry path -------------------------------------------------------------------

#: Paths the daemon serves itself; the metrics path must not shadow them. All of `/-/`
#: is kept for lifecycle endpoints (Prometheus' convention), now and later.
RESERVED_PATHS = ("/", "/probe")
RESERVED_PREFIX = "/-/"
#: A plain path: no aiohttp route variables ({name}), no query, fragment or spaces.
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


def check_telemetry_path(path: str) -> None:
    """Raise SettingsError naming `--web.telemetry-path` unless `path` is a plain path of
    its own."""
    if not _PLAIN_PATH.match(path):
        raise SettingsError(f"--web.telemetry-path {path!r}: must be a plain path like /metrics")
    if path in RESERVED_PATHS or path.startswith(RESERVED_PREFIX):
        raise SettingsError(
            f"--web.telemetry-path {path!r}: would shadow the exporter's own endpoint "
            f"(reserved: {', '.join(RESERVED_PATHS)} and {RESERVED_PREFIX}*)"
        )


def parse_vici_socket(uri: str) -> ViciAddress:
    """`--vici.socket`'s value as an address; SettingsError naming the flag if it is none."""
    try:
        return ViciAddress.parse(uri)
    except ViciAddressError as err:
        raise SettingsError(f"--vici.socket {err}") from None


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
            raise SettingsError(
                f"--web.listen-address {text!r}: expected [host]:port, e.g. :{DEFAULT_PORT}"
            )
        host = host.strip("[]")
        return cls(host=host or "0.0.0.0", port=int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class StrongswanOptions:
    """What the strongSwan collector exports beyond the always-on summary."""

    sa_details: bool = False
    user_metrics: bool = True
    #: The most series one per-SA or per-user family may have; the rest are counted.
    series_limit: int = 1000
    #: Subscribe to charon's events for drop counters and rekey-proof traffic totals.
    events: bool = True
    #: An SA that went away and was replaced by the same peer within this many seconds was
    #: reauthenticated, not dropped.
    reauth_grace: float = 10.0
    #: Per-user traffic totals of a user with no SA are forgotten after this long.
    user_idle_seconds: float = 3600.0
    #: Seconds between rounds of the cheap VICI questions (stats, connections, pools,
    #: certificates, counters) in the background; scrapes render what the last one (and
    #: events since) said. 0: every scrape asks charon everything itself.
    refresh_interval: float = 10.0
    #: Seconds between background `list-sas` (reconcile, CHILD SA byte counts): the
    #: costly question at thousands of SAs; events keep SAs current in between. 120 s:
    #: an eighth of charon's listing work of an exporter that lists at every 15 s scrape.
    sa_refresh_interval: float = 120.0
    #: The most IKE SAs the SA model and the ledger track (events can announce SAs
    #: without end); what is over it is counted, not kept.
    max_sas: int = 10000


@dataclass(frozen=True)
class WebLimits:
    """What one HTTP client may hold of the exporter (connections, time)."""

    #: Seconds a client has to send a complete request line and headers.
    header_timeout: float = 5.0
    #: Seconds a keep-alive connection may sit idle between requests.
    idle_timeout: float = 60.0
    #: Most client connections open at once; further ones are closed at once.
    max_connections: int = 512


@dataclass(frozen=True)
class Settings:
    listen_address: ListenAddress = field(
        default_factory=lambda: ListenAddress("0.0.0.0", DEFAULT_PORT)
    )
    telemetry_path: str = "/metrics"
    vici_socket: ViciAddress = field(default_factory=lambda: parse_vici_socket(DEFAULT_VICI_SOCKET))
    vici_timeout: float = 5.0
    log_level: LogLevel = "info"
    log_format: LogFormat = "logfmt"
    strongswan: StrongswanOptions = field(default_factory=StrongswanOptions)
    kernel: KernelOptions = field(default_factory=KernelOptions)
    privacy: PrivacyOptions = field(default_factory=PrivacyOptions)
    #: TLS and basic auth, in the exporter-toolkit web configuration format.
    web_config_file: str | None = None
    #: The YAML file these settings came from, if any (reloaded on SIGHUP).
    config_file: str | None = None
    #: Serve POST /-/reload (Prometheus' --web.enable-lifecycle); SIGHUP always works.
    enable_lifecycle: bool = False
    web_limits: WebLimits = field(default_factory=WebLimits)

    def __post_init__(self) -> None:
        check_telemetry_path(self.telemetry_path)
        ss = self.strongswan
        limits = self.web_limits
        # Settings are also built in code (tests, the demo): the same bounds as the parsers.
        for flag, seconds, zero_ok in (
            ("--vici.timeout", self.vici_timeout, False),
            ("--collector.strongswan.sa-refresh-interval", ss.sa_refresh_interval, False),
            ("--collector.strongswan.refresh-interval", ss.refresh_interval, True),
            ("--collector.strongswan.reauth-grace", ss.reauth_grace, True),
            ("--collector.strongswan.user-idle-timeout", ss.user_idle_seconds, False),
            ("--web.header-timeout", limits.header_timeout, False),
            ("--web.idle-timeout", limits.idle_timeout, False),
        ):
            _check_seconds(flag, seconds, zero_ok=zero_ok)
        if ss.max_sas < 1:
            raise SettingsError("--collector.strongswan.max-sas: must be 1 or more")
        if limits.max_connections < 1:
            raise SettingsError("--web.max-connections: must be 1 or more")
        if ss.series_limit < 0:
            raise SettingsError(
                "--collector.strongswan.series-limit: must be 0 (no per-SA series) or more"
            )


def _check_seconds(flag: str, seconds: float, *, zero_ok: bool) -> None:
    low_ok = seconds >= 0 if zero_ok else seconds > 0
    if not (low_ok and seconds <= MAX_DURATION):  # also False for nan
        bound = "0 or more" if zero_ok else "above 0"
        raise SettingsError(f"{flag} {seconds}: must be {bound} seconds and finite")
