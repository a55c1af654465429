"""Which IKE daemons the exporter reads (`--collector.strongswan`/`--collector.libreswan`,
auto/on/off), decided once at start from the sockets that exist."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from exporter.config import Settings, parse_vici_socket
from exporter.daemon import Runtime, ike_daemons
from exporter.libreswan.options import LibreswanOptions

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sockets(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Paths for pluto's control socket and charon's VICI socket (not yet created)."""
    yield tmp_path / "pluto.ctl", tmp_path / "charon.vici"


def listen(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    return s


def settings(ctl: Path, vici: Path, strongswan: str = "auto", libreswan: str = "auto") -> Settings:
    base = Settings(vici_socket=parse_vici_socket(f"unix://{vici}"))
    return replace(
        base,
        strongswan=replace(base.strongswan, mode=strongswan),
        libreswan=LibreswanOptions(mode=libreswan, ctl_socket=ctl),
    )


def test_auto_on_a_strongswan_server(sockets: tuple[Path, Path]) -> None:
    ctl, vici = sockets
    with listen(vici):
        assert ike_daemons(settings(ctl, vici)) == (True, False)


def test_auto_before_charon_is_up_still_reads_strongswan(sockets: tuple[Path, Path]) -> None:
    # Started before charon at boot: nothing of pluto there, so it waits for charon.
    ctl, vici = sockets
    assert ike_daemons(settings(ctl, vici)) == (True, False)


def test_auto_on_a_libreswan_server(sockets: tuple[Path, Path]) -> None:
    ctl, vici = sockets
    with listen(ctl):
        assert ike_daemons(settings(ctl, vici)) == (False, True)


def test_both_sockets_both_daemons(sockets: tuple[Path, Path]) -> None:
    ctl, vici = sockets
    with listen(ctl), listen(vici):
        assert ike_daemons(settings(ctl, vici)) == (True, True)


def test_on_and_off_are_honoured_whatever_exists(sockets: tuple[Path, Path]) -> None:
    ctl, vici = sockets
    assert ike_daemons(settings(ctl, vici, libreswan="on")) == (False, True)
    assert ike_daemons(settings(ctl, vici, strongswan="on", libreswan="on")) == (True, True)
    with listen(ctl), listen(vici):
        assert ike_daemons(settings(ctl, vici, strongswan="off", libreswan="off")) == (
            False,
            False,
        )


def test_the_runtime_collects_what_was_chosen(sockets: tuple[Path, Path]) -> None:
    ctl, vici = sockets
    with listen(ctl):
        runtime = Runtime(settings(ctl, vici))
    names = [c.name for c in runtime.scraper.collectors]
    assert "libreswan" in names
    assert "strongswan" not in names
    runtime = Runtime(settings(ctl, vici, libreswan="off"))
    names = [c.name for c in runtime.scraper.collectors]
    assert "strongswan" in names
    assert "libreswan" not in names


def test_a_socket_this_user_may_not_look_at_counts_as_there() -> None:
    # /run/pluto is root's: the exporter's own user cannot even stat pluto.ctl. That
    # used to raise PermissionError at start (CI of stop 22); now the daemon counts as
    # installed and its collector reports that it cannot be read. Checked as a real
    # unprivileged user (root's stat ignores the directory's mode).
    # Not pytest's tmp_path: its parent is root's 0700 directory, where every path would
    # be unreadable to the unprivileged user.
    with tempfile.TemporaryDirectory() as top:
        _check_as_unprivileged_user(Path(top))


def _check_as_unprivileged_user(top: Path) -> None:
    top.chmod(0o755)
    locked = top / "run-pluto"
    locked.mkdir()
    ctl, vici = locked / "pluto.ctl", top / "charon.vici"
    with listen(ctl):
        locked.chmod(0)
        code = (
            "import sys; from pathlib import Path;"
            "from exporter.daemon import _socket_there;"
            f"print(_socket_there(Path({str(ctl)!r})), _socket_there(Path({str(vici)!r})))"
        )
        command = [sys.executable, "-c", code]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            out = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/")
        finally:
            locked.chmod(0o755)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]
