"""A lab's start cleans up only what this process's own labs left (issue 14, item 14).

It used to delete every `l2x-*` namespace whose owner looked dead: on a machine shared
by several test runs, one run's start could tear down another run's lab (a pid that
looks dead from here, a claim file not written yet, or none at all).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.demo.lab import netns
from exporter.demo.lab.base import NamespaceLab
from tests.conftest import LabFactory

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)


class BareLab(NamespaceLab):
    """A lab with just the server's namespace and bridge (no charon): quick to make."""

    def __init__(self) -> None:
        super().__init__(server_kernel="kernel-libipsec", keep_workdir=False)

    def _build(self) -> None:
        self._server_bridge()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def other_runs_leftovers() -> Iterator[Callable[[str], str]]:
    """`make(claim)` -> the name of an `l2x-<id>-srv` namespace of "another run": its work
    folder's claim file holds `claim` ("" for no work folder at all). Removed after."""
    made: list[tuple[str, Path | None]] = []

    def make(claim: str) -> str:
        lab_id = secrets.token_hex(3)  # six digits: never a real lab's four
        name = f"{netns.LAB_PREFIX}{lab_id}-srv"
        folder = None
        if claim:
            folder = Path(tempfile.mkdtemp(prefix=f"{netns.LAB_PREFIX}{lab_id}-"))
            (folder / netns.OWNER_FILE).write_text(claim)
        made.append((name, folder))
        netns.create_namespace(name)
        return name

    try:
        yield make
    finally:
        for name, folder in made:
            netns.delete_namespace(name)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def test_a_lab_start_leaves_other_runs_alone(
    make_lab: LabFactory, other_runs_leftovers: Callable[[str], str]
) -> None:
    dead_owner = other_runs_leftovers(f"{dead_pid()}\n")
    no_claim = other_runs_leftovers("")
    unreadable_claim = other_runs_leftovers("not a pid\n")
    make_lab([])  # a real lab: a server charon in its namespace
    namespaces = netns.list_namespaces()
    for name in (dead_owner, no_claim, unreadable_claim):
        assert name in namespaces, f"a lab start removed {name}, another run's"


def test_a_lab_start_removes_what_this_process_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab whose close could not delete its namespace: the next start does."""
    crashed = BareLab().start()
    with monkeypatch.context() as m:
        m.setattr(netns, "delete_namespace", lambda name: None)  # e.g. a stuck process
        crashed.close()
    assert crashed.server_ns in netns.list_namespaces()
    lab = BareLab()
    try:
        lab.start()
        assert crashed.server_ns not in netns.list_namespaces()
        assert not crashed.workdir.exists()
        assert lab.server_ns in netns.list_namespaces()
    finally:
        lab.close()
        netns.delete_namespace(crashed.server_ns)
        shutil.rmtree(crashed.workdir, ignore_errors=True)


def test_an_open_lab_of_this_process_survives_another_start() -> None:
    """A module-scoped lab stays up while a test starts its own."""
    first = BareLab().start()
    try:
        second = BareLab().start()
        second.close()
        assert first.server_ns in netns.list_namespaces()
        assert first.workdir.exists()
    finally:
        first.close()
    assert first.server_ns not in netns.list_namespaces()


def test_leftovers_of_other_runs_are_reported(
    other_runs_leftovers: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    name = other_runs_leftovers(f"{dead_pid()}\n")
    with caplog.at_level("WARNING", logger="exporter.demo.lab"):
        removed = netns.remove_leftovers()
    assert name not in removed
    assert name in netns.list_namespaces()
    assert name in caplog.text
