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

The modules are read with the exporter's one YAML reader (`exporter.settings.yaml_file`)
and its one duration grammar: every error is `FILE:LINE: KEY: message`, whether the
modules are a file of their own or part of the configuration file.

Secrets (the PSK, XAuth and PPP passwords) live only in this file; they are held in
`Secret`, whose repr and str never show the value, so a logged module cannot leak them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from exporter.probes.addresses import (
    AddressError,
    IpNetwork,
    canonical,
    is_numeric_name,
    parse_network,
)
from exporter.probes.proposals import ProposalError, parse_ike_proposal
from exporter.settings.durations import parse_duration
from exporter.settings.errors import ConfigFileError
from exporter.settings.yaml_file import Section, YamlFile, boolean, read_yaml, text
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


class ProbeConfigError(ConfigFileError):
    """The module file cannot be used: `FILE:LINE: KEY: message`, like every YAML file the
    exporter reads. (Modules in the configuration file are its `ConfigFileError`s.)"""


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
# Conversions for `Section.value`: a ValueError becomes the file's error at the key.


def _above_zero(value: Any) -> float:
    """A duration in the one grammar (`500ms`, `5s`, `1m`, `1h`, seconds), above 0."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a duration above 0, got {value!r}")
    return seconds


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected an integer {low}-{high}, got {value!r}")
        return value

    return convert


def _one_of(*choices: Any) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(str(c) for c in choices)}")
        return value

    return convert


_IP_PROTOCOL = _one_of("ip4", "ip6")


def _strings(s: Section, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A list of non-empty strings, or one string of them separated by commas."""
    value = s.raw(name)
    if isinstance(value, str):
        items = tuple(v.strip() for v in value.split(","))
        if not all(items):
            raise s.error(name, f"expected a list of strings, got {value!r}")
        return items
    return s.strings(name, default)


def _secret(s: Section, name: str) -> Secret | None:
    """Never echoed: an error names the key, not the value."""
    value = s.raw(name)
    if value is None:
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise s.error(name, "expected a string")
    return Secret(str(value))


def _ike_proposals(s: Section, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    proposals = _strings(s, name, default)
    for proposal in proposals:
        try:
            parse_ike_proposal(proposal)
        except ProposalError as err:
            raise s.error(name, str(err)) from None
    return proposals


def _ike_options(s: Section) -> IkeOptions:
    version: Any = s.value("version", 2, _one_of(1, 2))
    default = DEFAULT_IKEV1_PROPOSALS if version == 1 else DEFAULT_IKEV2_PROPOSALS
    port = None
    if s.raw("port") is not None:
        port = s.value("port", 500, _integer(1, 65535))
    answers = _strings(s, "valid_answers", ("proposal_accepted",))
    for a in answers:
        if a not in ("proposal_accepted", "notify", "cookie"):
            raise s.error("valid_answers", f"{a!r} is not one of proposal_accepted, notify, cookie")
    auths = ("psk", "xauth_psk", "rsa", "xauth_rsa")
    opts = IkeOptions(
        version=version,
        port=port,
        nat_t=s.value("nat_t", False, boolean),
        proposals=_ike_proposals(s, "proposals", default),
        ikev1_auth=s.value("ikev1_auth", "psk", _one_of(*auths)),
        valid_answers=cast(tuple[IkeAnswer, ...], answers),
        follow_notify=s.value("follow_notify", True, boolean),
        attempts=s.value("attempts", 3, _integer(1, 10)),
        preferred_ip_protocol=s.value("preferred_ip_protocol", "ip4", _IP_PROTOCOL),
    )
    s.finish()
    return opts


def _l2tp_options(s: Section) -> L2tpOptions:
    opts = L2tpOptions(
        retransmit_interval=s.value("retransmit_interval", 1.0, _above_zero),
        port=s.value("port", 1701, _integer(1, 65535)),
        host_name=s.value("host_name", "l2tp-ipsec-exporter", text),
        preferred_ip_protocol=s.value("preferred_ip_protocol", "ip4", _IP_PROTOCOL),
    )
    s.finish()
    return opts


def _login_options(s: Section) -> LoginOptions:
    version: Any = s.value("ike_version", 1, _one_of(1, 2))
    default_ike = DEFAULT_IKEV1_PROPOSALS if version == 1 else DEFAULT_IKEV2_PROPOSALS
    xauth = s.section("xauth")
    auth = _strings(s, "auth", ("mschapv2", "chap_md5"))
    for a in auth:
        if a not in ("mschapv2", "chap_md5", "pap"):
            raise s.error("auth", f"{a!r} is not one of mschapv2, chap_md5, pap")
    mode: Any = s.value("mode", "transport", _one_of("transport", "tunnel"))
    opts = LoginOptions(
        vici_socket=s.value("vici_socket", "unix:///var/run/charon.vici", text),
        ike_version=version,
        psk=_secret(s, "psk"),
        xauth_username=xauth.value("username", "", text),
        xauth_password=_secret(xauth, "password"),
        ike_proposals=_ike_proposals(s, "ike_proposals", default_ike),
        esp_proposals=_strings(s, "esp_proposals", DEFAULT_ESP_PROPOSALS),
        mode=mode,
        vips=s.value("vips", mode == "tunnel", boolean),
        remote_ts=_strings(s, "remote_ts", ("dynamic[17/1701]",)),
        local_port=s.value("local_port", 1701, _integer(0, 65535)),
        l2tp_server=s.value("l2tp_server", "", text),
        l2tp_port=s.value("l2tp_port", 1701, _integer(1, 65535)),
        host_name=s.value("host_name", "l2tp-ipsec-exporter", text),
        encap=s.value("encap", False, boolean),
        local_id=s.value("local_id", "", text),
        remote_id=s.value("remote_id", "", text),
        username=s.value("username", "", text),
        password=_secret(s, "password"),
        auth=cast(tuple[PppAuth, ...], auth),
        lcp_echo=s.value("lcp_echo", True, boolean),
        preferred_ip_protocol=s.value("preferred_ip_protocol", "ip4", _IP_PROTOCOL),
    )
    xauth.finish()
    s.finish()
    try:
        ViciAddress.parse(opts.vici_socket)
    except ViciAddressError as err:
        raise s.error("vici_socket", str(err)) from None
    if opts.psk is None:
        raise s.error("psk", "the login prober needs the IPsec pre-shared key")
    if not opts.username or opts.password is None:
        raise s.error("username", "the login prober needs username and password")
    if opts.xauth_password is not None and not opts.xauth_username:
        raise xauth.error("username", "XAuth needs a username")
    if opts.l2tp_server:
        try:
            ipaddress.ip_address(opts.l2tp_server)
        except ValueError:
            raise s.error("l2tp_server", "expected an IP address") from None
    return opts


def _module(name: str, s: Section) -> Module:
    prober = s.value("prober", None, _one_of(*PROBERS))
    if prober is None:
        raise s.error("prober", f"missing: one of {', '.join(PROBERS)}")
    timeout = s.value("timeout", DEFAULT_TIMEOUT, _above_zero)
    allow_port = s.value("allow_target_port", False, boolean)
    sections = {p: s.section(p) for p in PROBERS}
    s.finish()
    for other in PROBERS:
        if other != prober and sections[other].data:
            raise s.error(other, f"set, but the module's prober is {prober}")
    if prober == "login" and allow_port:
        raise s.error(
            "allow_target_port",
            f"not for the login prober: charon always starts IKE on port {LOGIN_IKE_PORT}",
        )
    base = Module(name=name, prober=prober, timeout=timeout, allow_target_port=allow_port)
    if prober == "ike":
        return dataclasses.replace(base, ike=_ike_options(sections["ike"]))
    if prober == "l2tp":
        return dataclasses.replace(base, l2tp=_l2tp_options(sections["l2tp"]))
    return dataclasses.replace(base, login=_login_options(sections["login"]))


def _allowed(probe: Section) -> AllowedTargets:
    values = probe.raw("allowed_targets")
    if values is None:
        return AllowedTargets()
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise probe.error("allowed_targets", "expected a list of CIDRs or host names")
    networks: list[IpNetwork] = []
    names: set[str] = set()
    for value in values:
        try:
            network = parse_network(value)
        except AddressError as err:
            raise probe.error("allowed_targets", f"{value!r}: {err}") from None
        if network is not None:
            networks.append(network)
        elif not re.fullmatch(r"[A-Za-z0-9.-]+", value):
            raise probe.error("allowed_targets", f"{value!r} is neither a CIDR nor a host name")
        elif is_numeric_name(value):
            # The resolver reads it as an address, so as a name it would match nothing
            # a target spells canonically.
            raise probe.error(
                "allowed_targets",
                f"{value!r}: write an IPv4 address as four decimal numbers (a.b.c.d)",
            )
        else:
            names.add(value.lower().rstrip("."))
    return AllowedTargets(tuple(networks), frozenset(names))


def _require_allowed_targets(modules: Section, settings: ProbeSettings) -> None:
    """A login probe makes the local charon load this module's PSK and start IKE toward
    the target: open to any caller, that hands the PSK exchange (an offline attack on the
    PSK, then XAuth and PPP) to whoever reaches /probe."""
    if not settings.allowed_targets.unrestricted:
        return
    for module in settings.modules.values():
        if module.prober == "login":
            raise modules.doc.error(
                (*modules.at, module.name, "prober"),
                "a login module needs probe.allowed_targets (without it any client that "
                "reaches /probe picks where charon sends this module's PSK)",
            )


def has_probe_settings(doc: YamlFile) -> bool:
    """Whether the file has a `probe` or `modules` key (a configuration file need not)."""
    return isinstance(doc.data, dict) and ("modules" in doc.data or "probe" in doc.data)


def probe_settings_from(doc: YamlFile, *, whole_file: bool = True) -> ProbeSettings:
    """The `probe` and `modules` sections of a file read with `read_yaml`; errors are
    `doc`'s (`FILE:LINE: KEY: message`, of its error type). `whole_file`: the file holds
    nothing else (a module file); otherwise its other keys are someone else's to check
    (the configuration file)."""
    top = doc.top()
    modules_data = top.raw("modules")
    if not isinstance(modules_data, dict) or not modules_data:
        raise top.error("modules", "expected a mapping of module names to modules")
    modules_section = top.section("modules")
    probe = top.section("probe")
    if whole_file:
        top.finish()
    modules = {name: _module(name, modules_section.section(name)) for name in modules_section.data}
    settings = ProbeSettings(
        modules=modules,
        max_concurrent=probe.value("max_concurrent", DEFAULT_MAX_CONCURRENT, _integer(1, 1000)),
        allowed_targets=_allowed(probe),
    )
    probe.finish()
    _require_allowed_targets(modules_section, settings)
    return settings


def parse_probe_settings(data: object, source: str = "<config>") -> ProbeSettings:
    """Validate a parsed YAML document (no lines known: errors are `SOURCE: KEY: message`)."""
    doc = YamlFile(source, data if data is not None else {}, error_type=ProbeConfigError)
    return probe_settings_from(doc)


def load_probe_settings(path: str | Path) -> ProbeSettings:
    """Read and validate the module file."""
    return probe_settings_from(read_yaml(path, ProbeConfigError))


def load_modules(path: str | Path) -> dict[str, Module]:
    """The modules of the file (the integration contract's short form)."""
    return dict(load_probe_settings(path).modules)
