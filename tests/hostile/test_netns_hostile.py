"""`--collector.kernel.netns NAME` naming a namespace that is not there (issue 14, item 9).

pyroute2 opens a named namespace with O_CREAT by default: a typo used to *create* the
namespace and report the kernel collectors healthy with nothing in them. Contract: a
missing namespace is refused at start (exit 2, one line) and at reload (rejected), and
never created; one that disappears while the daemon runs makes the kernel collectors
fail (collector_success 0, one log line) until it is back.

Real namespaces made here with `ip netns add` (root only), named `h9-…` so no lab's
cleanup mistakes them for its own; every one is deleted after the test.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.cli import parse_command_line
from exporter.collectors.kernel import build_kernel_collectors
from exporter.config import SettingsError
from exporter.kernel.options import KernelOptions

from ..conftest import Scrape, StartExporter

NETNS_DIR = Path("/var/run/netns")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)


def ns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


@pytest.fixture
def netns_names() -> Iterator[Callable[[], str]]:
    """`make()` -> a fresh namespace name (not created); all deleted after the test."""
    names: list[str] = []

    def make() -> str:
        name = f"h9-{secrets.token_hex(3)}"
        names.append(name)
        return name

    try:
        yield make
    finally:
        for name in names:
            if ns_exists(name):
                subprocess.run(["ip", "netns", "delete", name], check=False)


def add(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)


def delete(name: str) -> None:
    subprocess.run(["ip", "netns", "delete", name], check=True)


def test_missing_namespace_is_refused_at_start(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, netns_names: Callable[[], str]
) -> None:
    name = netns_names()
    with pytest.raises(SystemExit) as info:
        parse_command_line(["--collector.kernel.netns", name, "--config.check"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"--collector.kernel.netns {name!r}: no such network namespace" in err
    config = tmp_path / "config.yml"
    config.write_text(f"collectors:\n  kernel:\n    netns: {name}\n")
    with pytest.raises(SystemExit):
        parse_command_line(["--config.file", str(config)])
    assert "no such network namespace" in capsys.readouterr().err
    assert not ns_exists(name)


def test_existing_namespace_is_accepted(netns_names: Callable[[], str]) -> None:
    name = netns_names()
    add(name)
    settings = parse_command_line(["--collector.kernel.netns", name]).settings
    assert settings.kernel.netns == name


def test_missing_namespace_is_refused_at_reload(
    tmp_path: Path, netns_names: Callable[[], str]
) -> None:
    from exporter.daemon import Runtime

    there, missing = netns_names(), netns_names()
    add(there)
    config = tmp_path / "config.yml"
    config.write_text(f"collectors:\n  kernel:\n    netns: {there}\n")
    vici = f"unix://{tmp_path}/no-charon.vici"
    command_line = parse_command_line(["--config.file", str(config), "--vici.socket", vici])

    async def main() -> None:
        runtime = Runtime(command_line.settings, command_line.reload_settings)
        try:
            config.write_text(f"collectors:\n  kernel:\n    netns: {missing}\n")
            with pytest.raises(SettingsError, match=f"{missing}.*no such network namespace"):
                await runtime.reload()
            assert runtime.settings.kernel.netns == there
        finally:
            await runtime.close()

    asyncio.run(main())
    assert not ns_exists(missing)


def test_collectors_never_create_a_namespace(netns_names: Callable[[], str]) -> None:
    """The collectors themselves, given a name that is not there (no check before)."""
    name = netns_names()
    collectors = build_kernel_collectors(KernelOptions(netns=name), lambda: None)

    async def collect() -> dict[str, tuple[bool, str]]:
        out = {}
        for collector in collectors:
            result = await collector.collect()
            out[collector.name] = (result.success, result.error)
        return out

    results = asyncio.run(collect())
    assert not ns_exists(name)
    for collector in ("ppp", "xfrm", "sessions"):
        success, error = results[collector]
        assert not success, results
        assert f"network namespace {name!r} is gone" in error, results
    assert results["l2tp"][0] is False, results


def success(scrape: Scrape, collector: str) -> float | None:
    return scrape.value("l2tp_ipsec_exporter_collector_success", collector=collector)


def test_namespace_that_disappears_fails_the_collectors_until_it_is_back(
    tmp_path: Path, start_exporter: StartExporter, netns_names: Callable[[], str]
) -> None:
    name = netns_names()
    add(name)
    exp = start_exporter(
        f"unix://{tmp_path}/no-charon.vici",
        "--collector.kernel.netns", name,
        "--collector.strongswan.refresh-interval", "0",
    )  # fmt: skip
    exp.wait_for(lambda s: success(s, "ppp") == 1 and success(s, "xfrm") == 1)

    delete(name)
    exp.wait_for(lambda s: success(s, "ppp") == 0 and success(s, "xfrm") == 0)
    exp.scrape()
    assert not ns_exists(name), "a scrape created the namespace"
    log = exp.stderr_text()
    assert log.count("collector failed") >= 2, log
    assert sum(
        1 for line in log.splitlines() if "collector=ppp" in line and "failed" in line
    ) == 1, log  # fmt: skip
    assert f"network namespace '{name}' is gone" in log, log

    add(name)
    exp.wait_for(lambda s: success(s, "ppp") == 1 and success(s, "xfrm") == 1)


def test_reading_a_namespace_never_signals_the_daemon(netns_names: Callable[[], str]) -> None:
    """pyroute2 stops the child it forks to open a socket in a namespace with SIGTERM; the
    child inherited asyncio's signal handler, which passed the SIGTERM on to our loop
    through the wakeup socket they share: the daemon shut down (5 of 7 runs of the test
    above did, before)."""
    from exporter.kernel.rtnl import dump_ppp
    from exporter.kernel.xfrm import dump_xfrm

    name = netns_names()
    add(name)

    async def main() -> list[str]:
        got: list[str] = []
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, got.append, "SIGTERM")
        try:
            for _ in range(30):
                await dump_ppp("ppp*", 5.0, name)
                await dump_xfrm(5.0, name)
            await asyncio.sleep(0.2)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
        return got

    assert asyncio.run(main()) == []


def block_one_packet(name: str) -> None:
    """One packet refused by an XFRM block policy inside `name`: XfrmOutPolBlock 1 there,
    nothing in the exporter's own namespace."""
    ip = ["ip", "-n", name]
    subprocess.run([*ip, "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True)
    for dev in ("lo", "v0", "v1"):
        subprocess.run([*ip, "link", "set", dev, "up"], check=True)
    subprocess.run([*ip, "addr", "add", "10.9.9.1/24", "dev", "v0"], check=True)
    subprocess.run(
        [*ip, "xfrm", "policy", "add", "src", "10.9.9.1/32", "dst", "10.9.9.2/32",
         "dir", "out", "action", "block"], check=True,
    )  # fmt: skip
    send = (
        "import socket, contextlib\n"
        "with contextlib.suppress(PermissionError):\n"
        "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('10.9.9.2', 9))\n"
    )
    subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", send], check=True)


def test_xfrm_stat_is_the_namespaces(netns_names: Callable[[], str]) -> None:
    """/proc/net/xfrm_stat is per namespace: the one named, not the exporter's."""
    name = netns_names()
    add(name)
    block_one_packet(name)
    options = KernelOptions(netns=name, ppp=False, l2tp=False, sessions=False)
    (collector,) = build_kernel_collectors(options, lambda: None)
    collection = asyncio.run(collector.collect())
    assert collection.success, collection.error
    errors = {
        s.labels["reason"]: s.value
        for family in collection.families
        if family.name == "xfrm_errors"
        for s in family.samples
    }
    if not errors:
        pytest.skip("kernel without CONFIG_XFRM_STATISTICS")
    assert errors["XfrmOutPolBlock"] == 1, errors
