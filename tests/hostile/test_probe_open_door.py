"""/probe as an attacker on the network sees it (issue 14, item 1).

Without `allowed_targets` any client that reaches the port picks where a probe goes. For a
`login` module that means the server's own charon offers the production PSK to the
requester: such a module is refused at the config check, at start and at reload. A target
may not carry a port other than its module's unless the module allows it, and an address
counts as what is actually probed whatever its spelling (`127.1`, `2130706433`,
`0x7f.0.0.1`, `[::ffff:127.0.0.1]`, a name resolving to an IPv4-mapped address).

Everything here is sent to 127.0.0.1 only: the requests go through the real aiohttp app
with the probe routes, the config check through `python -m exporter`, reload through
`Runtime.reload`.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from exporter.cli import parse_command_line
from exporter.config import SettingsError
from exporter.daemon import Runtime
from exporter.probes.config import ProbeConfigError, parse_probe_settings
from exporter.probes.handler import add_probe_routes
from tests.probes.helpers import ProbeAnswer, ProbeServer

REPO = Path(__file__).resolve().parents[2]
ACCEPTED = (REPO / "tests" / "fixtures" / "probes" / "ikev2_accepted.response.bin").read_bytes()
PSK = "door-psk-5e1a9c"
LOGIN: dict[str, Any] = {
    "prober": "login",
    "timeout": "2s",
    "login": {
        "psk": PSK,
        "username": "door",
        "password": "door-password-77b0",
        # Nothing listens here: a probe that got through fails at `load`, sends nothing.
        "vici_socket": "unix:///nonexistent/door.vici",
    },
}


# -- a loopback IKE responder that counts what reaches it ------------------------------------


class Responder(asyncio.DatagramProtocol):
    """Answers every IKE_SA_INIT with charon's recorded acceptance (its SPI patched in)."""

    def __init__(self) -> None:
        self.packets = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's protocol is always handed a datagram transport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets += 1
        if self.transport is not None:
            self.transport.sendto(data[:8] + ACCEPTED[8:], addr)


@asynccontextmanager
async def responder() -> AsyncIterator[tuple[Responder, int]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
    try:
        yield proto, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


@asynccontextmanager
async def probe_client(doc: dict[str, Any]) -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application()
    add_probe_routes(app, parse_probe_settings(doc))
    async with TestClient(TestServer(app)) as client:
        yield client


async def get(client: TestClient[Any, Any], module: str, target: str) -> ProbeAnswer:
    resp = await client.get("/probe", params={"module": module, "target": target})
    return ProbeAnswer(resp.status, await resp.text())


def ike(port: int | None = None, **module: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"version": 2, "attempts": 1}
    if port is not None:
        opts["port"] = port
    return {"prober": "ike", "timeout": "1s", "ike": opts, **module}


# -- a login module needs allowed_targets ----------------------------------------------------


def write_config(path: Path, probe: dict[str, Any] | None) -> Path:
    doc: dict[str, Any] = {"modules": {"door": LOGIN}}
    if probe is not None:
        doc["probe"] = probe
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def prober_line(path: Path) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if "prober:" in line)


def exporter_argv(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "exporter", "--config.file", str(config), *extra]


@pytest.mark.parametrize(
    "probe",
    [None, {"max_concurrent": 2}, {"allowed_targets": []}],
    ids=["no-probe-section", "no-allowed-targets", "empty-allowed-targets"],
)
def test_config_check_refuses_a_login_module_without_allowed_targets(
    tmp_path: Path, probe: dict[str, Any] | None
) -> None:
    config = write_config(tmp_path / "exporter.yml", probe)
    check = subprocess.run(
        exporter_argv(config, "--config.check"),
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert check.returncode == 2, check.stdout + check.stderr
    lines = check.stderr.strip().splitlines()
    assert len(lines) == 1, check.stderr
    assert f"{config}:{prober_line(config)}: modules.door.prober: " in lines[0]
    assert "probe.allowed_targets" in lines[0]
    assert PSK not in check.stdout + check.stderr


def test_config_check_accepts_a_login_module_with_allowed_targets(tmp_path: Path) -> None:
    config = write_config(tmp_path / "exporter.yml", {"allowed_targets": ["127.0.0.1/32"]})
    check = subprocess.run(
        exporter_argv(config, "--config.check"),
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_start_refuses_a_login_module_without_allowed_targets(tmp_path: Path) -> None:
    config = write_config(tmp_path / "exporter.yml", None)
    argv = exporter_argv(
        config, "--web.listen-address", "127.0.0.1:0", "--vici.socket", "unix:///nonexistent/v"
    )
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        _, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the exporter started (and served /probe) with an unrestricted login module")
    assert proc.returncode == 2
    assert "probe.allowed_targets" in stderr.decode()


async def test_reload_refuses_a_login_module_without_allowed_targets(tmp_path: Path) -> None:
    config = write_config(tmp_path / "exporter.yml", {"allowed_targets": ["127.0.0.1/32"]})
    command_line = parse_command_line(
        ["--config.file", str(config), "--vici.socket", "unix:///nonexistent/v"]
    )
    runtime = Runtime(command_line.settings, command_line.reload_settings)
    try:
        async with TestClient(TestServer(runtime.app())) as client:
            write_config(config, None)
            with pytest.raises(SettingsError, match=r"modules\.door\.prober: .*allowed_targets"):
                await runtime.reload()
            # The running configuration is kept: still restricted to 127.0.0.1.
            assert runtime.probes is not None
            assert not runtime.probes.allowed_targets.unrestricted
            refused = await get(client, "door", "192.0.2.1")
            assert refused.status == 400 and "allowed_targets" in refused.text
    finally:
        await runtime.close()


# -- the target's port -----------------------------------------------------------------------


async def test_a_target_port_other_than_the_modules_is_refused() -> None:
    doc = {"modules": {"v2": ike(), "l2tp": {"prober": "l2tp", "timeout": "1s"}, "door": LOGIN},
           "probe": {"allowed_targets": ["127.0.0.0/8"]}}  # fmt: skip
    async with responder() as (proto, port), probe_client(doc) as client:
        for module, target, module_port in [
            ("v2", f"127.0.0.1:{port}", 500),
            ("l2tp", f"127.0.0.1:{port}", 1701),
            ("door", "127.0.0.1:4500", 500),
        ]:
            answer = await get(client, module, target)
            assert answer.status == 400, (module, target, answer.text)
            assert f"port {target.rsplit(':', 1)[1]} is not module {module}'s port " in answer.text
            assert f"{module_port}" in answer.text and "allow_target_port" in answer.text
        assert proto.packets == 0


async def test_the_modules_own_port_and_allow_target_port() -> None:
    async with responder() as (proto, port):
        doc = {"modules": {"fixed": ike(port), "free": ike(allow_target_port=True)},
               "probe": {"allowed_targets": ["127.0.0.0/8"]}}  # fmt: skip
        async with probe_client(doc) as client:
            for module, target in [
                ("fixed", "127.0.0.1"),
                ("fixed", f"127.0.0.1:{port}"),
                ("free", f"127.0.0.1:{port}"),
            ]:
                answer = await get(client, module, target)
                assert answer.status == 200, answer.text
                assert answer.value("probe_success") == 1, (module, target, answer.text)
        assert proto.packets == 3


def test_a_login_module_cannot_allow_target_ports() -> None:
    doc = {"modules": {"door": {**LOGIN, "allow_target_port": True}},
           "probe": {"allowed_targets": ["127.0.0.0/8"]}}  # fmt: skip
    with pytest.raises(ProbeConfigError, match=r"modules\.door\.allow_target_port: .*login"):
        parse_probe_settings(doc)


# -- alternative spellings of an address -----------------------------------------------------


@pytest.mark.parametrize(
    "host", ["2130706433", "127.1", "0x7f.0.0.1", "0177.0.0.1", "127.0.0.01", "127.0.0.1."]
)
async def test_other_spellings_of_an_ipv4_address_are_refused(host: str) -> None:
    async with responder() as (proto, port), probe_client({"modules": {"v2": ike(port)}}) as client:
        answer = await get(client, "v2", f"{host}:{port}")
        assert answer.status == 400, answer.text
        assert "four decimal numbers" in answer.text
        assert proto.packets == 0


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]"])
async def test_this_host_is_not_a_destination(host: str) -> None:
    async with responder() as (proto, port), probe_client({"modules": {"v2": ike(port)}}) as client:
        answer = await get(client, "v2", f"{host}:{port}")
        assert answer.status == 400, answer.text
        assert "this host" in answer.text
        assert proto.packets == 0


async def test_an_ipv4_mapped_address_is_matched_as_ipv4() -> None:
    async with responder() as (proto, port):
        ipv6_only = {"modules": {"v2": ike(port)}, "probe": {"allowed_targets": ["::/0"]}}
        async with probe_client(ipv6_only) as client:
            answer = await get(client, "v2", f"[::ffff:127.0.0.1]:{port}")
            assert answer.status == 400 and "not in probe.allowed_targets" in answer.text
        assert proto.packets == 0
        loopback = {"modules": {"v2": ike(port)}, "probe": {"allowed_targets": ["127.0.0.0/8"]}}
        async with probe_client(loopback) as client:
            answer = await get(client, "v2", f"[::ffff:127.0.0.1]:{port}")
            assert answer.status == 200 and answer.value("probe_success") == 1, answer.text
        assert proto.packets == 1


@pytest.mark.parametrize(
    "entry", ["127.1", "2130706433", "0x7f.0.0.1", "::ffff:127.0.0.0/104", "0.0.0.0", "::"]
)
def test_allowed_targets_refuse_what_matching_could_not_honour(entry: str) -> None:
    with pytest.raises(ProbeConfigError, match=r"probe\.allowed_targets: "):
        parse_probe_settings({"modules": {"v2": ike()}, "probe": {"allowed_targets": [entry]}})


# -- a name that resolves to an IPv4-mapped address ------------------------------------------


@contextmanager
def probe_server_with_hosts(
    workdir: Path, hosts: str, modules: dict[str, Any], probe: dict[str, Any]
) -> Iterator[ProbeServer]:
    """serve_probes.py in a private mount namespace whose /etc/hosts is `hosts`: the real
    resolver (glibc's getaddrinfo) answers, the network namespace stays the test's."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    workdir.mkdir()
    (workdir / "hosts").write_text(hosts)
    launcher = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"', str(workdir / "hosts")]  # fmt: skip
    server = ProbeServer(None, modules, workdir, probe, launcher=launcher)
    try:
        yield server
    finally:
        server.close()


async def test_a_name_resolving_to_an_ipv4_mapped_address(tmp_path: Path) -> None:
    hosts = "127.0.0.1 localhost\n::ffff:127.0.0.1 mapped.door.test\n"
    async with responder() as (proto, port):
        modules = {"v2": ike(port)}
        with probe_server_with_hosts(
            tmp_path / "v6", hosts, modules, {"allowed_targets": ["::/0"]}
        ) as srv:
            answer = await asyncio.to_thread(
                srv.get, "/probe?module=v2&target=mapped.door.test&debug=true"
            )
            assert "127.0.0.1 is not in probe.allowed_targets" in answer.text, answer.text
        assert proto.packets == 0
        with probe_server_with_hosts(
            tmp_path / "v4", hosts, modules, {"allowed_targets": ["127.0.0.0/8"]}
        ) as srv:
            answer = await asyncio.to_thread(srv.get, "/probe?module=v2&target=mapped.door.test")
            assert answer.value("probe_success") == 1, answer.text
        assert proto.packets == 1
