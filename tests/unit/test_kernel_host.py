"""Kernel collectors against THIS machine's kernel: no mocks, the real sockets.

This kernel has no L2TP module, no PPP and no ESP/AH/IPcomp (so no ppp interfaces and no
XFRM states): the collectors must say so cleanly (l2tp_available 0, empty families,
success 1) and say it once. What the kernel does hold, the dumps must return: they are
checked in a network namespace of the test's own, filled with known XFRM policies and
links.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collectors.base import Collector
from exporter.collectors.kernel import build_kernel_collectors
from exporter.kernel.l2tp import L2tpUnavailable, dump_l2tp
from exporter.kernel.options import KernelOptions
from exporter.kernel.rtnl import dump_ppp
from exporter.kernel.source import KernelSource
from exporter.kernel.xfrm import dump_xfrm
from exporter.scrape import Scraper
from tests.reference import Families

#: A sample's labels as (name, value) pairs in name order.
Labels = tuple[tuple[str, str], ...]


def _l2tp_missing() -> bool:
    return not Path("/sys/module/l2tp_netlink").exists()


async def _scrape(collectors: Sequence[Collector]) -> dict[str, dict[Labels, float]]:
    families = await Scraper(collectors).scrape()
    text = generate_latest(Families(families)).decode()
    out: dict[str, dict[Labels, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_collectors_degrade_cleanly_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Real netlink on this kernel, through the Scraper as the daemon runs it."""
    collectors = build_kernel_collectors(KernelOptions(state_dir=tmp_path), lambda: None)
    assert [c.name for c in collectors] == ["ppp", "l2tp", "xfrm", "sessions"]
    with caplog.at_level(logging.INFO):
        first = await _scrape(collectors)
        second = await _scrape(collectors)
    for got in (first, second):
        success = got["l2tp_ipsec_exporter_collector_success"]
        for name in ("ppp", "l2tp", "xfrm", "sessions"):
            assert success[(("collector", name),)] == 1.0, name
        assert "ppp_interfaces" in got and "l2tp_ipsec_sessions" in got
        assert "xfrm_states" in got and "xfrm_policies" in got
    if _l2tp_missing():
        assert first["l2tp_available"] == {(): 0.0}
        assert "l2tp_tunnels" not in first
        said = [r for r in caplog.records if "no L2TP" in r.getMessage()]
        assert len(said) == 1, [r.getMessage() for r in caplog.records]
        # pyroute2's own "protocol not found" error lines are kept quiet.
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_l2tp_unavailable_is_its_own_exception() -> None:
    """The real genl family lookup on this kernel."""
    if not _l2tp_missing():
        pytest.skip("this kernel has L2TP")
    with pytest.raises(L2tpUnavailable):
        await dump_l2tp(5.0)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A network namespace of this test's own, deleted afterwards, also when the test fails.

    Not named like a lab (``l2x-``), so no lab's leftover sweep reports or removes it.
    """
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make a network namespace")
    name = f"kernhost-{os.getpid()}-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr.strip()}"


#: Policies made with `ip xfrm policy add` and what the dump must say of each:
#: (direction, priority, src, dst, proto, action). This kernel has no ESP, AH or IPcomp
#: (CONFIG_INET_ESP and friends are off), so it takes no SA; policies need none of them.
POLICIES = [
    (
        "src 10.1.0.0/24 dst 10.2.0.0/16 proto udp dir out priority 1234 "
        "tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 7 mode tunnel",
        ("out", 1234, "10.1.0.0/24", "10.2.0.0/16", 17, "allow"),
    ),
    (
        "src 10.3.0.7/32 dst 10.4.0.0/16 dir in priority 99 action block",
        ("in", 99, "10.3.0.7/32", "10.4.0.0/16", 0, "block"),
    ),
    (
        "src 10.2.0.0/16 dst 10.1.0.0/24 proto tcp dir fwd priority 5 "
        "tmpl src 192.0.2.2 dst 192.0.2.1 proto esp reqid 8 mode tunnel",
        ("fwd", 5, "10.2.0.0/16", "10.1.0.0/24", 6, "allow"),
    ),
    (
        "src 2001:db8:1::/64 dst 2001:db8:2::5/128 dir out priority 77 action block",
        ("out", 77, "2001:db8:1::/64", "2001:db8:2::5/128", 0, "block"),
    ),
]


async def test_xfrm_dump_answers_with_the_policies_of_the_namespace(namespace: str) -> None:
    """Real NETLINK_XFRM dumps in a namespace of known content: exactly the policies made
    there (IPv4 and IPv6 selectors, all three directions, allow and block), and no SA."""
    empty = await dump_xfrm(5.0, netns=namespace)
    assert empty.states == () and empty.policies == ()
    for spec, _ in POLICIES:
        _ip("-n", namespace, "xfrm", "policy", "add", *spec.split())
    snap = await dump_xfrm(5.0, netns=namespace)
    assert snap.states == ()
    got = sorted((p.direction, p.priority, p.src, p.dst, p.proto, p.action) for p in snap.policies)
    assert got == sorted(expected for _, expected in POLICIES)
    indexes = [p.index for p in snap.policies]
    assert all(indexes) and len(set(indexes)) == len(indexes), indexes


async def test_ppp_dump_answers_with_ppp_links_only(namespace: str) -> None:
    """Real rtnetlink dumps in a namespace whose links are named like ppp interfaces and
    have point-to-point addresses, but are veths: none is a ppp interface.

    This kernel has no PPP (no /dev/ppp), so a real ppp link cannot be made here; the
    recorded dumps in test_kernel_decode.py cover decoding real ones.
    """
    _ip("-n", namespace, "link", "add", "ppp0", "type", "veth", "peer", "name", "ppp1")
    _ip("-n", namespace, "addr", "add", "10.9.0.1", "peer", "10.9.0.2", "dev", "ppp0")
    _ip("-n", namespace, "link", "set", "ppp0", "up")
    assert await dump_ppp("ppp*", 5.0, netns=namespace) == []
    assert await dump_ppp("*", 5.0, netns=namespace) == []


async def test_dump_has_a_deadline() -> None:
    """A deadline too short for any real dump ends in TimeoutError, not a hang."""
    with pytest.raises(TimeoutError):
        await dump_xfrm(1e-9)


async def test_the_dump_deadline_is_the_setting() -> None:
    """`--collector.kernel.timeout` reaches every dump: a deadline no dump can meet fails
    each of them, the default one does not (real netlink here)."""
    hurried = KernelSource(KernelOptions(timeout=1e-6))
    for dump in (hurried.ppp, hurried.xfrm, hurried.l2tp):
        with pytest.raises((TimeoutError, L2tpUnavailable)):
            await dump()
    relaxed = KernelSource(KernelOptions())
    await relaxed.ppp()
    await relaxed.xfrm()
