"""The HTTP side under abuse, on a real server on loopback: the daemon's app (build_app,
the /probe routes, the web config middleware with basic auth) behind aiohttp's server.

Bad query strings, huge or malformed requests and many slow clients may get 4xx or a
closed connection, never a 5xx, and the daemon keeps answering /-/healthy promptly.
Every test is bounded in time and count, and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.http import build_app
from exporter.probes.config import parse_probe_settings
from exporter.probes.handler import add_probe_routes
from exporter.scrape import Scraper
from exporter.web_config import WebConfig

from .helpers import HOSTILE

PASSWORD = "hostile-test"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4))
AUTH = {"Authorization": "Basic " + base64.b64encode(f"prom:{PASSWORD}".encode()).decode()}
#: /-/healthy must answer within this while the server is being abused.
HEALTHY_WITHIN = 2.0


@dataclass
class Server:
    port: int
    errors: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def make_app(with_auth: bool) -> web.Application:
    app = build_app(Scraper([]), "/metrics")
    settings = parse_probe_settings(
        {
            "modules": {"v2": {"prober": "ike", "timeout": "1s", "ike": {"attempts": 1}}},
            "probe": {"max_concurrent": 2, "allowed_targets": ["127.0.0.0/8"]},
        }
    )
    add_probe_routes(app, settings)
    if with_auth:
        app.middlewares.append(WebConfig(users={"prom": HASH}).middleware())
    return app


async def start(with_auth: bool) -> tuple[web.AppRunner, Server]:
    runner = web.AppRunner(make_app(with_auth), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, Server(port, [])


@pytest.fixture(params=[False, True], ids=["open", "basic-auth"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    runner, srv = await start(request.param)
    yield srv
    await runner.cleanup()


async def healthy(srv: Server, auth: bool = True) -> None:
    """GET /-/healthy answers 200 (401 without credentials behind auth) in time."""
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=HEALTHY_WITHIN)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(srv.url + "/-/healthy", headers=AUTH if auth else None) as resp,
    ):
        assert resp.status == 200, await resp.text()
    assert time.monotonic() - started < HEALTHY_WITHIN


async def raw_exchange(port: int, request: bytes, timeout: float = 5.0) -> int | None:
    """Send raw bytes; the status code of the answer, or None if the server closed the
    connection without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            line = await reader.readline()
    except (ConnectionError, OSError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    if not line:
        return None
    parts = line.split()
    assert parts[0].startswith(b"HTTP/"), line
    return int(parts[1])


def request(target: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", errors="surrogateescape")


def auth_header() -> str:
    return f"Authorization: {AUTH['Authorization']}"


# ---- query strings -----------------------------------------------------------------------

query_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["v2", "127.0.0.1", "127.0.0.1:1", "[::1]:500", "10.0.0.1", "true"]),
)
queries = st.lists(
    st.tuples(st.sampled_from(["module", "target", "debug", "x", ""]), query_values),
    max_size=5,
)


@HOSTILE
@given(queries, st.sampled_from(["/probe", "/metrics"]))
@example([("module", "v2"), ("module", "nope"), ("target", "127.0.0.1:9")], "/probe")
@example([("target", "%00"), ("module", "\udcff")], "/probe")
@example([("module", "v2"), ("target", "255.255.255.255")], "/probe")
@example([("module", "v2"), ("target", "[::1")], "/probe")
async def test_bad_query_strings(pairs: list[tuple[str, str]], path: str) -> None:
    runner, srv = await start(with_auth=False)
    try:
        query = "&".join(
            f"{quote(k, safe='')}={quote(v.encode('utf-8', 'surrogateescape'), safe='')}"
            for k, v in pairs
        )
        status = await raw_exchange(srv.port, request(f"{path}?{query}"))
        assert status is not None and status < 500, (path, query, status)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "target",
    [
        "/probe?module=%ff%fe&target=%ff",  # not UTF-8 after decoding
        "/probe?module=v2&target=127.0.0.1%00evil",
        "/probe?module=v2&target=" + "1" * 4000,
        "/probe?" + "&".join(f"module={i}" for i in range(500)),
        "/probe?module=v2&target=127.0.0.1:0",
        "/probe?module=v2&target=127.0.0.1:65536",
        "/probe?module=v2&target=%5B%3A%3A1%5D%3Aabc",
        "/probe?module=v2&target=http://127.0.0.1/",
        "/probe?module=v2&target=user@127.0.0.1",
        "/probe?%%%=%%%",
        "/metrics?%zz",
        "/metrics?" + "a=b&" * 1500,
        "/%2e%2e/%2e%2e/etc/passwd",
        "//metrics",
        "/metrics/../-/healthy",
        "*",
    ],
)
async def test_malformed_targets(server: Server, target: str) -> None:
    status = await raw_exchange(server.port, request(target, auth_header()))
    assert status is None or status < 500, (target, status)
    await healthy(server)


# ---- malformed and huge requests ----------------------------------------------------------

MALFORMED = {
    "huge-header": request("/metrics", auth_header(), "X-Big: " + "a" * 100_000),
    "huge-url": request("/metrics?" + "a" * 100_000, auth_header()),
    "many-headers": request("/metrics", auth_header(), *(f"X-H{i}: v" for i in range(5000))),
    "huge-authorization": request("/metrics", "Authorization: Basic " + "QUFB" * 20_000),
    "long-password": request(
        "/metrics",
        "Authorization: Basic " + base64.b64encode(b"prom:" + b"x" * 5000).decode(),
    ),
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
    "bad-method": request("/metrics", method="G\x00T"),
    "http-0.9": b"GET /metrics\r\n\r\n",
    "bad-version": b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n",
    "no-host-lf-only": b"GET /metrics HTTP/1.1\n\n",
    "header-without-colon": request("/metrics", "NoColonHere"),
    "bad-content-length": request("/metrics", auth_header(), "Content-Length: -5"),
    "two-content-lengths": request(
        "/metrics", auth_header(), "Content-Length: 5", "Content-Length: 6"
    ),
    "chunked-garbage": request("/metrics", auth_header(), "Transfer-Encoding: chunked") + b"zz\r\n",
    "unicode-header": request("/metrics", auth_header(), "X-\u00e9: \u00e9"),
    "post-reload-huge-body": request(
        "/-/reload", auth_header(), "Content-Length: 10000000", method="POST"
    )
    + b"a" * 1000,
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_requests(server: Server, data: bytes) -> None:
    status = await raw_exchange(server.port, data)
    assert status is None or status < 500, status
    await healthy(server)


async def test_huge_header_is_refused_with_4xx(server: Server) -> None:
    assert (await raw_exchange(server.port, MALFORMED["huge-header"])) in (400, 431)


# ---- many concurrent slow clients ---------------------------------------------------------

#: Bounded: this many connections for this long, loopback only.
SLOW_CLIENTS = 200
SLOW_SECONDS = 3.0


async def _slowloris(port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """Open a connection and dribble a never-ending header, a byte at a time."""
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    opened.append(1)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        while not stop.is_set():
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(0.2)
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _slow_reader(port: int, stop: asyncio.Event) -> None:
    """Ask for /metrics and never read the answer."""
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    try:
        writer.write(request("/metrics", auth_header()).replace(b"close", b"keep-alive") * 50)
        await writer.drain()
        await stop.wait()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def test_many_slow_clients_do_not_starve_healthy(server: Server) -> None:
    stop = asyncio.Event()
    opened: list[int] = []
    clients = [
        asyncio.create_task(_slowloris(server.port, stop, opened)) for _ in range(SLOW_CLIENTS)
    ] + [asyncio.create_task(_slow_reader(server.port, stop)) for _ in range(20)]
    try:
        deadline = time.monotonic() + SLOW_SECONDS
        checks = 0
        while time.monotonic() < deadline:
            await healthy(server)
            checks += 1
            await asyncio.sleep(0.2)
        assert len(opened) >= SLOW_CLIENTS * 0.9, len(opened)
        assert checks >= 5
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*clients, return_exceptions=True)
    await healthy(server)


async def test_wrong_password_flood_does_not_starve_known_credentials() -> None:
    """Distinct wrong passwords each cost a bcrypt check; they queue in one worker thread
    (and beyond a bound get 429), while cached right credentials keep getting through."""
    runner, srv = await start(with_auth=True)
    try:
        await healthy(srv)  # the right credentials are checked once, then cached

        async def guess(i: int) -> int:
            header = "Basic " + base64.b64encode(f"prom:guess{i}".encode()).decode()
            timeout = aiohttp.ClientTimeout(total=30)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(srv.url + "/metrics", headers={"Authorization": header}) as resp,
            ):
                return resp.status

        flood = [asyncio.create_task(guess(i)) for i in range(100)]
        for _ in range(5):
            await healthy(srv)
        statuses = await asyncio.gather(*flood)
        assert set(statuses) <= {401, 429}, statuses
    finally:
        await runner.cleanup()


async def test_concurrent_scrapes_and_probes(server: Server) -> None:
    async def one(i: int) -> int:
        path = "/metrics" if i % 2 else "/probe?module=v2&target=127.0.0.1:9"
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(server.url + path, headers=AUTH) as resp,
        ):
            await resp.read()
            return resp.status

    statuses = await asyncio.gather(*(one(i) for i in range(40)))
    assert set(statuses) == {200}, statuses
    await healthy(server)
