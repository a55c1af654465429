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
import logging
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter.demo.lab.process import stop
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
    port: int = runner.addresses[0][1]
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
        path = "/metrics" if i % 2 else "/probe?module=v2&target=127.0.0.1"
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


# ---- the daemon under connection abuse (a real `python -m exporter` process) -------------
#
# Each test starts the exporter as the shipped unit would before LimitNOFILE: 1,024 file
# descriptors, soft and hard. The daemon serves with the VICI socket missing.

REPO = Path(__file__).resolve().parents[2]
#: Short deadlines so the tests stay quick; the defaults are 5 s and 60 s.
HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    tls: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout, context=self.tls) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def post(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        req = urllib.request.Request(self.url + path, method="POST", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.tls) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def metric(self, name: str) -> float:
        status, text = self.get("/metrics")
        assert status == 200, text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return float(sample.value)
        raise AssertionError(f"{name} not in the scrape")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def daemon(
    tmp_path: Path,
    *flags: str,
    nofile: tuple[int, int] = (1024, 1024),
    tls: ssl.SSLContext | None = None,
) -> Iterator[Daemon]:
    port = _free_port()
    log = tmp_path / f"exporter-{port}.log"

    def limit_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}",
             "--vici.socket", f"unix://{tmp_path}/absent.vici", *flags],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=limit_fds,
        )  # fmt: skip
    found = Daemon(proc, port, log, tls)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                found.get("/-/healthy", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield found
    finally:
        stop(proc)


@contextlib.contextmanager
def client_fds(count: int) -> Iterator[None]:
    """Room in this process for `count` client sockets (the hard limit allowing)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_idle(port: int, count: int, source: str = "127.0.0.2") -> list[socket.socket]:
    """`count` TCP connections that never send a byte, from another loopback address than
    the test's own requests. Non-blocking connects, paced so the listen backlog does not
    drop SYNs: the kernel completes them whether or not the exporter accepts."""
    sockets = []
    for i in range(count):
        s = socket.socket()
        s.bind((source, 0))
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sockets.append(s)
        if i % 50 == 49:
            time.sleep(0.02)
    return sockets


def closed_by_peer(s: socket.socket) -> bool:
    """True once the exporter has closed this connection (EOF or reset)."""
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def wait_closed(sockets: list[socket.socket], within: float) -> float:
    """Seconds until every socket was closed by the exporter; fails after `within`."""
    started = time.monotonic()
    while True:
        open_ = [s for s in sockets if not closed_by_peer(s)]
        if not open_:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"{len(open_)} still open after {within} s"
        time.sleep(0.05)


def test_idle_connection_flood_does_not_take_the_exporter_down(tmp_path: Path) -> None:
    """1,100 idle connections against 1,024 file descriptors (the issue's attack): /metrics
    still answers during the flood, every idle connection is closed within the header
    deadline, and the log stays quiet."""
    with (
        client_fds(1200),
        daemon(tmp_path, f"--web.header-timeout={HEADER_TIMEOUT}") as exp,
    ):
        before = len(exp.lines())
        idle = open_idle(exp.port, 1100)
        try:
            time.sleep(0.5)  # let the exporter accept what it will
            status, text = exp.get("/metrics", timeout=3)
            assert status == 200, text
            assert exp.metric("l2tp_ipsec_exporter_http_connections") <= 512
            waited = wait_closed(idle, within=HEADER_TIMEOUT + 3)
        finally:
            for s in idle:
                s.close()
        assert exp.get("/metrics")[0] == 200
        dropped = exp.metric("l2tp_ipsec_exporter_http_connections_rejected_total") + sum(
            sample.value
            for family in text_string_to_metric_families(exp.get("/metrics")[1])
            if family.name == "l2tp_ipsec_exporter_http_connections_dropped"
            for sample in family.samples
            if sample.name.endswith("_total")
        )
        assert dropped >= 1100, dropped
        new_lines = exp.lines()[before:]
        assert not any("out of system resource" in line for line in new_lines), new_lines[:5]
        assert len(new_lines) <= 3, new_lines
        print(f"all 1,100 idle connections closed {waited:.2f} s after the flood; "
              f"{len(new_lines)} log lines")  # fmt: skip


def test_slow_header_is_cut_at_the_header_deadline(tmp_path: Path) -> None:
    """A client dribbling one header byte every 0.2 s is closed after the header deadline,
    not kept for the idle timeout (or for ever)."""
    with daemon(tmp_path, f"--web.header-timeout={HEADER_TIMEOUT}") as exp:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", exp.port), timeout=1) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            closed_after = None
            while time.monotonic() - started < HEADER_TIMEOUT + 3:
                try:
                    s.sendall(b"a")
                    s.settimeout(0.2)
                    if s.recv(1) == b"":
                        closed_after = time.monotonic() - started
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed_after = time.monotonic() - started
                    break
        assert closed_after is not None, "the slow client was never cut off"
        assert HEADER_TIMEOUT * 0.8 <= closed_after <= HEADER_TIMEOUT + 1.5, closed_after


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    with (
        daemon(tmp_path, f"--web.idle-timeout={IDLE_TIMEOUT}") as exp,
        socket.create_connection(("127.0.0.1", exp.port), timeout=10) as s,
    ):
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        answered = time.monotonic()
        s.settimeout(IDLE_TIMEOUT + 3)
        try:
            rest = s.recv(4096)
        except TimeoutError:
            pytest.fail(f"the idle connection was still open after {IDLE_TIMEOUT + 3} s")
        assert rest == b""
        assert IDLE_TIMEOUT * 0.8 <= time.monotonic() - answered <= IDLE_TIMEOUT + 1.5


def test_keep_alive_requests_are_not_cut_by_the_header_deadline(tmp_path: Path) -> None:
    """Prometheus keeps its connection between scrapes: pauses longer than the header
    deadline between requests are idle time, not a slow request."""
    with (
        daemon(tmp_path, f"--web.header-timeout={HEADER_TIMEOUT}", "--web.idle-timeout=10") as exp,
        socket.create_connection(("127.0.0.1", exp.port), timeout=5) as s,
    ):
        for _ in range(3):
            s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            time.sleep(HEADER_TIMEOUT * 1.5)
        # Two pipelined requests in one write are both answered.
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        answers = b""
        while answers.count(b"HTTP/1.1 200") < 2:
            chunk = s.recv(4096)
            assert chunk, answers
            answers += chunk


def test_at_the_cap_idle_keep_alive_connections_make_room(tmp_path: Path) -> None:
    """Clients that asked once and then hold their keep-alive connection open do not lock
    new clients out: at the cap the longest idle one is closed for the newcomer."""
    with daemon(tmp_path, "--web.max-connections=5", "--web.idle-timeout=30") as exp:
        held = []
        try:
            for _ in range(5):
                s = socket.create_connection(("127.0.0.1", exp.port), timeout=5)
                s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
                held.append(s)
            for _ in range(3):
                assert exp.get("/-/healthy", timeout=3)[0] == 200
        finally:
            for s in held:
                s.close()


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    web = folder / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    return cert, key, web


def test_tls_clients_that_never_finish_are_cut_at_the_header_deadline(tmp_path: Path) -> None:
    """Under TLS the header deadline counts from the connection: a client that never sends
    a ClientHello, one that stops mid-handshake and one that completes the handshake but
    never sends a request are all closed within it."""
    cert, _key, web = _tls_files(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    with daemon(
        tmp_path, f"--web.header-timeout={HEADER_TIMEOUT}", "--web.config.file", str(web),
        tls=context,
    ) as exp:  # fmt: skip
        assert exp.get("/-/healthy")[0] == 200
        silent = socket.create_connection(("127.0.0.1", exp.port))
        half = socket.create_connection(("127.0.0.1", exp.port))
        half.sendall(MALFORMED["garbage"][:11])  # the start of a ClientHello, never finished
        quiet = context.wrap_socket(
            socket.create_connection(("127.0.0.1", exp.port)), server_hostname="127.0.0.1"
        )
        try:
            for s in (silent, half, quiet):
                s.setblocking(False)
            waited = wait_closed([silent, half, quiet], within=HEADER_TIMEOUT + 2)
        finally:
            for s in (silent, half, quiet):
                s.close()
        assert waited <= HEADER_TIMEOUT + 1.5
        assert exp.get("/-/healthy")[0] == 200


def test_tls_handshake_flood_is_capped_and_counted(tmp_path: Path) -> None:
    """Connections stuck before their TLS handshake count against the cap like any other,
    and the count goes back down when they are gone."""
    cert, _key, web = _tls_files(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    with (
        client_fds(700),
        daemon(
            tmp_path, f"--web.header-timeout={HEADER_TIMEOUT}", "--web.config.file", str(web),
            "--web.max-connections=200", tls=context,
        ) as exp,
    ):  # fmt: skip
        idle = open_idle(exp.port, 600)
        try:
            time.sleep(0.5)
            assert exp.get("/-/healthy", timeout=3)[0] == 200
            assert exp.metric("l2tp_ipsec_exporter_http_connections") <= 200
            wait_closed(idle, within=HEADER_TIMEOUT + 3)
        finally:
            for s in idle:
                s.close()
        time.sleep(0.3)
        assert exp.metric("l2tp_ipsec_exporter_http_connections") == 1  # this scrape's own


def test_max_connections_beyond_the_hard_fd_limit_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}",
         "--vici.socket", f"unix://{tmp_path}/absent.vici", "--web.max-connections=5000"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=20,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)),
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1, lines
    assert "--web.max-connections" in lines[0] and "1024" in lines[0], lines[0]


def test_the_soft_fd_limit_is_raised_to_what_the_cap_needs(tmp_path: Path) -> None:
    with daemon(tmp_path, "--web.max-connections=2000", nofile=(1024, 8192)) as exp:
        soft = int(
            next(
                line.split()[3]
                for line in Path(f"/proc/{exp.proc.pid}/limits").read_text().splitlines()
                if line.startswith("Max open files")
            )
        )
        assert soft > 2000, soft
        assert exp.metric("l2tp_ipsec_exporter_http_max_connections") == 2000


async def test_when_every_connection_is_busy_a_new_one_is_closed_at_once() -> None:
    """The gate in process, with a handler that holds its request: at the cap with no
    connection to spare, the newcomer is closed at once and counted; once the requests
    are answered there is room again."""
    from exporter.config import WebLimits
    from exporter.http_limits import ConnectionGate, LimitedSite

    release = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    def new_handler() -> asyncio.Protocol:
        assert runner.server is not None
        return runner.server()

    gate = ConnectionGate(WebLimits(max_connections=2), new_handler)
    app = web.Application(middlewares=[gate.middleware()])
    app.router.add_get("/slow", slow)
    app.router.add_get("/fast", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = LimitedSite(runner, "127.0.0.1", 0, gate)
    await site.start()
    port: int = runner.addresses[0][1]
    try:
        busy = [
            asyncio.create_task(raw_exchange(port, request("/slow"), timeout=10)) for _ in range(2)
        ]
        while sum(c._busy for c in gate._open) < 2:
            await asyncio.sleep(0.01)
        assert await raw_exchange(port, request("/fast"), timeout=2) is None  # closed at once
        assert gate.rejected == 1 and gate.evicted == 0
        release.set()
        assert await asyncio.gather(*busy) == [200, 200]
        assert await raw_exchange(port, request("/fast")) == 200
    finally:
        release.set()
        await runner.cleanup()


async def test_accept_exhaustion_is_one_line_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    """The last line of defence if descriptors run out anyway (another part of the process
    leaking them): asyncio reports EMFILE once per backlogged connection per second."""
    from exporter.fds import quiet_accept_exhaustion

    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    quiet_accept_exhaustion(loop)
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(1000):
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many open files"),
                    }
                )
            loop.call_exception_handler({"message": "something else"})
    finally:
        loop.set_exception_handler(previous)
    exhausted = [r for r in caplog.records if "file descriptors" in r.getMessage()]
    assert len(exhausted) == 1 and not exhausted[0].exc_info
    assert any(r.getMessage() == "something else" for r in caplog.records)


# ---- item 13: malformed requests are one debug line, not a traceback -----------------------

LOUD = ["huge-header", "huge-url", "many-headers", "bad-version", "header-without-colon"]


@pytest.mark.parametrize("level", ["info", "debug"])
def test_malformed_requests_log_one_debug_line_each(tmp_path: Path, level: str) -> None:
    with daemon(tmp_path, f"--log.level={level}") as exp:
        time.sleep(0.3)
        before = len(exp.lines())
        for name in LOUD:
            with socket.create_connection(("127.0.0.1", exp.port), timeout=5) as s:
                s.sendall(MALFORMED[name])
                with contextlib.suppress(OSError):
                    while s.recv(65536):
                        pass
        time.sleep(0.3)
        new = [line for line in exp.lines()[before:] if "aiohttp" in line or "HTTP" in line]
    assert not any("Traceback" in line or "level=error" in line for line in new), new
    if level == "info":
        assert new == []
    else:
        malformed = [line for line in new if "malformed HTTP request" in line]
        assert len(malformed) == len(LOUD), new


# ---- item 11: lifecycle endpoints only with --web.enable-lifecycle --------------------------


def test_reload_over_http_needs_enable_lifecycle(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("collectors:\n  strongswan:\n    reauth_grace: 1s\n")
    with daemon(tmp_path, "--config.file", str(config)) as exp:
        status, body = exp.post("/-/reload")
        assert status == 403, (status, body)
        assert "--web.enable-lifecycle" in body and "SIGHUP" in body
        assert "reloaded" not in exp.log.read_text()
        # SIGHUP always reloads.
        exp.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "configuration reloaded" not in exp.log.read_text():
            assert time.monotonic() < deadline, exp.log.read_text()
            time.sleep(0.1)
        status, landing = exp.get("/")
        assert "--web.enable-lifecycle" in landing


def test_reload_with_enable_lifecycle_refuses_cross_origin_posts(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("collectors:\n  strongswan:\n    reauth_grace: 1s\n")
    with daemon(tmp_path, "--config.file", str(config), "--web.enable-lifecycle") as exp:
        assert exp.post("/-/reload") == (200, "configuration reloaded\n")
        # What a browser adds to a form posted from another site.
        for headers in (
            {"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Origin": "null"},
        ):
            status, body = exp.post("/-/reload", headers)
            assert status == 403, (headers, status, body)
            assert "cross-origin" in body
        # Same origin (a page of the exporter itself) and tools without Origin are fine.
        same = {"Origin": exp.url, "Sec-Fetch-Site": "same-origin"}
        assert exp.post("/-/reload", same)[0] == 200
        status, landing = exp.get("/")
        assert "POST /-/reload" in landing
