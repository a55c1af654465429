"""TLS and basic auth (exporter-toolkit web config) against a real aiohttp server on
loopback, with real TLS clients and certificates made here with the openssl CLI."""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from aiohttp import web

from exporter.config import SettingsError
from exporter.http import build_app
from exporter.scrape import Scraper
from exporter.settings.errors import ConfigFileError
from exporter.web_config import (
    BasicAuth,
    LiveWebConfig,
    Verdict,
    WebConfig,
    WebConfigError,
    load_web_config,
    parse_basic_authorization,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

PASSWORD = "s3cret pass"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path  # signed by a CA the server does not trust
    other_client_key: Path
    hashed: str  # bcrypt hash of PASSWORD, cost 4 (fast tests)


def _ca(name: str, d: Path) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN={name}", cwd=d)  # fmt: skip


def _leaf(name: str, ca: str, san: str, usage: str, d: Path) -> None:
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
             cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name,
             cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _ca("ca", d)
    _ca("rogue-ca", d)
    _leaf("server", "ca", "IP:127.0.0.1,DNS:localhost", "serverAuth", d)
    _leaf("prometheus", "ca", "DNS:prometheus.example.test", "clientAuth", d)
    _leaf("intruder", "rogue-ca", "DNS:prometheus.example.test", "clientAuth", d)
    _leaf("server2", "ca", "IP:127.0.0.1,DNS:localhost", "serverAuth", d)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    return Pki(
        d, d / "ca.crt", d / "server.crt", d / "server.key", d / "prometheus.crt",
        d / "prometheus.key", d / "intruder.crt", d / "intruder.key", hashed,
    )  # fmt: skip


def write_config(pki: Pki, body: str, name: str = "web.yml") -> Path:
    path = pki.dir / name
    path.write_text(textwrap.dedent(body))
    return path


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


Serve = Callable[[WebConfig], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """serve(config) -> base URL of the real app (build_app + the config's middleware and
    SSL context) on a free loopback port."""
    runners: list[web.AppRunner] = []

    async def start(config: WebConfig) -> str:
        app = build_app(Scraper([]), "/metrics")
        app.middlewares.append(config.middleware())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=config.ssl_context())
        await site.start()
        port: int = runner.addresses[0][1]
        scheme = "https" if config.ssl_context() else "http"
        return f"{scheme}://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def client_context(
    pki: Pki, cert: Path | None = None, key: Path | None = None, **versions: Any
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    for attr, value in versions.items():
        setattr(ctx, attr, value)
    return ctx


async def get(
    url: str, ctx: ssl.SSLContext | bool | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, ssl=ctx if ctx is not None else True, headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.text()


# ---- TLS + basic auth through a real server ---------------------------------------------


@pytest.fixture
def tls_auth_config(pki: Pki) -> WebConfig:
    return load_web_config(
        write_config(
            pki,
            f"""\
            tls_server_config:
              cert_file: server.crt
              key_file: {pki.server_key}
            http_server_config:
              headers:
                X-Content-Type-Options: nosniff
                Strict-Transport-Security: max-age=31536000
            basic_auth_users:
              prometheus: '{pki.hashed}'
            """,
        )
    )


async def test_right_credentials_over_tls(
    pki: Pki, serve: Serve, tls_auth_config: WebConfig
) -> None:
    url = await serve(tls_auth_config)
    ctx = client_context(pki)
    for path in ("/metrics", "/-/healthy", "/-/ready", "/"):
        status, headers, body = await get(url + path, ctx, basic("prometheus", PASSWORD))
        assert status == 200, (path, body)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Strict-Transport-Security"] == "max-age=31536000"
    status, _, body = await get(url + "/metrics", ctx, basic("prometheus", PASSWORD))
    assert "l2tp_ipsec_exporter_build_info" in body


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(None, id="missing"),
        pytest.param(basic("prometheus", "wrong"), id="wrong-password"),
        pytest.param(basic("someone", PASSWORD), id="unknown-user"),
        pytest.param(basic("prometheus", PASSWORD + "x" * 80), id="over-72-bytes"),
        pytest.param({"Authorization": "Bearer abc"}, id="other-scheme"),
        pytest.param({"Authorization": "Basic !!!notbase64"}, id="bad-base64"),
        pytest.param(
            {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()}, id="no-colon"
        ),
    ],
)
async def test_wrong_or_missing_credentials_get_401_on_every_endpoint(
    pki: Pki, serve: Serve, tls_auth_config: WebConfig, headers: dict[str, str] | None
) -> None:
    url = await serve(tls_auth_config)
    ctx = client_context(pki)
    for path in ("/metrics", "/-/healthy", "/", "/no-such-page"):
        status, got, body = await get(url + path, ctx, headers)
        assert status == 401, (path, status, body)
        assert got["WWW-Authenticate"].startswith("Basic realm=")
        assert got["X-Content-Type-Options"] == "nosniff"
        assert "l2tp_ipsec" not in body


async def test_plain_http_to_the_tls_port_is_refused(
    pki: Pki, serve: Serve, tls_auth_config: WebConfig
) -> None:
    url = await serve(tls_auth_config)
    plain = url.replace("https://", "http://")
    with pytest.raises(aiohttp.ClientError):
        await get(plain + "/-/healthy", headers=basic("prometheus", PASSWORD))


async def test_client_that_does_not_trust_the_server_cannot_connect(
    pki: Pki, serve: Serve, tls_auth_config: WebConfig
) -> None:
    url = await serve(tls_auth_config)
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(url + "/-/healthy", ssl.create_default_context())


async def test_bcrypt_runs_once_per_credential(
    pki: Pki, serve: Serve, tls_auth_config: WebConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    url = await serve(tls_auth_config)
    ctx = client_context(pki)
    for _ in range(5):
        assert (await get(url + "/-/healthy", ctx, basic("prometheus", PASSWORD)))[0] == 200
        assert (await get(url + "/-/healthy", ctx, basic("prometheus", "nope")))[0] == 401
    assert sorted(calls) == [b"nope", PASSWORD.encode()]


async def test_concurrent_first_requests_share_one_check(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        nonlocal calls
        calls += 1
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    auth = BasicAuth({"prometheus": pki.hashed.encode()})
    header = basic("prometheus", PASSWORD)["Authorization"]
    # More than MAX_PENDING_CHECKS at once: identical credentials share one check.
    verdicts = await asyncio.gather(*(auth.check(header) for _ in range(100)))
    assert verdicts == [Verdict.OK] * 100
    assert calls == 1


async def test_a_flood_of_new_passwords_is_bounded(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("exporter.web_config.basic_auth.MAX_PENDING_CHECKS", 3)
    auth = BasicAuth({"prometheus": pki.hashed.encode()})
    headers = [basic("prometheus", f"guess{i}")["Authorization"] for i in range(10)]
    verdicts = await asyncio.gather(*(auth.check(h) for h in headers))
    assert verdicts.count(Verdict.BUSY) == 7
    assert verdicts.count(Verdict.DENIED) == 3


async def test_unknown_user_is_checked_against_a_dummy_hash(pki: Pki) -> None:
    auth = BasicAuth({"prometheus": pki.hashed.encode()})
    assert await auth.check(basic("ghost", PASSWORD)["Authorization"]) is Verdict.DENIED
    assert auth.checks == 1  # bcrypt ran, as for a known user


# ---- client certificates ----------------------------------------------------------------


@pytest.fixture
def mtls_config(pki: Pki) -> WebConfig:
    return load_web_config(
        write_config(
            pki,
            """\
            tls_server_config:
              cert_file: server.crt
              key_file: server.key
              client_auth_type: RequireAndVerifyClientCert
              client_ca_file: ca.crt
              min_version: TLS12
              max_version: TLS13
              cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
            """,
            "mtls.yml",
        )
    )


async def test_client_certificate_required_and_verified(
    pki: Pki, serve: Serve, mtls_config: WebConfig
) -> None:
    url = await serve(mtls_config)
    good = client_context(pki, pki.client_cert, pki.client_key)
    assert (await get(url + "/-/healthy", good))[0] == 200
    # TLS 1.3 reports a refused client certificate only after the handshake, at the read.
    with pytest.raises(aiohttp.ClientError):
        await get(url + "/-/healthy", client_context(pki))
    with pytest.raises(aiohttp.ClientError):
        await get(
            url + "/-/healthy", client_context(pki, pki.other_client_cert, pki.other_client_key)
        )


async def test_client_certificate_over_tls12_with_the_configured_suite(
    pki: Pki, serve: Serve, mtls_config: WebConfig
) -> None:
    url = await serve(mtls_config)
    ctx = client_context(pki, pki.client_cert, pki.client_key,
                         maximum_version=ssl.TLSVersion.TLSv1_2)  # fmt: skip
    assert (await get(url + "/-/healthy", ctx))[0] == 200
    with pytest.raises(aiohttp.ClientError):
        await get(url + "/-/healthy", client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2))


async def test_client_allowed_sans(pki: Pki, serve: Serve) -> None:
    body = """\
        tls_server_config:
          cert_file: server.crt
          key_file: server.key
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: ca.crt
          client_allowed_sans: [{san}]
        """
    good = client_context(pki, pki.client_cert, pki.client_key)
    allowed = load_web_config(
        write_config(pki, body.format(san="prometheus.example.test"), "s1.yml")
    )
    assert (await get(await serve(allowed) + "/-/healthy", good))[0] == 200
    other = load_web_config(write_config(pki, body.format(san="grafana.example.test"), "s2.yml"))
    status, _, text = await get(await serve(other) + "/-/healthy", good)
    assert status == 403, text


async def test_verify_if_given(pki: Pki, serve: Serve) -> None:
    config = load_web_config(write_config(pki, """\
        tls_server_config:
          cert_file: server.crt
          key_file: server.key
          client_auth_type: VerifyClientCertIfGiven
          client_ca_file: ca.crt
        """, "optional.yml"))  # fmt: skip
    url = await serve(config)
    assert (await get(url + "/-/healthy", client_context(pki)))[0] == 200
    assert (await get(url + "/-/healthy", client_context(pki, pki.client_cert, pki.client_key)))[
        0
    ] == 200
    with pytest.raises(aiohttp.ClientError):
        await get(
            url + "/-/healthy", client_context(pki, pki.other_client_cert, pki.other_client_key)
        )


async def test_min_version_tls13_refuses_a_tls12_client(pki: Pki, serve: Serve) -> None:
    config = load_web_config(write_config(pki, """\
        tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS13}
        """, "tls13.yml"))  # fmt: skip
    url = await serve(config)
    assert (await get(url + "/-/healthy", client_context(pki)))[0] == 200
    with pytest.raises(aiohttp.ClientError):
        await get(url + "/-/healthy", client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2))


async def test_basic_auth_without_tls(
    pki: Pki, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_web_config(
        write_config(pki, f"basic_auth_users: {{u: '{pki.hashed}'}}\n", "p.yml")
    )
    assert config.ssl_context() is None
    assert "clear text" in caplog.text
    url = await serve(config)
    assert (await get(url + "/-/healthy", headers=basic("u", PASSWORD)))[0] == 200
    assert (await get(url + "/-/healthy"))[0] == 401


async def test_empty_file_changes_nothing(pki: Pki, serve: Serve) -> None:
    config = load_web_config(write_config(pki, "# nothing configured\n", "empty.yml"))
    assert config.ssl_context() is None and not config.users
    assert (await get(await serve(config) + "/-/healthy"))[0] == 200


# ---- reload: LiveWebConfig ------------------------------------------------------------


async def served_certificate_cn(url: str, ctx: ssl.SSLContext) -> str:
    host, port = url.removeprefix("https://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    cert = writer.get_extra_info("peercert")
    writer.close()
    await writer.wait_closed()
    return str(dict(x[0] for x in cert["subject"])["commonName"])


async def test_reload_swaps_certificate_users_and_headers(pki: Pki) -> None:
    other = bcrypt.hashpw(b"new password", bcrypt.gensalt(4)).decode()
    body = """\
        tls_server_config: {{cert_file: {cert}.crt, key_file: {cert}.key}}
        http_server_config: {{headers: {{X-Frame-Options: {frame}}}}}
        basic_auth_users: {{prometheus: '{hashed}'}}
        """
    text = body.format(cert="server", frame="deny", hashed=pki.hashed)
    first = load_web_config(write_config(pki, text, "r1.yml"))
    live = LiveWebConfig(first)
    app = build_app(Scraper([]), "/metrics")
    app.middlewares.append(live.middleware())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=live.ssl_context())
    await site.start()
    port: int = runner.addresses[0][1]
    url = f"https://127.0.0.1:{port}"
    ctx = client_context(pki)
    try:
        assert await served_certificate_cn(url, ctx) == "server"
        status, headers, _ = await get(url + "/-/healthy", ctx, basic("prometheus", PASSWORD))
        assert (status, headers["X-Frame-Options"]) == (200, "deny")

        text = body.format(cert="server2", frame="sameorigin", hashed=other)
        second = load_web_config(write_config(pki, text, "r2.yml"))
        assert live.replace(second) == []
        assert await served_certificate_cn(url, ctx) == "server2"
        assert (await get(url + "/-/healthy", ctx, basic("prometheus", PASSWORD)))[0] == 401
        status, headers, _ = await get(url + "/-/healthy", ctx, basic("prometheus", "new password"))
        assert (status, headers["X-Frame-Options"]) == (200, "sameorigin")
    finally:
        await runner.cleanup()


def test_reload_names_what_waits_for_a_restart(pki: Pki) -> None:
    tls = load_web_config(write_config(pki, "tls_server_config: {cert_file: server.crt, "
                                            "key_file: server.key}\n", "t1.yml"))  # fmt: skip
    tls13 = load_web_config(write_config(pki, "tls_server_config: {cert_file: server2.crt, "
                                              "key_file: server2.key, min_version: TLS13}\n",
                                         "t2.yml"))  # fmt: skip
    plain = load_web_config(
        write_config(pki, f"basic_auth_users: {{u: '{pki.hashed}'}}\n", "t3.yml")
    )
    live = LiveWebConfig(tls)
    assert live.replace(tls13) == ["tls_server_config.min_version"]
    assert live.config.tls is not None and live.config.tls.cert_file.name == "server2.crt"
    assert live.replace(plain) == ["tls_server_config"]
    assert live.config.users and live.config.ssl_context() is tls.ssl_context()


# ---- bad files: one clear message naming the key ----------------------------------------

BAD = {
    "unknown-top-key": ("basic_auth_user: {}\n", "bad.yml:1: basic_auth_user: unknown key"),
    "not-a-mapping": ("- a\n- b\n", "bad.yml: (top level): expected a mapping of tls_"),
    "yaml-syntax": ("tls_server_config: {cert_file: [\n", "bad.yml:2: not valid YAML"),
    "missing-key-file": (
        "tls_server_config:\n  cert_file: server.crt\n",
        "bad.yml:1: tls_server_config.key_file: missing",
    ),
    "cert-not-found": (
        "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n",
        "bad.yml:2: tls_server_config.cert_file:",
    ),
    "key-does-not-match": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: prometheus.key\n",
        "bad.yml:3: tls_server_config.key_file: cannot load",
    ),
    "bad-auth-type": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: Sometimes\n",
        "bad.yml:4: tls_server_config.client_auth_type: 'Sometimes' is not one of",
    ),
    "unverified-client-cert": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAnyClientCert\n",
        "RequireAnyClientCert (a client certificate that is not verified) is not supported",
    ),
    "verify-without-ca": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n",
        "needs client_ca_file",
    ),
    "ca-without-auth-type": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_ca_file: ca.crt\n",
        "bad.yml:4: tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert",
    ),
    "bad-min-version": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  min_version: SSL3\n",
        "bad.yml:4: tls_server_config.min_version: ",
    ),
    "max-below-min": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  min_version: TLS13\n  max_version: TLS12\n",
        "bad.yml:5: tls_server_config.max_version: is below min_version",
    ),
    "unknown-cipher": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  cipher_suites:\n    - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n    - TLS_FANCY\n",
        "bad.yml:6: tls_server_config.cipher_suites.1: unknown cipher suite 'TLS_FANCY'",
    ),
    "curve-preferences": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  curve_preferences: [X25519]\n",
        "bad.yml:4: tls_server_config.curve_preferences: Python's ssl module cannot order curves",
    ),
    "inline-cert": (
        "tls_server_config:\n  cert: '-----BEGIN CERTIFICATE-----'\n",
        "bad.yml:2: tls_server_config.cert: inline certificates are not supported",
    ),
    "auth-type-list": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: [RequireAndVerifyClientCert]\n",
        "bad.yml:4: tls_server_config.client_auth_type: ['RequireAndVerifyClientCert'] is not",
    ),
    "min-version-list": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  min_version: [TLS13]\n",
        "bad.yml:4: tls_server_config.min_version: ['TLS13'] is not one of",
    ),
    "plain-password": (
        "basic_auth_users:\n  prometheus: hunter2\n",
        "bad.yml:2: basic_auth_users.prometheus: is not a bcrypt hash",
    ),
    "users-list": ("basic_auth_users: [a, b]\n", "bad.yml:1: basic_auth_users: must be a mapping"),
    "colon-in-user": (
        "basic_auth_users:\n  'a:b': $2y$04$" + "a" * 53 + "\n",
        "a user name must be a non-empty string without ':'",
    ),
    "forbidden-header": (
        "http_server_config:\n  headers:\n    Set-Cookie: a=b\n",
        "bad.yml:3: http_server_config.headers.Set-Cookie: cannot be set",
    ),
    "bad-frame-options": (
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        "must be one of deny, sameorigin",
    ),
    "http2-not-bool": ("http_server_config: {http2: maybe}\n", "http_server_config.http2"),
    "duplicate-user": (
        "basic_auth_users:\n  a: $2y$04$" + "a" * 53 + "\n  a: $2y$04$" + "b" * 53 + "\n",
        "bad.yml:3: basic_auth_users.a: duplicate key (first on line 2)",
    ),
    "duplicate-section": (
        "http_server_config: {}\nhttp_server_config: {http2: true}\n",
        "bad.yml:2: http_server_config: duplicate key (first on line 1)",
    ),
    "bcrypt-cost-31": (
        "basic_auth_users:\n  a: $2y$31$" + "a" * 53 + "\n",
        "bad.yml:2: basic_auth_users.a: bcrypt cost 31 is outside 4-14",
    ),
    "alias-bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
            for p, n in zip("abcdef", "bcdefg", strict=True)
        ),
        "more than 10000 values, aliases expanded",
    ),
}


@pytest.mark.parametrize(("text", "expected"), BAD.values(), ids=BAD.keys())
def test_bad_file_gives_one_clear_message(pki: Pki, text: str, expected: str) -> None:
    path = write_config(pki, text, "bad.yml")
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    assert expected in message, message
    assert "\n" not in message
    assert isinstance(info.value, SettingsError)


def test_a_bad_value_deep_in_the_file_names_file_line_and_key(pki: Pki) -> None:
    """The one error format of every YAML file the exporter reads: `FILE:LINE: KEY: message`."""
    path = write_config(pki, f"""\
        # web configuration
        tls_server_config:
          cert_file: server.crt
          key_file: server.key
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: ca.crt
          client_allowed_sans:
            - prometheus.example.net
            - ''
        basic_auth_users:
          prometheus: {pki.hashed}
        """, "deep.yml")  # fmt: skip
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    assert str(info.value) == (
        f"{path}:9: tls_server_config.client_allowed_sans.1: expected a non-empty string, got ''"
    )
    assert isinstance(info.value, ConfigFileError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match="cannot read the web configuration: No such file"):
        load_web_config(tmp_path / "absent.yml")


def test_toolkit_example_file_loads(pki: Pki) -> None:
    """The shape of exporter-toolkit's documented example (bcrypt hash of 'test')."""
    config = load_web_config(write_config(pki, """\
        tls_server_config:
          cert_file: server.crt
          key_file: server.key
          client_auth_type: "NoClientCert"
          min_version: "TLS12"
          prefer_server_cipher_suites: true
        http_server_config:
          http2: true
        basic_auth_users:
          alice: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze
          bob: $2y$10$hLqFl9jSjoAAy95Z/zw8Ye8wkdMBM8c5Bn1ptYqP/AXyV0.oy0S8m
        """, "toolkit.yml"))  # fmt: skip
    assert sorted(config.users) == ["alice", "bob"]
    assert config.ssl_context() is not None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("Basic " + base64.b64encode(b"u:p:q").decode(), ("u", b"p:q")),
        ("basic " + base64.b64encode(b"u:").decode(), ("u", b"")),
        ("Basic " + base64.b64encode(b"\xff:p").decode(), None),
        ("Basic", None),
        ("Digest abc", None),
    ],
)
def test_parse_basic_authorization(header: str | None, expected: Any) -> None:
    assert parse_basic_authorization(header) == expected
