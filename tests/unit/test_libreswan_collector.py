"""Real pluto's recorded answers (tests/fixtures/libreswan/<release>/, Libreswan 4.10 and
5.2 in the vmlab guest) → the production round (`ask_pluto`), view and collector → the
exact exposition text in tests/golden/libreswan-<release>.<variant>.prom.

A diff is a bug or a deliberate change; rewrite with
`UPDATE_GOLDEN=1 pytest tests/unit/test_libreswan_collector.py` and say why in the commit.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest

from exporter.collectors.join import ike_match
from exporter.collectors.libreswan import LibreswanCollector
from exporter.collectors.limits import SeriesLimiter, dropped_family
from exporter.libreswan.fetch import ask_pluto
from exporter.libreswan.model import PlutoSnapshot
from exporter.libreswan.options import LibreswanOptions
from exporter.libreswan.view import PlutoView
from tests.reference import Families

FIXTURES = Path(__file__).parent.parent / "fixtures" / "libreswan"
GOLDEN = Path(__file__).parent.parent / "golden"
RELEASES = {"bookworm": "4.10", "trixie": "5.2"}
#: The recordings' time of day, fixed so the output is too.
RECORDED_NOW = 1796241400.0
OPTIONS = {
    "default": LibreswanOptions(),
    "sa-details": LibreswanOptions(sa_details=True),
}
FILES = {
    "trafficstatus": "trafficstatus.txt",
    "showstates": "showstates.txt",
    "status": "status.txt",
    "globalstatus": "globalstatus.txt",
    "version": "version.txt",
}


def recorded(release: str) -> PlutoSnapshot:
    async def run(query: str) -> str:
        return (FIXTURES / release / FILES[query]).read_text()

    return asyncio.run(ask_pluto(run, clock=lambda: RECORDED_NOW))


def exposition(release: str, options: LibreswanOptions, limit: int = 1000) -> str:
    snapshot = recorded(release)

    async def ask() -> PlutoSnapshot:
        return snapshot

    view = PlutoView(ask)
    limiter = SeriesLimiter(limit)
    collection = asyncio.run(LibreswanCollector(view, options, limiter).collect())
    assert collection.success, collection.error
    families = [*collection.families, dropped_family(limiter)]
    return generate_latest(Families(families)).decode()


@pytest.mark.parametrize("variant", sorted(OPTIONS))
@pytest.mark.parametrize("release", sorted(RELEASES))
def test_exposition_matches_golden(release: str, variant: str) -> None:
    text = exposition(release, OPTIONS[variant])
    golden = GOLDEN / f"libreswan-{release}.{variant}.prom"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text()


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_recorded_numbers(release: str) -> None:
    """The numbers the guest set up (manifest.json: three PSK clients on l2tp-psk, none
    on xauth-psk), read back from the exposition."""
    text = exposition(release, LibreswanOptions())
    assert f'libreswan_info{{version="{RELEASES[release]}"}} 1.0' in text
    assert 'libreswan_connection_established{conn="l2tp-psk"} 3.0' in text
    assert 'libreswan_connection_established{conn="xauth-psk"} 0.0' in text
    assert (
        'libreswan_connection_configured{conn="l2tp-psk",kind="template",version="ikev1"} 1.0'
        in text
    )
    assert 'libreswan_ipsec_sas{conn="l2tp-psk",state="STATE_QUICK_R2"} 3.0' in text
    assert 'libreswan_ike_sas{conn="l2tp-psk",state="STATE_MAIN_R3"} 3.0' in text
    assert 'libreswan_user_sessions{conn="l2tp-psk",user="192.168.77.12"} 1.0' in text
    traffic = [
        line
        for line in (FIXTURES / release / "trafficstatus.txt").read_text().splitlines()
        if line.strip()
    ]
    total_in = sum(int(line.split("inBytes=")[1].split(",")[0]) for line in traffic)
    assert (
        f'libreswan_connection_bytes_total{{conn="l2tp-psk",direction="in"}} {total_in:.1f}' in text
    )


def test_the_series_limit_bounds_per_user_and_per_sa_families() -> None:
    text = exposition("trixie", LibreswanOptions(sa_details=True), limit=2)
    assert text.count("libreswan_user_sessions{") == 2
    assert text.count("libreswan_ipsec_sa_info{") == 2
    assert 'l2tp_ipsec_exporter_series_dropped_total{family="libreswan_user_sessions"} 1.0' in text


def test_the_join_finds_the_client_by_its_address() -> None:
    snapshot = recorded("trixie")
    match = ike_match("192.168.77.12", snapshot)
    assert match is not None
    assert (match.conn, match.user, match.uniqueid) == ("l2tp-psk", "192.168.77.12", "3")
    assert ike_match("192.168.77.99", snapshot) is None


def test_pluto_gone_is_one_family_and_no_traceback() -> None:
    async def ask() -> PlutoSnapshot:
        raise OSError("whack: connect(/run/pluto/pluto.ctl): No such file or directory")

    view = PlutoView(ask)
    collection = asyncio.run(
        LibreswanCollector(view, LibreswanOptions(), SeriesLimiter(9)).collect()
    )
    assert not collection.success
    assert "pluto.ctl" in collection.error
    names = [f.name for f in collection.families]
    assert names[0] == "libreswan_up"
    assert collection.families[0].samples[0].value == 0
    assert "libreswan_info" not in names


def test_a_quick_round_completes_the_last_full_one() -> None:
    """The rounds the kernel's SA announcements ask for run trafficstatus alone; SAs the
    last full round knew keep their IKE SA, state and SPIs, a new one has none yet."""
    from exporter.libreswan.fetch import ask_traffic

    previous = recorded("trixie")
    lines = (FIXTURES / "trixie" / "trafficstatus.txt").read_text().splitlines()
    new = lines[2].replace("#6:", "#9:").replace('"l2tp-psk"[3]', '"l2tp-psk"[4]')
    text = "\n".join([lines[0], new]) + "\n"

    async def run(query: str) -> str:
        assert query == "trafficstatus"
        return text

    quick = asyncio.run(ask_traffic(run, previous, clock=lambda: RECORDED_NOW + 5))
    by_serial = {sa.serial: sa for sa in quick.ipsec_sas}
    assert set(by_serial) == {2, 9}
    old = next(sa for sa in previous.ipsec_sas if sa.serial == 2)
    assert (by_serial[2].spi_in, by_serial[2].ike_serial) == (old.spi_in, old.ike_serial)
    assert by_serial[2].spi_in is not None
    assert (by_serial[9].spi_in, by_serial[9].ike_serial) == (None, None)
    assert quick.connections == previous.connections
    assert quick.taken_at == RECORDED_NOW + 5
