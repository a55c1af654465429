"""The users collector: a fixed day of logins through the ledger → the exact exposition in
tests/golden/users*.prom, and the tracker's refresh from a kernel source.

A diff is a bug or a deliberate change; after a deliberate one, rewrite the files with
`UPDATE_GOLDEN=1 pytest tests/unit/test_users_collector.py` and say why in the commit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest

from exporter.cli import parse_command_line
from exporter.collectors.join import join_sessions
from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.users import LoginTracker, UsersCollector, render_users
from exporter.daemon import Runtime
from exporter.exposition import render_openmetrics, render_text
from exporter.kernel.hook import RecordRejections
from exporter.kernel.model import LinkStats, PppHookRecord, PppInterface
from exporter.logins.ledger import LoginLedger
from exporter.logins.model import EndedRecord, LoginsView
from exporter.logins.options import LoginOptions
from exporter.privacy import PrivacyFilter, PrivacyOptions
from tests.reference import Families, openmetrics_latest

GOLDEN = Path(__file__).parent.parent / "golden"
START = 1_764_745_000.0
OPTIONS = LoginOptions(required=("peer-*", "nycmesh-sn1"))


def iface(name: str, index: int, up: float, rx: int, tx: int) -> PppInterface:
    stats = LinkStats(rx_bytes=rx, tx_bytes=tx, rx_packets=rx // 100, tx_packets=tx // 100)
    return PppInterface(name, index, "192.168.42.1", f"192.168.42.{10 + index}", up, stats)


def hook(name: str, index: int, login: str, pid: int, up: float) -> PppHookRecord:
    return PppHookRecord(
        name, index, login, "192.168.42.1", f"192.168.42.{10 + index}", "", pid, up
    )


def ended(name: str, login: str, pid: int, up: float, down: float, rx: int, tx: int) -> EndedRecord:
    return EndedRecord(
        f"{int(down)}.{name}.{pid}", name, None, login, "192.168.42.99", "", pid, up, down,
        down - up, rx, tx,
    )  # fmt: skip


def a_day() -> LoginsView:
    """alice reconnects (one session ended between two refreshes), peer-a is up, peer-b
    went, a client without a login; then a session of alice's is seen ending live."""
    ledger = LoginLedger(OPTIONS, clock=lambda: START, started_at=START)
    links = [
        iface("ppp0", 7, START + 10, 25_984, 24_040),
        iface("ppp1", 8, START + 20, 1_000, 2_000),
        iface("ppp2", 9, START + 30, 300, 400),
    ]
    hooks = {
        "ppp0": hook("ppp0", 7, "alice", 100, START + 10),
        "ppp1": hook("ppp1", 8, "peer-a", 101, START + 20),
    }
    records = [ended("ppp5", "peer-b", 99, START + 1, START + 50, 7_000, 8_000)]
    ledger.update(join_sessions(links, None, hooks, None), links, hooks, records, now=START + 60)
    records.append(ended("ppp6", "alice", 98, START + 61, START + 70, 100_000, 5_000_000))
    links[0] = iface("ppp0", 7, START + 10, 30_000, 25_000)
    ledger.update(join_sessions(links, None, hooks, None), links, hooks, records, now=START + 75)
    del links[0], hooks["ppp0"]
    records.append(ended("ppp0", "alice", 100, START + 10, START + 80, 29_900, 25_100))
    return ledger.update(
        join_sessions(links, None, hooks, None), links, hooks, records, now=START + 90
    )


REJECTED = {"too_large": 1, "not_utf8": 0, "foreign_owner": 2, "malformed": 3}


def families(limit: int = 1000) -> tuple[list[Metric], SeriesLimiter]:
    limiter = SeriesLimiter(limit)
    return render_users(a_day(), limiter, REJECTED), limiter


def check_golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text()


def test_text_exposition_matches_golden() -> None:
    text = generate_latest(Families(families()[0])).decode()
    check_golden("users.prom", text)
    # The exporter's own writer says the same.
    assert render_text(families()[0]).decode() == text


def test_openmetrics_exposition_matches_golden() -> None:
    """OpenMetrics: each login's counters carry `_created`, when its series began."""
    text = openmetrics_latest(Families(families()[0])).decode()
    check_golden("users.openmetrics.prom", text)
    assert render_openmetrics(families()[0]).decode() == text
    assert 'l2tp_ipsec_user_receive_bytes_created{user="alice"} 1.76474506e+09' in text


def test_the_series_limit_bounds_the_logins() -> None:
    fams, limiter = families(limit=2)
    text = generate_latest(Families(fams)).decode()
    check_golden("users-limited.prom", text)
    assert limiter.dropped == {"l2tp_ipsec_user_sessions": 1}


def test_the_day_adds_up() -> None:
    totals = {t.login: t for t in a_day().totals}
    alice = totals["alice"]
    # alice's first session: the last live count (30 000) beats pppd's BYTES_RCVD (29 900),
    # pppd's BYTES_SENT (25 100) the last live one (25 000).
    assert (alice.receive_bytes, alice.transmit_bytes) == (30_000 + 100_000, 25_100 + 5_000_000)
    assert (alice.logins, alice.logouts, alice.sessions) == (2, 2, 0)
    assert (totals["peer-b"].receive_bytes, totals["peer-b"].logouts) == (7_000, 1)


def test_no_created_where_privacy_drops_the_user() -> None:
    """Series merged by a dropped label have no one creation time; the sum of two would be
    nonsense, so the collector leaves `_created` out there."""
    drop = PrivacyFilter(PrivacyOptions(defaults={"users": "drop", "addresses": "keep"}))
    fams = render_users(a_day(), SeriesLimiter(1000), REJECTED, created=lambda family: False)
    text = render_openmetrics(drop.apply(fams)).decode()
    assert "_created" not in text
    assert "l2tp_ipsec_user_receive_bytes_total 138000.0" in text


class FakeSource:
    def __init__(self, interfaces: list[PppInterface], hooks: dict[str, PppHookRecord]) -> None:
        self.interfaces = interfaces
        self.hook_records = hooks
        self.dumps = 0
        self.fail: OSError | None = None

    async def ppp(self) -> list[PppInterface]:
        self.dumps += 1
        if self.fail is not None:
            raise self.fail
        return self.interfaces

    async def l2tp(self) -> Any:
        raise OSError("no l2tp here")

    async def hooks(self) -> dict[str, PppHookRecord]:
        return self.hook_records


async def test_the_tracker_reads_the_kernel_and_the_ended_records(tmp_path: Path) -> None:
    (tmp_path / "ended").mkdir()
    (tmp_path / "ended" / "1764745050.ppp5.99").write_text(
        "PEERNAME=bob\nUP_SINCE=1764745010\nBYTES_RCVD=10\nBYTES_SENT=20\nDOWN_AT=1764745050\n"
    )
    source = FakeSource(
        [iface("ppp0", 7, START + 10, 500, 600)], {"ppp0": hook("ppp0", 7, "alice", 1, START + 10)}
    )
    tracker = LoginTracker(
        source,  # type: ignore[arg-type]
        lambda: None,
        LoginOptions(),
        tmp_path,
        clock=lambda: START,
        rejections=RecordRejections(),
    )
    collector = UsersCollector(tracker, SeriesLimiter(10))
    first, view = await collector.collect(), await tracker.view()
    assert first.success and source.dumps == 1  # the page and the scrape share one refresh
    assert {t.login: t.receive_bytes for t in view.totals} == {"alice": 500, "bob": 10}
    assert [s.interface for s in view.live] == ["ppp0"]
    source.fail = PermissionError(1, "netlink dump refused")
    tracker._shared._max_age = 0  # next call refreshes
    failed = await collector.collect()
    assert not failed.success and "refused" in failed.error
    with pytest.raises(OSError):
        await tracker.view()


@pytest.mark.parametrize(
    ("flags", "collector", "page"),
    [
        ([], True, True),
        (["--no-collector.users"], False, True),
        (["--no-web.sessions"], True, False),
        (["--no-collector.users", "--no-web.sessions"], False, False),
    ],
)
async def test_the_daemon_wires_the_tracker(
    tmp_path: Path, flags: list[str], collector: bool, page: bool
) -> None:
    """One tracker for the collector and the page; each has its switch."""
    state = tmp_path / "ppp"
    (state / "ended").mkdir(parents=True)
    (state / "ended" / "1764745050.ppp5.99").write_text("PEERNAME=bob\nDOWN_AT=1764745050\n")
    argv = ["--collector.sessions.state-dir", str(state), *flags]
    runtime = Runtime(parse_command_line(argv).settings)
    assert ("users" in [c.name for c in runtime.scraper.collectors]) is collector
    assert (runtime.logins is not None) is (collector or page)
    if runtime.logins is not None:
        # One reader of the kernel's tables: the tracker's refresh and the kernel
        # collectors of a scrape share each dump.
        sessions = next(c for c in runtime.scraper.collectors if c.name == "sessions")
        assert runtime.logins._source is sessions._source  # type: ignore[attr-defined]
    async with TestClient(TestServer(runtime.app())) as client:
        metrics = await (await client.get("/metrics")).text()
        assert ("l2tp_ipsec_users_tracked" in metrics) is collector
        answer = await client.get("/sessions?format=json")
        assert answer.status == (200 if page else 404)
        if page:
            assert '"login": "bob"' in await answer.text()
    await runtime.close()
