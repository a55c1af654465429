"""The probe module file: named modules (blackbox_exporter style) and probe-wide limits.

```yaml
probe:
  max_concurrent: 4
  allowed_targets: [203.0.113.0/24, vpn.example.net]
modules:
  nycmesh_ike:
    prober: ike
    timeout: 5s
    allow_target_port: false
    ike: {version: 1}
```

Without `allowed_targets` /probe sends wherever its caller says (blackbox_exporter's
convention, kept for `ike` and `l2tp`); a `login` module makes the local charon offer its
PSK to the target, so it is refused unless `allowed_targets` is set.

Secrets (the PSK, XAuth and PPP passwords) live only in this file; they are held in
`Secret`, whose repr and str never show the value, so a logged module cannot leak them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from exporter import strict_yaml
from exporter.config import parse_duration as config_duration
from exporter.probes.addresses import (
    AddressError,
    IpNetwork,
    canonical,
    is_numeric_name,
    parse_network,
)
from exporter.probes.proposals import ProposalError, parse_ike_proposal
from exporter.vici.address import ViciAddress, ViciAddressError

ProberName = Literal["ike", "l2tp", "login"]
PROBERS: tuple[ProberName, ...] = ("ike", "l2tp", "login")
IpProtocol = Literal["ip4", "ip6"]
PppAuth = Literal["mschapv2", "chap_md5", "pap"]
IkeAnswer = Literal["proposal_accepted", "notify", "cookie"]

DEFAULT_TIMEOUT = 10.0
#: Where charon sends a login's IKE_SA_INIT / Main Mode (it floats to 4500 for NAT-T).
LOGIN_IKE_PORT = 500
DEFAULT_MAX_CONCURRENT = 4

#: Accepted by strongSwan's defaults and by the IKEv2 clients of Windows, macOS/iOS and
#: Android (strongSwan app): the first one's group is what the KE payload carries.
DEFAULT_IKEV2_PROPOSALS = (
    "aes256-sha256-modp2048",
    "aes128-sha256-modp2048",
    "aes256-sha1-modp2048",
    "aes256-sha256-modp1024",
    "aes128-sha1-modp1024",
    "3des-sha1-modp1024",
)
#: What L2TP/IPsec clients (Windows, macOS/iOS, Android, Mikrotik) offer in Main Mode.
DEFAULT_IKEV1_PROPOSALS = (
    "aes256-sha256-modp2048",
    "aes256-sha1-modp2048",
    "aes128-sha1-modp2048",
    "aes256-sha1-modp1024",
    "aes128-sha1-modp1024",
    "3des-sha1-modp1024",
)
DEFAULT_ESP_PROPOSALS = ("aes256-sha256", "aes256-sha1", "aes128-sha1", "3des-sha1")


class ProbeConfigError(ValueError):
    """The module file cannot be used; the message names the file and the bad key."""


class Secret:
    """A credential: compare and use with `.reveal()`, never printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class IkeOptions:
    """A stateless check of the IKE responder: one first message, one answer."""

    version: Literal[1, 2] = 2
    #: None: 500, or 4500 with `nat_t`.
    port: int | None = None
    #: Send to 4500 with the four-byte non-ESP marker, as a client behind NAT would.
    nat_t: bool = False
    proposals: tuple[str, ...] = DEFAULT_IKEV2_PROPOSALS
    #: IKEv1 authentication method offered in each transform.
    ikev1_auth: Literal["psk", "xauth_psk", "rsa", "xauth_rsa"] = "psk"
    #: Answer classes that count as success.
    valid_answers: tuple[IkeAnswer, ...] = ("proposal_accepted",)
    #: Resend once with the group (INVALID_KE_PAYLOAD) or cookie (COOKIE) the responder
    #: asked for, as every IKEv2 client does.
    follow_notify: bool = True
    #: Packets sent in total when no answer comes (spread over the timeout).
    attempts: int = 3
    preferred_ip_protocol: IpProtocol = "ip4"

    @property
    def effective_port(self) -> int:
        return self.port or (4500 if self.nat_t else 500)


@dataclass(frozen=True)
class L2tpOptions:
    """An L2TP control-connection check: SCCRQ → SCCRP (SCCCN) → StopCCN."""

    port: int = 1701
    host_name: str = "l2tp-ipsec-exporter"
    #: Seconds between retransmissions of an unacknowledged control message.
    retransmit_interval: float = 1.0
    preferred_ip_protocol: IpProtocol = "ip4"


@dataclass(frozen=True)
class LoginOptions:
    """The full journey through a local charon: IKE, CHILD, L2TP, PPP."""

    vici_socket: str = "unix:///var/run/charon.vici"
    ike_version: Literal[1, 2] = 1
    psk: Secret | None = None
    xauth_username: str = ""
    xauth_password: Secret | None = None
    ike_proposals: tuple[str, ...] = DEFAULT_IKEV1_PROPOSALS
    esp_proposals: tuple[str, ...] = DEFAULT_ESP_PROPOSALS
    #: transport: ESP protects UDP/1701 end to end (real servers); tunnel: for labs
    #: whose IPsec stack only does tunnel mode (kernel-libipsec).
    mode: Literal["transport", "tunnel"] = "transport"
    #: Request a virtual IP (mode config); needed in tunnel mode.
    vips: bool = False
    remote_ts: tuple[str, ...] = ("dynamic[17/1701]",)
    #: L2TP source port; 1701 as Windows and macOS use; 0: any free port.
    local_port: int = 1701
    #: Where L2TP is sent; empty: the target itself.
    l2tp_server: str = ""
    l2tp_port: int = 1701
    host_name: str = "l2tp-ipsec-exporter"
    encap: bool = False
    local_id: str = ""
    remote_id: str = ""
    username: str = ""
    password: Secret | None = None
    auth: tuple[PppAuth, ...] = ("mschapv2", "chap_md5")
    lcp_echo: bool = True
    preferred_ip_protocol: IpProtocol = "ip4"


@dataclass(frozen=True)
class Module:
    name: str
    prober: ProberName
    timeout: float = DEFAULT_TIMEOUT
    ike: IkeOptions = field(default_factory=IkeOptions)
    l2tp: L2tpOptions = field(default_factory=L2tpOptions)
    login: LoginOptions = field(default_factory=LoginOptions)
    #: Whether a target's `:PORT` may differ from `port`: off, so a caller of /probe
    #: cannot turn a module into a UDP sender toward any port it likes.
    allow_target_port: bool = False

    @property
    def port(self) -> int:
        """The UDP port this module's probe goes to when the target names none."""
        if self.prober == "ike":
            return self.ike.effective_port
        if self.prober == "l2tp":
            return self.l2tp.port
        return LOGIN_IKE_PORT


@dataclass(frozen=True)
class AllowedTargets:
    """Networks and host names a probe may be sent to; empty means any.

    Addresses are matched in their canonical form (`exporter.probes.addresses`): the
    address checked is the one the probe is sent to, however the target spelled it."""

    networks: tuple[IpNetwork, ...] = ()
    hostnames: frozenset[str] = frozenset()

    @property
    def unrestricted(self) -> bool:
        return not self.networks and not self.hostnames

    def allows_name(self, host: str) -> bool:
        return self.unrestricted or host.lower().rstrip(".") in self.hostnames

    def allows_address(self, address: str) -> bool:
        if self.unrestricted:
            return True
        ip = canonical(ipaddress.ip_address(address))
        return any(ip in net for net in self.networks)


@dataclass(frozen=True)
class ProbeSettings:
    modules: Mapping[str, Module]
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    allowed_targets: AllowedTargets = field(default_factory=AllowedTargets)


# -- parsing ----------------------------------------------------------------------------------


def parse_duration(value: object, key: str) -> float:
    """A duration in the one grammar of the configuration (`exporter.config`), above 0."""
    try:
        seconds = config_duration(value)
    except ValueError as err:
        raise ProbeConfigError(f"{key}: {err}") from None
    if seconds <= 0:
        raise ProbeConfigError(f"{key}: must be above zero")
    return seconds


class _Section:
    """Typed reads from one YAML mapping that remember which keys were used."""

    def __init__(self, data: object, where: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ProbeConfigError(f"{where}: expected a mapping")
        self.data: dict[str, Any] = {str(k): v for k, v in data.items()}
        self.where = where
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}"

    def get(self, name: str, default: Any) -> Any:
        self.used.add(name)
        return self.data.get(name, default)

    def string(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str):
            raise ProbeConfigError(f"{self.key(name)}: expected a string")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ProbeConfigError(f"{self.key(name)}: expected true or false")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ProbeConfigError(f"{self.key(name)}: expected an integer {low}-{high}")
        return value

    def choice(self, name: str, default: Any, choices: tuple[Any, ...]) -> Any:
        value = self.get(name, default)
        if value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise ProbeConfigError(f"{self.key(name)}: {value!r} is not one of {allowed}")
        return value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name, list(default))
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ProbeConfigError(f"{self.key(name)}: expected a list of strings")
        return tuple(value)

    def secret(self, name: str) -> Secret | None:
        value = self.get(name, None)
        if value is None:
            return None
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ProbeConfigError(f"{self.key(name)}: expected a string")
        return Secret(str(value))

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ProbeConfigError(f"{self.key(unknown[0])}: unknown key")


def _ike_proposals(section: _Section, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    proposals = section.strings(name, default)
    for text in proposals:
        try:
            parse_ike_proposal(text)
        except ProposalError as err:
            raise ProbeConfigError(f"{section.key(name)}: {err}") from None
    return proposals


def _ike_options(s: _Section) -> IkeOptions:
    version = s.choice("version", 2, (1, 2))
    default = DEFAULT_IKEV1_PROPOSALS if version == 1 else DEFAULT_IKEV2_PROPOSALS
    port = s.get("port", None)
    if port is not None:
        port = s.integer("port", 500, 1, 65535)
    answers = s.strings("valid_answers", ("proposal_accepted",))
    for a in answers:
        if a not in ("proposal_accepted", "notify", "cookie"):
            raise ProbeConfigError(
                f"{s.key('valid_answers')}: {a!r} is not one of proposal_accepted, notify, cookie"
            )
    opts = IkeOptions(
        version=version,
        port=port,
        nat_t=s.boolean("nat_t", False),
        proposals=_ike_proposals(s, "proposals", default),
        ikev1_auth=s.choice("ikev1_auth", "psk", ("psk", "xauth_psk", "rsa", "xauth_rsa")),
        valid_answers=cast(tuple[IkeAnswer, ...], answers),
        follow_notify=s.boolean("follow_notify", True),
        attempts=s.integer("attempts", 3, 1, 10),
        preferred_ip_protocol=s.choice("preferred_ip_protocol", "ip4", ("ip4", "ip6")),
    )
    s.finish()
    return opts


def _l2tp_options(s: _Section) -> L2tpOptions:
    interval = parse_duration(s.get("retransmit_interval", 1.0), s.key("retransmit_interval"))
    opts = L2tpOptions(
        port=s.integer("port", 1701, 1, 65535),
        host_name=s.string("host_name", "l2tp-ipsec-exporter"),
        retransmit_interval=interval,
        preferred_ip_protocol=s.choice("preferred_ip_protocol", "ip4", ("ip4", "ip6")),
    )
    s.finish()
    return opts


def _login_options(s: _Section) -> LoginOptions:
    version = s.choice("ike_version", 1, (1, 2))
    default_ike = DEFAULT_IKEV1_PROPOSALS if version == 1 else DEFAULT_IKEV2_PROPOSALS
    xauth = _Section(s.get("xauth", None), s.key("xauth"))
    auth = s.strings("auth", ("mschapv2", "chap_md5"))
    for a in auth:
        if a not in ("mschapv2", "chap_md5", "pap"):
            raise ProbeConfigError(f"{s.key('auth')}: {a!r} is not one of mschapv2, chap_md5, pap")
    mode = s.choice("mode", "transport", ("transport", "tunnel"))
    opts = LoginOptions(
        vici_socket=s.string("vici_socket", "unix:///var/run/charon.vici"),
        ike_version=version,
        psk=s.secret("psk"),
        xauth_username=xauth.string("username", ""),
        xauth_password=xauth.secret("password"),
        ike_proposals=_ike_proposals(s, "ike_proposals", default_ike),
        esp_proposals=s.strings("esp_proposals", DEFAULT_ESP_PROPOSALS),
        mode=mode,
        vips=s.boolean("vips", mode == "tunnel"),
        remote_ts=s.strings("remote_ts", ("dynamic[17/1701]",)),
        local_port=s.integer("local_port", 1701, 0, 65535),
        l2tp_server=s.string("l2tp_server", ""),
        l2tp_port=s.integer("l2tp_port", 1701, 1, 65535),
        host_name=s.string("host_name", "l2tp-ipsec-exporter"),
        encap=s.boolean("encap", False),
        local_id=s.string("local_id", ""),
        remote_id=s.string("remote_id", ""),
        username=s.string("username", ""),
        password=s.secret("password"),
        auth=cast(tuple[PppAuth, ...], auth),
        lcp_echo=s.boolean("lcp_echo", True),
        preferred_ip_protocol=s.choice("preferred_ip_protocol", "ip4", ("ip4", "ip6")),
    )
    xauth.finish()
    s.finish()
    try:
        ViciAddress.parse(opts.vici_socket)
    except ViciAddressError as err:
        raise ProbeConfigError(f"{s.key('vici_socket')}: {err}") from None
    if opts.psk is None:
        raise ProbeConfigError(f"{s.key('psk')}: the login prober needs the IPsec pre-shared key")
    if not opts.username or opts.password is None:
        raise ProbeConfigError(f"{s.key('username')}: the login prober needs username and password")
    if opts.xauth_password is not None and not opts.xauth_username:
        raise ProbeConfigError(f"{xauth.key('username')}: XAuth needs a username")
    if opts.l2tp_server:
        try:
            ipaddress.ip_address(opts.l2tp_server)
        except ValueError:
            raise ProbeConfigError(f"{s.key('l2tp_server')}: expected an IP address") from None
    return opts


def _module(name: str, data: object) -> Module:
    where = f"modules.{name}"
    s = _Section(data, where)
    prober = s.choice("prober", None, PROBERS)
    timeout = parse_duration(s.get("timeout", DEFAULT_TIMEOUT), s.key("timeout"))
    allow_port = s.boolean("allow_target_port", False)
    sections = {p: _Section(s.get(p, None), s.key(p)) for p in PROBERS}
    s.finish()
    for other in PROBERS:
        if other != prober and sections[other].data:
            raise ProbeConfigError(f"{s.key(other)}: set, but the module's prober is {prober}")
    if prober == "login" and allow_port:
        raise ProbeConfigError(
            f"{s.key('allow_target_port')}: not for the login prober: charon always starts "
            f"IKE on port {LOGIN_IKE_PORT}"
        )
    base = Module(name=name, prober=prober, timeout=timeout, allow_target_port=allow_port)
    if prober == "ike":
        return dataclasses.replace(base, ike=_ike_options(sections["ike"]))
    if prober == "l2tp":
        return dataclasses.replace(base, l2tp=_l2tp_options(sections["l2tp"]))
    return dataclasses.replace(base, login=_login_options(sections["login"]))


def _allowed(values: object) -> AllowedTargets:
    key = "probe.allowed_targets"
    if values is None:
        return AllowedTargets()
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ProbeConfigError(f"{key}: expected a list of CIDRs or host names")
    networks: list[IpNetwork] = []
    names: set[str] = set()
    for value in values:
        try:
            network = parse_network(value)
        except AddressError as err:
            raise ProbeConfigError(f"{key}: {value!r}: {err}") from None
        if network is not None:
            networks.append(network)
        elif not re.fullmatch(r"[A-Za-z0-9.-]+", value):
            raise ProbeConfigError(f"{key}: {value!r} is neither a CIDR nor a host name")
        elif is_numeric_name(value):
            # The resolver reads it as an address, so as a name it would match nothing
            # a target spells canonically.
            raise ProbeConfigError(
                f"{key}: {value!r}: write an IPv4 address as four decimal numbers (a.b.c.d)"
            )
        else:
            names.add(value.lower().rstrip("."))
    return AllowedTargets(tuple(networks), frozenset(names))


def _require_allowed_targets(modules: Mapping[str, Module], allowed: AllowedTargets) -> None:
    """A login probe makes the local charon load this module's PSK and start IKE toward
    the target: open to any caller, that hands the PSK exchange (an offline attack on the
    PSK, then XAuth and PPP) to whoever reaches /probe."""
    if not allowed.unrestricted:
        return
    for module in modules.values():
        if module.prober == "login":
            raise ProbeConfigError(
                f"modules.{module.name}.prober: a login module needs probe.allowed_targets "
                "(without it any client that reaches /probe picks where charon sends this "
                "module's PSK)"
            )


def parse_probe_settings(data: object, source: str = "<config>") -> ProbeSettings:
    """Validate a parsed YAML document."""
    try:
        top = _Section(data, "config")
        modules_data = top.get("modules", None)
        if not isinstance(modules_data, dict) or not modules_data:
            raise ProbeConfigError("modules: expected a mapping of module names to modules")
        probe = _Section(top.get("probe", None), "probe")
        top.where = ""
        top.finish()
        modules = {str(name): _module(str(name), body) for name, body in modules_data.items()}
        settings = ProbeSettings(
            modules=modules,
            max_concurrent=probe.integer("max_concurrent", DEFAULT_MAX_CONCURRENT, 1, 1000),
            allowed_targets=_allowed(probe.get("allowed_targets", None)),
        )
        probe.finish()
        _require_allowed_targets(settings.modules, settings.allowed_targets)
    except ProbeConfigError as err:
        raise ProbeConfigError(f"{source}: {str(err).lstrip('.')}") from None
    return settings


def load_probe_settings(path: str | Path) -> ProbeSettings:
    """Read and validate the module file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise ProbeConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        _, data = strict_yaml.load(raw)
    except strict_yaml.YamlProblem as err:
        where = f"{path}:{err.line}" if err.line else str(path)
        raise ProbeConfigError(f"{where}: {err}") from None
    return parse_probe_settings(data, str(path))


def load_modules(path: str | Path) -> dict[str, Module]:
    """The modules of the file (the integration contract's short form)."""
    return dict(load_probe_settings(path).modules)
