"""TLS and basic auth from a Prometheus exporter-toolkit web configuration file.

The file format is the one every Go exporter reads with ``--web.config.file``, so an
operator reuses what they already have::

    tls_server_config:
      cert_file: server.crt          # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.crt
      client_allowed_sans: [prometheus.example.net]
      min_version: TLS12
      max_version: TLS13
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hash, e.g. from `htpasswd -nBC 10 prometheus`

What Python's TLS cannot do is refused with a message, never silently dropped:
``RequestClientCert`` and ``RequireAnyClientCert`` (a client certificate asked for but not
verified), ``curve_preferences``, inline ``cert``/``key``. ``http2`` is accepted and
ignored (aiohttp speaks HTTP/1.1).

The daemon wires it as::

    live = LiveWebConfig(load_web_config(path))  # WebConfigError: one line naming the key
    app.middlewares.append(live.middleware())    # before the runner's setup
    web.TCPSite(runner, host, port, ssl_context=live.ssl_context())
    ...
    pending = live.replace(load_web_config(path))  # on SIGHUP; log `pending` as restart-only
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import enum
import hmac
import logging
import re
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter import strict_yaml
from exporter.config import SettingsError

log = logging.getLogger("exporter.web")


REALM = "l2tp-ipsec-exporter"

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
#: Go can ask for a client certificate and then not verify it; OpenSSL through Python's
#: ssl module verifies whatever it asks for.
UNSUPPORTED_CLIENT_AUTH_TYPES = ("RequestClientCert", "RequireAnyClientCert")

#: Go's names (crypto/tls) of the TLS 1.2 cipher suites → OpenSSL's. TLS 1.3 suites are
#: not configurable in Go either; their names are accepted and have no effect.
CIPHER_SUITES = {
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)

#: The headers exporter-toolkit lets a config set, with the values it accepts (None: any).
ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

BCRYPT_HASH = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")
#: Go's bcrypt reads costs 4-31 and exporter-toolkit takes them all; each step doubles the
#: CPU of a check (cost 10: 0.05 s, 14: 0.9 s, 31: ~31 h on the machine of the tests).
#: Checks run one at a time and an unknown user is checked at the highest cost, so one
#: client with made-up credentials holds that CPU; 14 keeps a check well inside
#: Prometheus' 10 s scrape timeout also on a CPU several times slower.
BCRYPT_MIN_COST = 4
BCRYPT_MAX_COST = 14
#: bcrypt only reads the first 72 bytes; the `bcrypt` package refuses longer passwords.
BCRYPT_MAX_PASSWORD = 72
#: Verified (user, password) pairs remembered, so a scrape does not pay bcrypt's cost.
AUTH_CACHE_SIZE = 256
#: Distinct credentials waiting for a bcrypt check at once; beyond this, 429 without a
#: check, so a flood of wrong passwords cannot queue unbounded CPU work.
MAX_PENDING_CHECKS = 32


class WebConfigError(SettingsError):
    """The web configuration file cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class TlsServerConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    client_allowed_sans: tuple[str, ...] = ()
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion | None = None
    #: OpenSSL names of the TLS 1.2 suites; empty: OpenSSL's defaults.
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True


@dataclass(frozen=True)
class WebConfig:
    """A validated web configuration; `WebConfig()` is the empty file (plain HTTP, open)."""

    path: Path | None = None
    tls: TlsServerConfig | None = None
    #: user → bcrypt hash
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    _context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server context for `web.TCPSite(ssl_context=...)`; None: plain HTTP."""
        return self._context

    def middleware(self) -> Middleware:
        """An aiohttp middleware for every endpoint: basic auth (401 with
        WWW-Authenticate), allowed client certificate SANs (403) and the configured
        headers. Each call makes a fresh verification cache."""
        auth = BasicAuth(self.users) if self.users else None
        allowed_sans = frozenset(self.tls.client_allowed_sans) if self.tls else frozenset()
        headers = dict(self.headers)

        @web.middleware
        async def web_config_middleware(
            request: web.Request, handler: Handler
        ) -> web.StreamResponse:
            try:
                response = await _guarded(request, handler, auth, allowed_sans)
            except web.HTTPException as exc:
                exc.headers.update(headers)
                raise
            response.headers.update(headers)
            return response

        return web_config_middleware


async def _guarded(
    request: web.Request,
    handler: Handler,
    auth: BasicAuth | None,
    allowed_sans: frozenset[str],
) -> web.StreamResponse:
    if allowed_sans and not _peer_san_allowed(request, allowed_sans):
        return web.Response(status=403, text="client certificate not allowed\n")
    if auth is not None:
        verdict = await auth.check(request.headers.get("Authorization"))
        if verdict is Verdict.BUSY:
            return web.Response(status=429, text="too many authentication attempts\n")
        if verdict is not Verdict.OK:
            return web.Response(
                status=401,
                text="Unauthorized\n",
                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
    return await handler(request)


def _peer_san_allowed(request: web.Request, allowed: frozenset[str]) -> bool:
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return False
    sans = {value for _kind, value in cert.get("subjectAltName", ())}
    return not sans.isdisjoint(allowed)


class Verdict(enum.Enum):
    """Outcome of one credential check."""

    OK = "ok"
    DENIED = "denied"
    BUSY = "busy"


class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes.

    bcrypt costs ~0.1-0.3 s per check by design; it runs in a worker thread, one at a
    time, and each verdict is remembered under a keyed digest of (user, password) so a
    scrape with known credentials costs a dictionary lookup. An unknown user is checked
    against a dummy hash of the same cost, so timing does not tell which users exist.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = asyncio.Lock()
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}
        self._dummy: bytes | None = None
        self.checks = 0  # bcrypt verifications done, for tests and debugging

    def _cache_key(self, user: bytes, password: bytes) -> bytes:
        message = len(user).to_bytes(4, "big") + user + password
        return hmac.new(self._key, message, sha256).digest()

    def _lookup(self, user: str) -> bytes | None:
        # Compare against every user, without an early exit.
        found: bytes | None = None
        wanted = user.encode("utf-8", errors="surrogateescape")
        for name, hashed in self._users.items():
            if hmac.compare_digest(name.encode("utf-8", errors="surrogateescape"), wanted):
                found = hashed
        return found

    def _dummy_hash(self) -> bytes:
        if self._dummy is None:
            cost = max((int(h[4:6]) for h in self._users.values()), default=10)  # "$2y$10$…"
            self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        return self._dummy

    def _verify(self, password: bytes, hashed: bytes | None) -> bool:
        """Blocking: runs in a worker thread."""
        self.checks += 1
        target = hashed if hashed is not None else self._dummy_hash()
        try:
            ok = bcrypt.checkpw(password, target)
        except ValueError:  # longer than 72 bytes, or a hash bcrypt cannot read
            ok = False
        return ok and hashed is not None

    async def check(self, header: str | None) -> Verdict:
        credentials = parse_basic_authorization(header)
        if credentials is None:
            return Verdict.DENIED
        user, password = credentials
        if len(password) > BCRYPT_MAX_PASSWORD:
            return Verdict.DENIED
        key = self._cache_key(user.encode("utf-8", errors="surrogateescape"), password)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return Verdict.OK if cached else Verdict.DENIED
        # Requests with the same credentials share one check (and one place in the queue):
        # a burst of scrapes after a restart is one bcrypt run, not a 429.
        shared = self._inflight.get(key)
        if shared is None:
            if len(self._inflight) >= MAX_PENDING_CHECKS:
                return Verdict.BUSY
            shared = asyncio.ensure_future(self._check_new(key, user, password))
            self._inflight[key] = shared
            shared.add_done_callback(lambda _: self._inflight.pop(key, None))
        # shield: a client that hangs up must not cancel the check others wait for.
        return Verdict.OK if await asyncio.shield(shared) else Verdict.DENIED

    async def _check_new(self, key: bytes, user: str, password: bytes) -> bool:
        async with self._lock:
            hashed = self._lookup(user)
            ok = await asyncio.to_thread(self._verify, password, hashed)
        self._cache[key] = ok
        if len(self._cache) > AUTH_CACHE_SIZE:
            self._cache.popitem(last=False)
        return ok


def parse_basic_authorization(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) of an `Authorization: Basic …` header; None if it is not one."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


# ---- loading ---------------------------------------------------------------------------

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


class _Reader:
    """Walks the parsed YAML and builds errors that name the file, key and line."""

    def __init__(self, path: Path, node: yaml.Node | None) -> None:
        self.path = path
        self.lines: dict[tuple[str, ...], int] = {}
        if node is not None:
            self._index(node, ())

    def _index(self, node: yaml.Node, at: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    here = (*at, str(key.value))
                    self.lines[here] = key.start_mark.line + 1
                    self._index(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                here = (*at, str(i))
                self.lines[here] = item.start_mark.line + 1
                self._index(item, here)

    def error(self, at: tuple[str, ...], message: str) -> WebConfigError:
        where = ".".join(at)
        line = self.lines.get(at)
        suffix = f" (line {line})" if line else ""
        return WebConfigError(f"{self.path}: {where}{suffix}: {message}")

    def mapping(self, value: Any, at: tuple[str, ...], known: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(at, f"must be a mapping, not {_kind(value)}")
        for key in value:
            if not isinstance(key, str) or key not in known:
                hint = TLS_UNSUPPORTED.get(key) if isinstance(key, str) else None
                raise self.error(
                    (*at, str(key)), hint or f"unknown key (known: {', '.join(known)})"
                )
        return value

    def text(self, value: Any, at: tuple[str, ...]) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(at, f"must be a non-empty string, not {_kind(value)}")
        return value

    def strings(self, value: Any, at: tuple[str, ...]) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(at, f"must be a list, not {_kind(value)}")
        return tuple(self.text(v, (*at, str(i))) for i, v in enumerate(value))

    def file(self, value: Any, at: tuple[str, ...]) -> Path:
        path = Path(self.text(value, at))
        if not path.is_absolute():
            path = self.path.parent / path
        if not path.is_file():
            raise self.error(at, f"{path} is not a readable file")
        return path

    def choice(self, value: Any, at: tuple[str, ...], choices: Mapping[str, Any]) -> str:
        if value not in choices:
            raise self.error(at, f"{value!r} is not one of {', '.join(choices)}")
        return str(value)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


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
    r = _Reader(path, node)
    if data is None:
        return WebConfig(path=path)
    if not isinstance(data, dict):
        raise WebConfigError(f"{path}: must be a mapping of {', '.join(TOP_KEYS)}")
    top = r.mapping(data, (), TOP_KEYS)
    tls = _tls(r, top.get("tls_server_config"))
    users = _users(r, top.get("basic_auth_users"))
    headers = _headers(r, top.get("http_server_config"))
    context = _context(r, tls) if tls is not None else None
    if users and tls is None:
        log.warning(
            "basic auth without TLS: passwords cross the network in clear text",
            extra={"web_config": str(path)},
        )
    return WebConfig(path=path, tls=tls, users=users, headers=headers, _context=context)


def _tls(r: _Reader, value: Any) -> TlsServerConfig | None:
    at: tuple[str, ...] = ("tls_server_config",)
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


def _context(r: _Reader, tls: TlsServerConfig) -> ssl.SSLContext:
    at: tuple[str, ...] = ("tls_server_config",)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = tls.min_version
        if tls.max_version is not None:
            context.maximum_version = tls.max_version
    except (ValueError, ssl.SSLError) as err:
        raise r.error((*at, "min_version"), f"not available here: {err}") from err
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as err:
        raise r.error(
            (*at, "key_file"),
            f"cannot load {tls.cert_file} with {tls.key_file} "
            f"(not PEM, or the key does not match the certificate): {err}",
        ) from err
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as err:
            raise r.error(
                (*at, "client_ca_file"), f"cannot load {tls.client_ca_file}: {err}"
            ) from err
    context.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    if tls.cipher_suites:
        try:
            context.set_ciphers(":".join(tls.cipher_suites))
        except ssl.SSLError as err:
            raise r.error((*at, "cipher_suites"), f"OpenSSL offers none of them: {err}") from err
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _users(r: _Reader, value: Any) -> dict[str, bytes]:
    at: tuple[str, ...] = ("basic_auth_users",)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise r.error(at, f"must be a mapping of user to bcrypt hash, not {_kind(value)}")
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


def _headers(r: _Reader, value: Any) -> dict[str, str]:
    at: tuple[str, ...] = ("http_server_config",)
    raw = r.mapping(value, at, HTTP_KEYS)
    http2 = raw.get("http2", True)
    if not isinstance(http2, bool):
        raise r.error((*at, "http2"), "must be true or false")
    headers_at = (*at, "headers")
    headers = raw.get("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise r.error(headers_at, f"must be a mapping, not {_kind(headers)}")
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


class LiveWebConfig:
    """The web configuration a running daemon serves with, replaceable on reload.

    Like exporter-toolkit, which reads its file at every request: after `replace`, users,
    headers and allowed client SANs apply to the next request, and the server certificate
    and key to the next connection. The other TLS settings (on/off, client_auth_type,
    client CA, versions, cipher suites) stay as they were until a restart: OpenSSL keeps
    them from the context a connection started on.
    """

    def __init__(self, config: WebConfig) -> None:
        self._config = config
        self._middleware = config.middleware()
        self._context = config.ssl_context()
        if self._context is not None:
            # Every handshake starts on this context; the callback moves it to the
            # current configuration's certificate (it runs with or without SNI).
            self._context.sni_callback = self._pick_context

    @property
    def config(self) -> WebConfig:
        return self._config

    def replace(self, new: WebConfig) -> list[str]:
        """Serve with `new`; returns the keys whose change waits for a restart."""
        pending = _tls_restart_keys(self._config.tls, new.tls)
        if "tls_server_config" in pending:
            # Keep serving with the running TLS settings, certificate included.
            new = dataclasses.replace(new, tls=self._config.tls, _context=self._context)
        self._config = new
        self._middleware = new.middleware()
        return pending

    def _pick_context(
        self, connection: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext
    ) -> None:
        current = self._config.ssl_context()
        if current is not None:
            connection.context = current

    def ssl_context(self) -> ssl.SSLContext | None:
        return self._context

    def middleware(self) -> Middleware:
        @web.middleware
        async def live_web_config_middleware(
            request: web.Request, handler: Handler
        ) -> web.StreamResponse:
            return await self._middleware(request, handler)

        return live_web_config_middleware


def _tls_restart_keys(old: TlsServerConfig | None, new: TlsServerConfig | None) -> list[str]:
    if (old is None) != (new is None):
        return ["tls_server_config"]
    if old is None or new is None:
        return []
    live = {"cert_file", "key_file", "client_allowed_sans"}
    return [
        f"tls_server_config.{f.name}"
        for f in dataclasses.fields(TlsServerConfig)
        if f.name not in live and getattr(old, f.name) != getattr(new, f.name)
    ]
