"""Reading and validating a web configuration file, key by key, into a `WebConfig`.

What Python's TLS cannot do is refused with a message, never silently dropped:
``RequestClientCert`` and ``RequireAnyClientCert`` (a client certificate asked for but not
verified), ``curve_preferences``, inline ``cert``/``key``/``client_ca``. ``http2`` is
accepted and ignored (aiohttp speaks HTTP/1.1).

The file is read with the one YAML reader of the exporter (`exporter.settings.yaml_file`):
every error is `FILE:LINE: KEY: message`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exporter.settings.yaml_file import Section, YamlFile, boolean, kind, parse_yaml
from exporter.web_config.basic_auth import BCRYPT_HASH, BCRYPT_MAX_COST, BCRYPT_MIN_COST
from exporter.web_config.config import WebConfig
from exporter.web_config.errors import WebConfigError
from exporter.web_config.tls import (
    CIPHER_SUITES,
    CLIENT_AUTH_TYPES,
    TLS13_SUITES,
    TLS_VERSIONS,
    UNSUPPORTED_CLIENT_AUTH_TYPES,
    TlsServerConfig,
    server_context,
)

log = logging.getLogger("exporter.web")

TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "client_ca",
)
TLS_UNSUPPORTED = {
    "cert": "inline certificates are not supported; use cert_file",
    "key": "inline keys are not supported; use key_file",
    "curve_preferences": "Python's ssl module cannot order curves; remove the key",
}
HTTP_KEYS = ("http2", "headers")

#: The headers exporter-toolkit lets a config set, with the values it accepts (None: any).
ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate a web configuration file; `WebConfigError` names the bad key."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        reason = err.strerror or str(err)
        raise WebConfigError(f"{path}: cannot read the web configuration: {reason}") from err
    return parse_web_config(data, path)


def parse_web_config(text: str | bytes, path: str | Path) -> WebConfig:
    """Validate the text of a web configuration file (relative paths from `path`'s folder)."""
    path = Path(path)
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    doc = parse_yaml(data, path, WebConfigError)
    if not isinstance(doc.data, dict):
        raise doc.error((), f"expected a mapping of {', '.join(TOP_KEYS)}, got {kind(doc.data)}")
    top = doc.top()
    for key in TOP_KEYS:
        top.raw(key)
    top.finish()
    tls_section = top.section("tls_server_config")
    tls = _tls(tls_section, path.parent)
    users = _users(doc, top.raw("basic_auth_users"))
    headers = _headers(top.section("http_server_config"))
    context = None
    if tls is not None:
        context = server_context(tls, tls_section.error)
    if users and tls is None:
        log.warning(
            "basic auth without TLS: passwords cross the network in clear text",
            extra={"web_config": str(path)},
        )
    return WebConfig(path=path, tls=tls, users=users, headers=headers, _context=context)


def _text(s: Section, name: str) -> str:
    value = s.raw(name)
    if not isinstance(value, str) or not value:
        raise s.error(name, f"must be a non-empty string, not {kind(value)}")
    return value


def _file(s: Section, name: str, folder: Path) -> Path:
    """A path to a readable file; a relative one is relative to the file read."""
    path = Path(_text(s, name))
    if not path.is_absolute():
        path = folder / path
    if not path.is_file():
        raise s.error(name, f"{path} is not a readable file")
    return path


def _choice(s: Section, name: str, value: Any, choices: Mapping[str, Any]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise s.error(name, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _strings(s: Section, name: str) -> tuple[str, ...]:
    """A list of strings; absent or empty (`null`): none."""
    return () if s.raw(name) is None else s.strings(name)


def _tls(s: Section, folder: Path) -> TlsServerConfig | None:
    for key in TLS_KEYS:
        s.raw(key)
    s.finish(TLS_UNSUPPORTED)
    if not s.data:
        return None
    if s.has("client_ca"):
        raise s.error("client_ca", "inline CA certificates are not supported; use client_ca_file")
    if not s.has("cert_file") or not s.has("key_file"):
        missing = "cert_file" if not s.has("cert_file") else "key_file"
        raise s.error(missing, "missing: TLS needs both cert_file and key_file")
    cert_file = _file(s, "cert_file", folder)
    key_file = _file(s, "key_file", folder)

    auth_type = s.raw("client_auth_type") or "NoClientCert"
    if isinstance(auth_type, str) and auth_type in UNSUPPORTED_CLIENT_AUTH_TYPES:
        raise s.error(
            "client_auth_type",
            f"{auth_type} (a client certificate that is not verified) is not supported; "
            "use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file",
        )
    auth_type = _choice(s, "client_auth_type", auth_type, CLIENT_AUTH_TYPES)
    ca_file = None
    if s.raw("client_ca_file") is not None:
        ca_file = _file(s, "client_ca_file", folder)
    if auth_type != "NoClientCert" and ca_file is None:
        raise s.error("client_auth_type", f"{auth_type} needs client_ca_file")
    if auth_type == "NoClientCert" and ca_file is not None:
        raise s.error("client_ca_file", "set, but client_auth_type is NoClientCert")
    sans = _strings(s, "client_allowed_sans")
    if sans and auth_type != "RequireAndVerifyClientCert":
        raise s.error("client_allowed_sans", "needs client_auth_type RequireAndVerifyClientCert")

    min_name = _choice(s, "min_version", s.raw("min_version") or "TLS12", TLS_VERSIONS)
    min_version = TLS_VERSIONS[min_name]
    max_version = None
    if s.raw("max_version"):
        max_version = TLS_VERSIONS[_choice(s, "max_version", s.raw("max_version"), TLS_VERSIONS)]
        if max_version < min_version:
            raise s.error("max_version", "is below min_version")

    ciphers = []
    for i, name in enumerate(_strings(s, "cipher_suites")):
        if name in TLS13_SUITES:
            continue
        if name not in CIPHER_SUITES:
            raise s.doc.error((*s.at, "cipher_suites", str(i)), f"unknown cipher suite {name!r}")
        ciphers.append(CIPHER_SUITES[name])
    prefer = s.value("prefer_server_cipher_suites", True, boolean)
    return TlsServerConfig(
        cert_file=cert_file,
        key_file=key_file,
        client_auth_type=auth_type,
        client_ca_file=ca_file,
        client_allowed_sans=sans,
        min_version=min_version,
        max_version=max_version,
        cipher_suites=tuple(dict.fromkeys(ciphers)),
        prefer_server_cipher_suites=prefer,
    )


def _users(doc: YamlFile, value: Any) -> dict[str, bytes]:
    """`basic_auth_users`: user names are keys, so this reads the mapping itself."""
    at = ("basic_auth_users",)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(at, f"must be a mapping of user to bcrypt hash, not {kind(value)}")
    users: dict[str, bytes] = {}
    for user, hashed in value.items():
        here = (*at, str(user))
        if not isinstance(user, str) or not user or ":" in user:
            raise doc.error(here, "a user name must be a non-empty string without ':'")
        match = BCRYPT_HASH.match(hashed) if isinstance(hashed, str) else None
        if match is None:
            raise doc.error(
                here,
                "is not a bcrypt hash ($2y$10$ and 53 characters; make one with "
                "`htpasswd -nBC 10 USER`)",
            )
        cost = int(match.group(1))
        if not BCRYPT_MIN_COST <= cost <= BCRYPT_MAX_COST:
            raise doc.error(
                here,
                f"bcrypt cost {cost} is outside {BCRYPT_MIN_COST}-{BCRYPT_MAX_COST} (each "
                "step doubles the CPU of every check); make one with `htpasswd -nBC 10 USER`",
            )
        users[user] = hashed.encode("ascii")
    return users


def _headers(s: Section) -> dict[str, str]:
    for key in HTTP_KEYS:
        s.raw(key)
    s.finish()
    s.value("http2", True, boolean)  # accepted, no effect: aiohttp speaks HTTP/1.1
    headers = s.raw("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise s.error("headers", f"must be a mapping, not {kind(headers)}")
    out: dict[str, str] = {}
    canonical = {name.lower(): name for name in ALLOWED_HEADERS}
    for name, header_value in headers.items():
        here = (*s.at, "headers", str(name))
        known = canonical.get(str(name).lower())
        if known is None:
            raise s.doc.error(here, f"cannot be set (allowed: {', '.join(ALLOWED_HEADERS)})")
        if not isinstance(header_value, str) or not header_value:
            raise s.doc.error(here, "must be a non-empty string")
        if "\r" in header_value or "\n" in header_value:
            raise s.doc.error(here, "must be one line")
        allowed = ALLOWED_HEADERS[known]
        if allowed is not None and header_value.lower() not in allowed:
            raise s.doc.error(here, f"must be one of {', '.join(allowed)}")
        out[known] = header_value
    return out
