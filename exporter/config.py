"""The settings of the daemon, each declared once (`exporter.settings.schema.setting`).

The command line and the configuration file fill the same `Settings`, so nothing else in
the daemon knows where a setting came from. The kernel collectors' settings are declared
next to them (`exporter.kernel.options`), the strongSwan collector's next to its source
(`exporter.strongswan.options`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from exporter.kernel.options import KernelOptions
from exporter.libreswan.options import LibreswanOptions
from exporter.logins.options import LoginOptions
from exporter.privacy import PrivacyOptions
from exporter.settings import schema

# One duration grammar and one error class for every settings source (re-exported).
from exporter.settings.durations import MAX_DURATION as MAX_DURATION
from exporter.settings.durations import parse_duration as parse_duration
from exporter.settings.errors import SettingsError as SettingsError
from exporter.settings.schema import count, duration, group, setting

# Re-exported: Settings holds these, and code that builds Settings names them from here.
from exporter.strongswan.options import StrongswanOptions as StrongswanOptions
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


def telemetry_path(path: str) -> str:
    """`path` if it is a plain path of its own; ValueError otherwise."""
    if not _PLAIN_PATH.match(path):
        raise ValueError(f"{path!r}: must be a plain path like /metrics")
    if path in RESERVED_PATHS or path.startswith(RESERVED_PREFIX):
        raise ValueError(
            f"{path!r}: would shadow the exporter's own endpoint "
            f"(reserved: {', '.join(RESERVED_PATHS)} and {RESERVED_PREFIX}*)"
        )
    return path


def check_telemetry_path(path: str) -> None:
    """Raise SettingsError naming `--web.telemetry-path` unless `path` is a plain path of
    its own."""
    try:
        telemetry_path(path)
    except ValueError as err:
        raise SettingsError(f"--web.telemetry-path {err}") from None


def vici_address(uri: str) -> ViciAddress:
    try:
        return ViciAddress.parse(uri)
    except ViciAddressError as err:
        raise ValueError(str(err)) from None


def parse_vici_socket(uri: str) -> ViciAddress:
    """`--vici.socket`'s value as an address; SettingsError naming the flag if it is none."""
    try:
        return vici_address(uri)
    except ValueError as err:
        raise SettingsError(f"--vici.socket {err}") from None


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """`[host]:port`; ValueError (a SettingsError naming the flag) otherwise."""
        host, sep, port_text = text.rpartition(":")
        if (
            not sep
            or not (port_text.isascii() and port_text.isdigit())
            or not 0 <= int(port_text) < 65536
        ):
            raise SettingsError(
                f"--web.listen-address {text!r}: expected [host]:port, e.g. :{DEFAULT_PORT}"
            )
        host = host.strip("[]")
        return cls(host=host or "0.0.0.0", port=int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _listen_address(text: str) -> ListenAddress:
    try:
        return ListenAddress.parse(text)
    except SettingsError as err:
        raise ValueError(str(err).removeprefix("--web.listen-address ")) from None


def _show_listen(address: ListenAddress) -> str:
    return f":{address.port}" if address.host == "0.0.0.0" else str(address)


LISTEN_ADDRESS = schema.text("[HOST]:PORT", _listen_address, _show_listen)
TELEMETRY_PATH = schema.text("PATH", telemetry_path)
VICI_ADDRESS = schema.text("URI", vici_address)
OPTIONAL_PATH = schema.optional_text("PATH")


@dataclass(frozen=True)
class WebLimits:
    """What one HTTP client may hold of the exporter (connections, time)."""

    header_timeout: float = setting(
        5.0,
        flag="--web.header-timeout",
        yaml="web.header_timeout",
        kind=duration(zero_ok=False),
        example="2s",
        reload="restart",
        help="time from connect (TLS handshake included) to a complete request line and headers",
    )
    idle_timeout: float = setting(
        60.0,
        flag="--web.idle-timeout",
        yaml="web.idle_timeout",
        kind=duration(zero_ok=False),
        example="30s",
        reload="restart",
        help="close a keep-alive connection idle this long between requests",
    )
    max_connections: int = setting(
        512,
        flag="--web.max-connections",
        yaml="web.max_connections",
        kind=count(minimum=1),
        example="64",
        reload="restart",
        help="most HTTP client connections open at once; at the cap a new one replaces one "
        "with no request in progress, and is closed at once only when all are busy",
    )


@dataclass(frozen=True)
class Settings:
    listen_address: ListenAddress = setting(
        default_factory=lambda: ListenAddress("0.0.0.0", DEFAULT_PORT),
        flag="--web.listen-address",
        yaml="web.listen_address",
        kind=LISTEN_ADDRESS,
        example="127.0.0.1:9946",
        reload="restart",
        help="address to serve metrics on",
    )
    telemetry_path: str = setting(
        "/metrics",
        flag="--web.telemetry-path",
        yaml="web.telemetry_path",
        kind=TELEMETRY_PATH,
        example="/vpn-metrics",
        reload="restart",
        help="path under which to expose metrics",
    )
    #: TLS and basic auth, in the exporter-toolkit web configuration format.
    web_config_file: str | None = setting(
        None,
        flag="--web.config.file",
        yaml="web.config_file",
        kind=OPTIONAL_PATH,
        example="/etc/l2tp-ipsec-exporter/web.yml",
        reload="restart",
        help="TLS and basic auth, in the Prometheus exporter-toolkit web config format "
        "(its contents are reloaded; another file needs a restart)",
    )
    #: Serve POST /-/reload (Prometheus' --web.enable-lifecycle); SIGHUP always works.
    enable_lifecycle: bool = setting(
        False,
        flag="--web.enable-lifecycle",
        yaml="web.enable_lifecycle",
        kind=schema.SWITCH,
        example="true",
        help="serve POST /-/reload (as Prometheus' flag of the same name); SIGHUP always reloads",
    )
    web_limits: WebLimits = group(WebLimits)
    vici_socket: ViciAddress = setting(
        default_factory=lambda: parse_vici_socket(DEFAULT_VICI_SOCKET),
        flag="--vici.socket",
        yaml="vici.socket",
        kind=VICI_ADDRESS,
        example="tcp://127.0.0.1:4502",
        help="charon's VICI socket: unix:///path or tcp://host:port",
    )
    vici_timeout: float = setting(
        5.0,
        flag="--vici.timeout",
        yaml="vici.timeout",
        kind=duration(zero_ok=False),
        example="500ms",
        help="timeout of one VICI call; a call that times out drops the connection",
    )
    log_level: LogLevel = setting(
        "info",
        flag="--log.level",
        yaml="log.level",
        kind=schema.choice("debug", "info", "warn", "error"),
        example="debug",
        help="log level",
    )
    log_format: LogFormat = setting(
        "logfmt",
        flag="--log.format",
        yaml="log.format",
        kind=schema.choice("logfmt", "json"),
        example="json",
        help="log format",
    )
    strongswan: StrongswanOptions = group(StrongswanOptions)
    kernel: KernelOptions = group(KernelOptions)
    libreswan: LibreswanOptions = group(LibreswanOptions)
    logins: LoginOptions = group(LoginOptions)
    #: Read by `exporter.config_file` (a section of its own: per-family treatments).
    privacy: PrivacyOptions = field(default_factory=PrivacyOptions)
    #: The YAML file these settings came from, if any (reloaded on SIGHUP).
    config_file: str | None = None

    def __post_init__(self) -> None:
        # Settings are also built in code (tests, the demo): the same bounds as the readers.
        schema.check(self, SETTINGS)


#: Every setting of the daemon, in declaration order.
SETTINGS: tuple[schema.Entry, ...] = ()
SETTINGS = schema.entries(Settings)
