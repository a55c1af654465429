"""Kernel collectors against THIS machine's kernel: no mocks, the real sockets.

This kernel has no L2TP module, no ppp interfaces and no XFRM states: the collectors
must say so cleanly (l2tp_available 0, empty families, success 1) and say it once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.kernel.l2tp import L2tpUnavailable, dump_l2tp
from exporter.kernel.options import KernelOptions, build_kernel_collectors
from exporter.kernel.rtnl import dump_ppp
from exporter.kernel.xfrm import dump_xfrm
from exporter.scrape import Scraper
from tests.reference import Families


def _l2tp_missing() -> bool:
    return not Path("/sys/module/l2tp_netlink").exists()


async def _scrape(collectors: list) -> dict[str, dict[tuple, float]]:  # type: ignore[type-arg]
    families = await Scraper(collectors).scrape()
    text = generate_latest(Families(families)).decode()  # type: ignore[arg-type]
    out: dict[str, dict[tuple, float]] = {}  # type: ignore[type-arg]
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


async def test_dumps_answer_here() -> None:
    """Real rtnetlink and NETLINK_XFRM dumps: no ppp, no SAs on this machine."""
    assert await dump_ppp("ppp*", 5.0) == [] or Path("/dev/ppp").exists()
    snap = await dump_xfrm(5.0)
    assert isinstance(snap.states, tuple) and isinstance(snap.policies, tuple)


async def test_dump_has_a_deadline() -> None:
    """A deadline too short for any real dump ends in TimeoutError, not a hang."""
    with pytest.raises(TimeoutError):
        await dump_xfrm(1e-9)
