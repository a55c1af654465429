"""Reading and validating a web configuration file, key by key, into a `WebConfig`.

What Python's TLS cannot do is refused with a message, never silently dropped:
``RequestClientCert`` and ``RequireAnyClientCert`` (a client certificate asked for but not
verified), ``curve_preferences``, inline ``cert``/``key``/``client_ca``. ``http2`` is
accepted and ignored (aiohttp speaks HTTP/1.1).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from exporter import strict_yaml
from exporter.web_config.basic_auth import BCRYPT_HASH, BCRYPT_MAX_COST, BCRYPT_MIN_COST
from exporter.web_config.config import WebConfig
from exporter.web_config.errors import WebConfigError
from exporter.web_config.reader import At, Reader, kind
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
_TLS_AT: At = ("tls_server_config",)

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
    try:
        text = strict_yaml.decode(data)
    except strict_yaml.YamlProblem as problem:
        raise _problem(path, problem) from None
    return parse_web_config(text, path)


def _problem(path: Path, problem: strict_yaml.YamlProblem) -> WebConfigError:
    line = f" (line {problem.line})" if problem.line else ""
    if problem.path:
        return WebConfigError(f"{path}: {'.'.join(problem.path)}{line}: {problem}")
    detail = f": {problem.detail}" if problem.detail else ""
    return WebConfigError(f"{path}: {problem.what}{line}{detail}")


def parse_web_config(text: str, path: Path) -> WebConfig:
    """Validate the text of a web configuration file (relative paths from `path`'s folder)."""
    try:
        node = strict_yaml.compose(text)
        data = strict_yaml.construct(node)
    except strict_yaml.YamlProblem as problem:
        raise _problem(path, problem) from None
    r = Reader(path, node, hints=TLS_UNSUPPORTED)
    if data is None:
        return WebConfig(path=path)
    if not isinstance(data, dict):
        raise WebConfigError(f"{path}: must be a mapping of {', '.join(TOP_KEYS)}")
    top = r.mapping(data, (), TOP_KEYS)
    tls = _tls(r, top.get("tls_server_config"))
    users = _users(r, top.get("basic_auth_users"))
    headers = _headers(r, top.get("http_server_config"))
    context = None
    if tls is not None:
        context = server_context(tls, lambda key, message: r.error((*_TLS_AT, key), message))
    if users and tls is None:
        log.warning(
            "basic auth without TLS: passwords cross the network in clear text",
            extra={"web_config": str(path)},
        )
    return WebConfig(path=path, tls=tls, users=users, headers=headers, _context=context)


def _tls(r: Reader, value: Any) -> TlsServerConfig | None:
    at = _TLS_AT
    raw = r.mapping(value, at, TLS_KEYS)
    if not raw:
        return None
    if "client_ca" in raw:
        raise r.error(
            (*at, "client_ca"), "inline CA certificates are not supported; use client_ca_file"
        )
    if "cert_file" not in raw or "key_file" not in raw:
        missing = "cert_file" if "cert_file" not in raw else "key_file"
        raise r.error((*at, missing), "missing: TLS needs both cert_file and key_file")
    cert_file = r.file(raw["cert_file"], (*at, "cert_file"))
    key_file = r.file(raw["key_file"], (*at, "key_file"))

    auth_type = raw.get("client_auth_type") or "NoClientCert"
    if auth_type in UNSUPPORTED_CLIENT_AUTH_TYPES:
        raise r.error(
            (*at, "client_auth_type"),
            f"{auth_type} (a client certificate that is not verified) is not supported; "
            "use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file",
        )
    r.choice(auth_type, (*at, "client_auth_type"), CLIENT_AUTH_TYPES)
    ca_file = None
    if raw.get("client_ca_file") is not None:
        ca_file = r.file(raw["client_ca_file"], (*at, "client_ca_file"))
    if auth_type != "NoClientCert" and ca_file is None:
        raise r.error((*at, "client_auth_type"), f"{auth_type} needs client_ca_file")
    if auth_type == "NoClientCert" and ca_file is not None:
        raise r.error((*at, "client_ca_file"), "set, but client_auth_type is NoClientCert")
    sans = r.strings(raw.get("client_allowed_sans"), (*at, "client_allowed_sans"))
    if sans and auth_type != "RequireAndVerifyClientCert":
        raise r.error(
            (*at, "client_allowed_sans"), "needs client_auth_type RequireAndVerifyClientCert"
        )

    min_version = TLS_VERSIONS[
        r.choice(raw.get("min_version") or "TLS12", (*at, "min_version"), TLS_VERSIONS)
    ]
    max_version = None
    if raw.get("max_version"):
        max_version = TLS_VERSIONS[r.choice(raw["max_version"], (*at, "max_version"), TLS_VERSIONS)]
        if max_version < min_version:
            raise r.error((*at, "max_version"), "is below min_version")

    ciphers = []
    for i, name in enumerate(r.strings(raw.get("cipher_suites"), (*at, "cipher_suites"))):
        if name in TLS13_SUITES:
            continue
        if name not in CIPHER_SUITES:
            raise r.error((*at, "cipher_suites", str(i)), f"unknown cipher suite {name!r}")
        ciphers.append(CIPHER_SUITES[name])
    prefer = raw.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise r.error((*at, "prefer_server_cipher_suites"), "must be true or false")
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


def _users(r: Reader, value: Any) -> dict[str, bytes]:
    at: At = ("basic_auth_users",)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise r.error(at, f"must be a mapping of user to bcrypt hash, not {kind(value)}")
    users: dict[str, bytes] = {}
    for user, hashed in value.items():
        here = (*at, str(user))
        if not isinstance(user, str) or not user or ":" in user:
            raise r.error(here, "a user name must be a non-empty string without ':'")
        match = BCRYPT_HASH.match(hashed) if isinstance(hashed, str) else None
        if match is None:
            raise r.error(
                here,
                "is not a bcrypt hash ($2y$10$ and 53 characters; make one with "
                "`htpasswd -nBC 10 USER`)",
            )
        cost = int(match.group(1))
        if not BCRYPT_MIN_COST <= cost <= BCRYPT_MAX_COST:
            raise r.error(
                here,
                f"bcrypt cost {cost} is outside {BCRYPT_MIN_COST}-{BCRYPT_MAX_COST} (each "
                "step doubles the CPU of every check); make one with `htpasswd -nBC 10 USER`",
            )
        users[user] = hashed.encode("ascii")
    return users


def _headers(r: Reader, value: Any) -> dict[str, str]:
    at: At = ("http_server_config",)
    raw = r.mapping(value, at, HTTP_KEYS)
    http2 = raw.get("http2", True)
    if not isinstance(http2, bool):
        raise r.error((*at, "http2"), "must be true or false")
    headers_at = (*at, "headers")
    headers = raw.get("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise r.error(headers_at, f"must be a mapping, not {kind(headers)}")
    out: dict[str, str] = {}
    canonical = {name.lower(): name for name in ALLOWED_HEADERS}
    for name, header_value in headers.items():
        here = (*headers_at, str(name))
        known = canonical.get(str(name).lower())
        if known is None:
            raise r.error(here, f"cannot be set (allowed: {', '.join(ALLOWED_HEADERS)})")
        if not isinstance(header_value, str) or not header_value:
            raise r.error(here, "must be a non-empty string")
        if "\r" in header_value or "\n" in header_value:
            raise r.error(here, "must be one line")
        allowed = ALLOWED_HEADERS[known]
        if allowed is not None and header_value.lower() not in allowed:
            raise r.error(here, f"must be one of {', '.join(allowed)}")
        out[known] = header_value
    return out
