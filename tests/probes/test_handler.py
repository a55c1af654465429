"""GET /probe through a real aiohttp app, against a loopback IKE responder that replays
the answers recorded from charon (no root needed)."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from exporter.probes import ikev2_packets
from exporter.probes.config import parse_probe_settings
from exporter.probes.handler import add_probe_routes, probe_deadline

from .helpers import ProbeAnswer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probes"


def recorded(name: str) -> bytes:
    return (FIXTURES / f"{name}.response.bin").read_bytes()


def cookie_answer(spi: bytes, cookie: bytes) -> bytes:
    notify = struct.pack("!BBHBBH", 0, 0, 8 + len(cookie), 0, 0, 16390) + cookie
    header = ikev2_packets.HEADER.pack(spi, bytes(8), ikev2_packets.NOTIFY, 0x20, 34, 0x20, 0,
                                       28 + len(notify))  # fmt: skip
    return header + notify


Reply = Callable[[bytes, int], bytes | None]


class Responder(asyncio.DatagramProtocol):
    """Answers request number n with reply(request, n), its SPI patched in."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's protocol is always handed a datagram transport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.requests.append(data)
        answer = self.reply(data, len(self.requests))
        if answer is not None and self.transport is not None:
            self.transport.sendto(data[:8] + answer[8:], addr)


async def responder(reply: Reply) -> tuple[Responder, int]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: Responder(reply), local_addr=("127.0.0.1", 0)
    )
    return proto, transport.get_extra_info("sockname")[1]


MODULES: dict[str, Any] = {
    "v2": {"prober": "ike", "timeout": "2s", "ike": {"version": 2}},
    "v1": {"prober": "ike", "timeout": "2s", "ike": {"version": 1}},
    "v2_notify_ok": {"prober": "ike", "timeout": "2s",
                     "ike": {"version": 2, "valid_answers": ["proposal_accepted", "notify"]}},
    "v2_group": {"prober": "ike", "timeout": "2s",
                 "ike": {"version": 2, "proposals": ["aes256-sha256-modp1024-modp2048"]}},
    "quick": {"prober": "ike", "timeout": "1s", "ike": {"version": 2, "attempts": 2}},
    "hold": {"prober": "ike", "timeout": "60s", "ike": {"version": 2, "attempts": 1}},
}  # fmt: skip
# The responders listen on free ports, not on 500: the modules let the target choose.
for _module in MODULES.values():
    _module["allow_target_port"] = True


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application()
    settings = parse_probe_settings(
        {"modules": MODULES, "probe": {"max_concurrent": 1, "allowed_targets": ["127.0.0.0/8"]}}
    )
    add_probe_routes(app, settings)
    async with TestClient(TestServer(app)) as c:
        yield c


async def get(client: TestClient[Any, Any], query: str, **headers: str) -> ProbeAnswer:
    resp = await client.get(query, headers=headers)
    return ProbeAnswer(resp.status, await resp.text())


async def test_accepted_v2(client: TestClient[Any, Any]) -> None:
    proto, port = await responder(lambda _req, _n: recorded("ikev2_accepted"))
    answer = await get(client, f"/probe?module=v2&target=127.0.0.1:{port}")
    assert answer.status == 200
    assert answer.value("probe_success") == 1
    assert answer.value("probe_ike_answer_info", answer="proposal_accepted", notify="") == 1
    duration = answer.value("probe_duration_seconds")
    assert duration is not None and 0 < duration < 2
    assert answer.value("probe_phase_duration_seconds", phase="ike") is not None
    assert answer.value("probe_failed_phase", phase="ike") == 0
    assert len(proto.requests) == 1


async def test_accepted_v1(client: TestClient[Any, Any]) -> None:
    _, port = await responder(lambda _req, _n: recorded("ikev1_accepted"))
    answer = await get(client, f"/probe?module=v1&target=127.0.0.1:{port}")
    assert answer.value("probe_success") == 1
    assert answer.labels("probe_ike_accepted_proposal_info")["auth_method"] == "psk"
    assert answer.value("probe_ike_version") == 1


async def test_notify_class_and_valid_answers(client: TestClient[Any, Any]) -> None:
    _, port = await responder(lambda _req, _n: recorded("ikev2_no_proposal_chosen"))
    strict = await get(client, f"/probe?module=v2&target=127.0.0.1:{port}")
    assert strict.value("probe_success") == 0
    assert strict.value("probe_ike_notify_type") == 14
    assert strict.failed_phase() == "ike"
    lenient = await get(client, f"/probe?module=v2_notify_ok&target=127.0.0.1:{port}")
    assert lenient.value("probe_success") == 1


async def test_invalid_ke_then_accepted(client: TestClient[Any, Any]) -> None:
    def reply(_req: bytes, n: int) -> bytes:
        return recorded("ikev2_invalid_ke_payload" if n == 1 else "ikev2_accepted")

    proto, port = await responder(reply)
    answer = await get(client, f"/probe?module=v2_group&target=127.0.0.1:{port}")
    assert answer.value("probe_success") == 1
    assert answer.value("probe_ike_exchanges") == 2
    # The retry carries a modp2048 KE value (256 bytes) instead of a modp1024 one (128).
    assert len(proto.requests[1]) - len(proto.requests[0]) == 128


async def test_cookie_is_echoed(client: TestClient[Any, Any]) -> None:
    def reply(req: bytes, n: int) -> bytes:
        if n == 1:
            return cookie_answer(req[:8], b"COOKIE-0123456789")
        assert req[16] == ikev2_packets.NOTIFY and b"COOKIE-0123456789" in req
        return recorded("ikev2_accepted")

    proto, port = await responder(reply)
    answer = await get(client, f"/probe?module=v2&target=127.0.0.1:{port}")
    assert answer.value("probe_success") == 1, answer.text
    assert len(proto.requests) == 2


async def test_silence_retransmits_then_times_out(client: TestClient[Any, Any]) -> None:
    proto, port = await responder(lambda _req, _n: None)
    answer = await get(client, f"/probe?module=quick&target=127.0.0.1:{port}")
    assert answer.value("probe_success") == 0
    assert answer.value("probe_ike_answer_info", answer="timeout") == 1
    assert len(proto.requests) == 2


async def test_scrape_timeout_header(client: TestClient[Any, Any]) -> None:
    _, port = await responder(lambda _req, _n: None)
    loop = asyncio.get_running_loop()
    start = loop.time()
    answer = await get(
        client, f"/probe?module=v2&target=127.0.0.1:{port}",
        **{"X-Prometheus-Scrape-Timeout-Seconds": "0.9"},
    )  # fmt: skip
    assert answer.value("probe_success") == 0
    assert loop.time() - start < 1.0


def test_probe_deadline() -> None:
    module = parse_probe_settings({"modules": {"m": {"prober": "ike", "timeout": "10s"}}})
    m = module.modules["m"]
    assert probe_deadline(m, None, 100.0) == 110.0
    assert probe_deadline(m, "5", 100.0) == 104.5
    assert probe_deadline(m, "30", 100.0) == 110.0
    assert probe_deadline(m, "junk", 100.0) == 110.0


class HeldResponder(Responder):
    """Answers nothing until told: `arrived` is set at the first request, `answer()` then
    replies to it. A probe against it holds its slot for as long as the test wants."""

    def __init__(self) -> None:
        super().__init__(lambda _req, _n: None)
        self.arrived = asyncio.Event()
        self.peer: tuple[str, int] | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        super().datagram_received(data, addr)
        self.peer = addr
        self.arrived.set()

    def answer(self, answer: bytes) -> None:
        assert self.transport is not None and self.peer is not None
        self.transport.sendto(self.requests[-1][:8] + answer[8:], self.peer)


async def test_concurrency_limit(client: TestClient[Any, Any]) -> None:
    """max_concurrent is 1. Ordered by events, not by timing: the second probe starts only
    once the first is known to hold the slot (its request reached the responder), and the
    first is answered only after the second gave up, so no load can reorder them."""
    loop = asyncio.get_running_loop()
    held_transport, held = await loop.create_datagram_endpoint(
        HeldResponder, local_addr=("127.0.0.1", 0)
    )
    port = held_transport.get_extra_info("sockname")[1]
    # `hold` waits 60 s for its answer: far longer than the waiting probe's 1 s.
    holder = asyncio.create_task(get(client, f"/probe?module=hold&target=127.0.0.1:{port}"))
    try:
        await asyncio.wait_for(held.arrived.wait(), 30)
        waiter, waiter_port = await responder(lambda _req, _n: recorded("ikev2_accepted"))
        blocked = await get(client, f"/probe?module=quick&target=127.0.0.1:{waiter_port}")
        assert not holder.done()
        # No slot before its deadline: it never sent a packet and failed.
        assert blocked.value("probe_success") == 0
        assert blocked.value("probe_ike_packets_sent") is None
        assert waiter.requests == []
        held.answer(recorded("ikev2_accepted"))
        first = await asyncio.wait_for(holder, 30)
        assert first.value("probe_success") == 1, first.text
        assert len(held.requests) == 1
        # The slot was given back: the next probe gets it and succeeds.
        after = await get(client, f"/probe?module=quick&target=127.0.0.1:{waiter_port}")
        assert after.value("probe_success") == 1, after.text
        assert len(waiter.requests) == 1
    finally:
        holder.cancel()
        held_transport.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("/probe?target=127.0.0.1", "module parameter is missing"),
        ("/probe?module=nope&target=127.0.0.1", "unknown module 'nope'"),
        ("/probe?module=v2", "target parameter is missing"),
        ("/probe?module=v2&target=a/b", "expected HOST or HOST:PORT"),
        ("/probe?module=v2&target=127.0.0.1:0", "port must be 1-65535"),
        ("/probe?module=v2&target=192.0.2.1", "not in probe.allowed_targets"),
    ],
)
async def test_bad_requests(client: TestClient[Any, Any], query: str, message: str) -> None:
    answer = await get(client, query)
    assert answer.status == 400
    assert message in answer.text


async def test_debug_view_and_openmetrics(client: TestClient[Any, Any]) -> None:
    _, port = await responder(lambda _req, _n: recorded("ikev2_accepted"))
    debug = await get(client, f"/probe?module=v2&target=127.0.0.1:{port}&debug=true")
    assert debug.text.startswith("Logs for the probe:")
    assert "IKE answer" in debug.text and "probe_success 1.0" in debug.text
    resp = await client.get(
        f"/probe?module=v2&target=127.0.0.1:{port}",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.text()).endswith("# EOF\n")


@pytest.mark.promtool
async def test_promtool_accepts_the_exposition(client: TestClient[Any, Any]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing: apt-get install prometheus")
    _, port = await responder(lambda _req, _n: recorded("ikev1_accepted"))
    resp = await client.get(f"/probe?module=v1&target=127.0.0.1:{port}")
    text = await resp.text()
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.promtool
def test_promtool_accepts_the_example_scrape_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing: apt-get install prometheus")
    path = Path(__file__).resolve().parents[2] / "examples" / "prometheus-probes.yml"
    check = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
