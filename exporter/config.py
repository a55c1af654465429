"""Validated settings of the daemon.

The command line fills a `Settings`; a config file (a later addition) will fill the same
object, so nothing else in the daemon knows where a setting came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from exporter.kernel.options import KernelOptions
from exporter.privacy import PrivacyOptions

#: Chosen from the gaps in Prometheus' default port allocations list.
DEFAULT_PORT = 9945
DEFAULT_VICI_SOCKET = "unix:///var/run/charon.vici"

LogFormat = Literal["logfmt", "json"]
LogLevel = Literal["debug", "info", "warn", "error"]


class SettingsError(ValueError):
    """A setting has a value the daemon cannot use; the message names the setting."""


@dataclass(frozen=True)
class ViciAddress:
    """Where charon's VICI socket is: a UNIX socket path or a TCP host and port."""

    scheme: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, uri: str) -> ViciAddress:
        parts = urlsplit(uri)
        if parts.scheme == "unix":
            path = parts.path or parts.netloc
            if not path:
                raise SettingsError(f"--vici.socket {uri!r}: a unix:// URI needs a path")
            return cls(scheme="unix", path=path)
        if parts.scheme == "tcp":
            try:
                port = parts.port
            except ValueError:
                port = None
            if not parts.hostname or port is None or not 0 < port < 65536:
                raise SettingsError(
                    f"--vici.socket {uri!r}: a tcp:// URI needs a host and a port 1-65535"
                )
            return cls(scheme="tcp", host=parts.hostname, port=port)
        raise SettingsError(
            f"--vici.socket {uri!r}: expected unix:///path/to/charon.vici or tcp://host:port"
        )

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


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
    vici_socket: ViciAddress = field(default_factory=lambda: ViciAddress.parse(DEFAULT_VICI_SOCKET))
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
        if not self.telemetry_path.startswith("/") or self.telemetry_path in ("/", "/-/healthy"):
            raise SettingsError(
                f"--web.telemetry-path {self.telemetry_path!r}: must be a path like /metrics"
            )
        if not self.vici_timeout > 0:
            raise SettingsError(f"--vici.timeout {self.vici_timeout}: must be above 0 seconds")
        if self.strongswan.sa_refresh_interval <= 0:
            raise SettingsError("--collector.strongswan.sa-refresh-interval: must be above 0")
        if self.strongswan.refresh_interval < 0:
            raise SettingsError("--collector.strongswan.refresh-interval: must be 0 or more")
        if self.strongswan.reauth_grace < 0:
            raise SettingsError("--collector.strongswan.reauth-grace: must be 0 or more")
        if self.strongswan.user_idle_seconds <= 0:
            raise SettingsError("--collector.strongswan.user-idle-timeout: must be above 0")
        if self.strongswan.max_sas < 1:
            raise SettingsError("--collector.strongswan.max-sas: must be 1 or more")
        limits = self.web_limits
        if not 0 < limits.header_timeout < float("inf"):
            raise SettingsError("--web.header-timeout: must be above 0 and finite")
        if not 0 < limits.idle_timeout < float("inf"):
            raise SettingsError("--web.idle-timeout: must be above 0 and finite")
        if limits.max_connections < 1:
            raise SettingsError("--web.max-connections: must be 1 or more")
        if self.strongswan.series_limit < 0:
            raise SettingsError(
                "--collector.strongswan.series-limit: must be 0 (no per-SA series) or more"
            )
