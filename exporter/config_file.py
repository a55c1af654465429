"""The YAML configuration file (`--config.file`): everything the flags set, and more.

```yaml
web:
  listen_address: ":9945"
  telemetry_path: /metrics
  config_file: /etc/l2tp-ipsec-exporter/web.yml   # TLS and basic auth
  enable_lifecycle: false   # POST /-/reload (SIGHUP always reloads)
  header_timeout: 5s        # to send a complete request line and headers
  idle_timeout: 60s         # a keep-alive connection idle between requests
  max_connections: 512      # HTTP client connections open at once
vici:
  socket: unix:///var/run/charon.vici
  timeout: 5s
log: {level: info, format: logfmt}
collectors:
  strongswan:
    sa_details: false
    user_metrics: true
    series_limit: 1000
    events: true
    reauth_grace: 10s
    user_idle_timeout: 1h
    refresh_interval: 10s
    sa_refresh_interval: 120s
    max_sas: 10000       # IKE SAs the SA model and ledger track
  ppp: {enabled: true, interfaces: "ppp*"}
  l2tp: {enabled: true}
  xfrm: {enabled: true}
  sessions: {enabled: true, state_dir: /run/l2tp-ipsec-exporter/ppp}
  kernel: {netns: ""}   # read another network namespace's kernel state
privacy:
  users: keep          # keep | drop | hash
  addresses: keep
  hash_key_file: /etc/l2tp-ipsec-exporter/hash.key
  families:
    strongswan_ike_sa_info: {users: hash, addresses: drop}
probe: {max_concurrent: 4}
modules: {...}         # probe modules, see docs/probes.md
```

Every error names the key and the line it is on. Flags given on the command line win
over the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from exporter import strict_yaml
from exporter.config import (
    ListenAddress,
    Settings,
    SettingsError,
    StrongswanOptions,
    WebLimits,
    check_telemetry_path,
    parse_duration,
    parse_vici_socket,
)
from exporter.kernel.options import KernelOptions
from exporter.privacy import LABEL_KINDS, PrivacyOptions, Treatment

T = TypeVar("T")
KeyPath = tuple[str, ...]


class ConfigFileError(SettingsError):
    """The file cannot be used; the message names the file, key and line."""


@dataclass
class Document:
    """A parsed YAML file and the line of every key in it (1-based)."""

    path: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def error(self, path: KeyPath, message: str) -> ConfigFileError:
        line = self._line(path)
        where = f"{self.path}:{line}" if line else self.path
        key = ".".join(path) if path else "(top level)"
        return ConfigFileError(f"{where}: {key}: {message}")

    def _line(self, path: KeyPath) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def _index_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, str(key_node.value))
            lines[key] = key_node.start_mark.line + 1
            _index_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, str(i)), lines)


def read_document(path: str | Path) -> Document:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ConfigFileError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        node, value = strict_yaml.load(data)
    except strict_yaml.YamlProblem as problem:
        where = f"{path}:{problem.line}" if problem.line else str(path)
        key = f" {'.'.join(problem.path)}:" if problem.path else ""
        raise ConfigFileError(f"{where}:{key} {problem}") from None
    doc = Document(str(path), value if value is not None else {})
    if node is not None:
        _index_lines(node, (), doc.lines)
    if not isinstance(doc.data, dict):
        raise doc.error((), "expected a mapping of sections (web, vici, collectors, …)")
    return doc


class _Reader:
    """Typed reads from one mapping of the document; unknown keys are errors."""

    def __init__(self, doc: Document, path: KeyPath, data: Any) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise doc.error(path, "expected a mapping")
        self.doc = doc
        self.path = path
        self.data: dict[str, Any] = {str(k): v for k, v in data.items()}
        self.known: set[str] = set()

    def section(self, name: str) -> _Reader:
        self.known.add(name)
        return _Reader(self.doc, (*self.path, name), self.data.get(name))

    def value(self, name: str, default: T, convert: Callable[[Any], T]) -> T:
        self.known.add(name)
        if name not in self.data:
            return default
        try:
            return convert(self.data[name])
        except (ValueError, TypeError) as err:
            raise self.doc.error((*self.path, name), str(err)) from None

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.known)
        if unknown:
            known = ", ".join(sorted(self.known)) or "none"
            raise self.doc.error((*self.path, unknown[0]), f"unknown key (known here: {known})")


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _telemetry_path(value: Any) -> str:
    path = _str(value)
    try:
        check_telemetry_path(path)
    except SettingsError as err:
        raise ValueError(str(err).removeprefix("--web.telemetry-path ")) from None
    return path


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return convert


def _treatment(value: Any) -> Treatment:
    return _choice("keep", "drop", "hash")(value)  # type: ignore[return-value]


def _privacy(reader: _Reader, base_dir: Path) -> PrivacyOptions:
    keep: Treatment = "keep"
    defaults: dict[str, Treatment] = {
        kind: reader.value(kind, keep, _treatment) for kind in LABEL_KINDS
    }
    key_file = reader.value("hash_key_file", "", _str)
    key = b""
    if key_file:
        path = (base_dir / key_file).resolve()
        try:
            key = path.read_bytes().strip()
        except OSError as err:
            raise reader.doc.error(
                (*reader.path, "hash_key_file"), f"cannot read {path}: {err.strerror or err}"
            ) from None
        if len(key) < 16:
            raise reader.doc.error(
                (*reader.path, "hash_key_file"), "the key must be at least 16 bytes"
            )
    families_reader = reader.section("families")
    families: dict[str, dict[str, Treatment]] = {}
    for family in list(families_reader.data):
        fam = families_reader.section(family)
        families[family] = {
            kind: fam.value(kind, defaults[kind], _treatment) for kind in LABEL_KINDS
        }
        fam.finish()
    families_reader.finish()
    reader.finish()
    options = PrivacyOptions(defaults=defaults, families=families, hash_key=key)
    if options.uses_hash() and not key:
        raise reader.doc.error(
            (*reader.path, "hash_key_file"),
            "`hash` needs a secret key: name a file with at least 16 random bytes",
        )
    return options


def _kernel(collectors: _Reader, base: KernelOptions, series_limit: int) -> KernelOptions:
    enabled = {}
    for name in ("ppp", "l2tp", "xfrm", "sessions"):
        section = collectors.section(name)
        enabled[name] = section.value("enabled", getattr(base, name), _bool)
        if name == "ppp":
            interfaces = section.value("interfaces", base.ppp_interfaces, _str)
        if name == "sessions":
            state_dir = section.value("state_dir", str(base.state_dir), _str)
        section.finish()
    netns_section = collectors.section("kernel")
    netns = netns_section.value("netns", base.netns or "", _str)
    netns_section.finish()
    return dataclasses.replace(
        base,
        **enabled,
        ppp_interfaces=interfaces,
        state_dir=Path(state_dir),
        netns=netns or None,
        series_limit=series_limit,
    )


def settings_from_document(doc: Document, base: Settings | None = None) -> Settings:
    """The settings the file describes (starting from `base`, default: built-in)."""
    base = base or Settings()
    top = _Reader(doc, (), doc.data)
    base_dir = Path(doc.path).resolve().parent

    web = top.section("web")
    listen = web.value("listen_address", base.listen_address, ListenAddress.parse)
    telemetry_path = web.value("telemetry_path", base.telemetry_path, _telemetry_path)
    web_config = web.value("config_file", base.web_config_file, _str)
    enable_lifecycle = web.value("enable_lifecycle", base.enable_lifecycle, _bool)
    bl = base.web_limits
    web_limits = WebLimits(
        header_timeout=web.value("header_timeout", bl.header_timeout, parse_duration),
        idle_timeout=web.value("idle_timeout", bl.idle_timeout, parse_duration),
        max_connections=web.value("max_connections", bl.max_connections, _int),
    )
    web.finish()

    vici = top.section("vici")
    socket = vici.value("socket", base.vici_socket, parse_vici_socket)
    timeout = vici.value("timeout", base.vici_timeout, parse_duration)
    vici.finish()

    log = top.section("log")
    level = log.value("level", str(base.log_level), _choice("debug", "info", "warn", "error"))
    fmt = log.value("format", str(base.log_format), _choice("logfmt", "json"))
    log.finish()

    collectors = top.section("collectors")
    ss = collectors.section("strongswan")
    b = base.strongswan
    strongswan = StrongswanOptions(
        sa_details=ss.value("sa_details", b.sa_details, _bool),
        user_metrics=ss.value("user_metrics", b.user_metrics, _bool),
        series_limit=ss.value("series_limit", b.series_limit, _int),
        events=ss.value("events", b.events, _bool),
        reauth_grace=ss.value("reauth_grace", b.reauth_grace, parse_duration),
        user_idle_seconds=ss.value("user_idle_timeout", b.user_idle_seconds, parse_duration),
        refresh_interval=ss.value("refresh_interval", b.refresh_interval, parse_duration),
        sa_refresh_interval=ss.value("sa_refresh_interval", b.sa_refresh_interval, parse_duration),
        max_sas=ss.value("max_sas", b.max_sas, _int),
    )
    ss.finish()
    kernel = _kernel(collectors, base.kernel, strongswan.series_limit)
    collectors.finish()

    privacy = _privacy(top.section("privacy"), base_dir)
    # Probe modules are validated by the probe package (see `probe_settings`).
    top.known.update({"probe", "modules"})
    top.finish()
    try:
        return dataclasses.replace(
            base,
            listen_address=listen,
            telemetry_path=telemetry_path,
            web_config_file=web_config or None,
            enable_lifecycle=enable_lifecycle,
            web_limits=web_limits,
            vici_socket=socket,
            vici_timeout=timeout,
            log_level=level,  # type: ignore[arg-type]
            log_format=fmt,  # type: ignore[arg-type]
            strongswan=strongswan,
            kernel=kernel,
            privacy=privacy,
            config_file=doc.path,
        )
    except SettingsError as err:
        raise ConfigFileError(f"{doc.path}: {err}") from None


def probe_section(doc: Document) -> Mapping[str, Any] | None:
    """The `probe` and `modules` keys, for the probe package to validate; None if absent."""
    if "modules" not in doc.data and "probe" not in doc.data:
        return None
    return {k: doc.data[k] for k in ("probe", "modules") if k in doc.data}


def line_of(doc: Document, dotted_key: str) -> int | None:
    """The line of a key named like `modules.nycmesh.timeout` (for other validators)."""
    return doc._line(tuple(dotted_key.split(".")))
