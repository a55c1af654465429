"""Which IKE daemons the exporter reads (`--collector.strongswan`/`--collector.libreswan`,
auto/on/off), decided once at start from the sockets that exist."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from exporter.config import Settings, parse_vici_socket
from exporter.daemon import Runtime, ike_daemons
from exporter.libreswan.options import LibreswanOptions


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
