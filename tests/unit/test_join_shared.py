"""read_joined: the sessions collector and the login tracker share one join of the same
readings (issue 19: the join ran twice per scrape)."""

from __future__ import annotations

from typing import Any

import pytest

import exporter.collectors.sessions as sessions
from exporter.kernel.model import L2tpSnapshot, LinkStats, PppHookRecord, PppInterface


class Source:
    """The readings a KernelSource hands out; `new()` is the next scrape's."""

    def __init__(self) -> None:
        self.new()

    def new(self) -> None:
        self.interfaces = [PppInterface("ppp0", 7, "10.0.0.1", "10.0.0.2", None, LinkStats())]
        self.snapshot = L2tpSnapshot(tunnels=(), sessions=())
        self.hook_records: dict[str, PppHookRecord] = {}

    async def ppp(self) -> list[PppInterface]:
        return self.interfaces

    async def l2tp(self) -> L2tpSnapshot:
        return self.snapshot

    async def hooks(self) -> dict[str, PppHookRecord]:
        return self.hook_records


@pytest.fixture
def joins(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def join(interfaces: Any, l2tp: Any, hooks: Any, ike: Any) -> list[Any]:
        calls.append(ike)
        return []

    monkeypatch.setattr(sessions, "join_sessions", join)
    return calls


async def test_same_readings_one_join(joins: list[Any]) -> None:
    source = Source()
    first = await sessions.read_joined(source, ("ike", 1))  # type: ignore[arg-type]
    # The IKE daemon's getter builds a new snapshot each call: equal is the same.
    second = await sessions.read_joined(source, ("ike", 1))  # type: ignore[arg-type]
    assert second is first
    assert len(joins) == 1


async def test_new_readings_or_another_ike_snapshot_join_again(joins: list[Any]) -> None:
    source = Source()
    await sessions.read_joined(source, ("ike", 1))  # type: ignore[arg-type]
    await sessions.read_joined(source, ("ike", 2))  # type: ignore[arg-type]
    assert len(joins) == 2
    source.new()  # the next scrape's dumps: new objects, even if equal
    await sessions.read_joined(source, ("ike", 2))  # type: ignore[arg-type]
    assert len(joins) == 3
    other = Source()  # another source never gets this one's join
    await sessions.read_joined(other, ("ike", 2))  # type: ignore[arg-type]
    assert len(joins) == 4
