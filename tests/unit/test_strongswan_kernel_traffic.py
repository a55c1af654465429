"""CHILD SA traffic from the kernel's XFRM states, joined to charon's CHILD SAs by SPI.

The pairs replayed here were recorded in the vmlab guest in one run each (tests/vmlab/
record.py): the XFRM SA dump (tests/fixtures/netlink*/xfrm-getsa.bin, through the
production decoders) and charon's VICI answers of the same three clients
(tests/fixtures/vici-guest/*three-clients), Debian 12 (strongSwan 5.9.8, Linux 6.1) and
Debian 13 (strongSwan 6.0.1, Linux 6.12). Their SPIs match: the first test says so.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collectors.strongswan import StrongswanCollector
from exporter.collectors.strongswan_kernel_traffic import (
    child_traffic,
    index_states,
    kernel_traffic,
)
from exporter.config import StrongswanOptions
from exporter.kernel.model import XfrmSnapshot, XfrmState
from exporter.kernel.options import KernelOptions
from exporter.kernel.source import KernelSource
from exporter.kernel.xfrm import MarshalXfrm, decode_policies, decode_states
from exporter.strongswan import view as view_module
from exporter.strongswan.fetch import ViciAnswers, assemble_snapshot
from exporter.strongswan.ledger import Traffic
from exporter.strongswan.snapshot import StrongswanSnapshot
from exporter.vici.address import ViciAddress
from tests.recordings import RECORDED_NOW, load_answers
from tests.reference import Families

FIXTURES = Path(__file__).parent.parent / "fixtures"
#: (VICI answers, netlink dumps) recorded together in the guest.
PAIRS = {
    "bookworm": ("vici-guest/three-clients", "netlink"),
    "trixie": ("vici-guest/trixie-three-clients", "netlink-trixie"),
}
CONN, CHILD = "nycmesh-l2tp-psk", "l2tp"


def recorded_states(release: str) -> tuple[XfrmState, ...]:
    raw = (FIXTURES / PAIRS[release][1] / "xfrm-getsa.bin").read_bytes()
    return tuple(decode_states(MarshalXfrm().parse(raw)))


def recorded_dump(release: str) -> XfrmSnapshot:
    policies = (FIXTURES / PAIRS[release][1] / "xfrm-getpolicy.bin").read_bytes()
    return XfrmSnapshot(
        recorded_states(release), tuple(decode_policies(MarshalXfrm().parse(policies)))
    )


def recorded_answers(release: str) -> ViciAnswers:
    return load_answers(FIXTURES / PAIRS[release][0])


def recorded_snapshot(release: str, answers: ViciAnswers | None = None) -> StrongswanSnapshot:
    return assemble_snapshot(answers or recorded_answers(release), RECORDED_NOW)


def listed_before_the_traffic(release: str) -> ViciAnswers:
    """The recorded answers with every CHILD SA's counts at 0: what a listing said right
    after the clients connected, before the traffic the kernel's dump then counted."""
    answers = recorded_answers(release)
    list_sas = copy.deepcopy(answers.list_sas)
    for event in list_sas:
        for sa in event.values():
            for child in sa["child-sas"].values():
                for key in ("bytes-in", "bytes-out", "packets-in", "packets-out"):
                    child[key] = "0"
    return dataclasses.replace(answers, list_sas=list_sas)


def by_spi(states: tuple[XfrmState, ...]) -> dict[int, XfrmState]:
    return {s.spi: s for s in states}


# ---- the recordings are a matching pair ----------------------------------------------------


@pytest.mark.parametrize("release", sorted(PAIRS))
def test_recorded_spis_are_the_kernels_states(release: str) -> None:
    """Each recorded CHILD SA's spi-in is an inbound ESP state to our address and its
    spi-out an outbound one to the client, with the CHILD SA's reqid; nothing else is in
    the dump."""
    snapshot = recorded_snapshot(release)
    states = by_spi(recorded_states(release))
    seen = set()
    for sa in snapshot.ike_sas:
        for child in sa.children:
            assert child.spi_in is not None and child.spi_out is not None
            inbound, outbound = states[child.spi_in], states[child.spi_out]
            assert (inbound.src, inbound.dst) == (sa.remote_host, sa.local_host)
            assert (outbound.src, outbound.dst) == (sa.local_host, sa.remote_host)
            assert inbound.reqid == outbound.reqid == int(child.reqid)
            assert inbound.proto == outbound.proto == "esp"
            seen |= {child.spi_in, child.spi_out}
    assert len(snapshot.ike_sas) == 3
    assert seen == set(states)


def test_spis_parsed_from_every_recorded_answer() -> None:
    """VICI gives SPIs as 8 hex digits: list-sas of the netns lab too."""
    snapshot = assemble_snapshot(load_answers(FIXTURES / "vici" / "remote-access"), RECORDED_NOW)
    children = [c for sa in snapshot.ike_sas for c in sa.children]
    assert children
    assert all(c.spi_in and c.spi_out for c in children)
    raw = next(
        iter(next(iter(recorded_answers("bookworm").list_sas[0].values()))["child-sas"].values())
    )
    child = recorded_snapshot("bookworm").ike_sas[0].children[0]
    assert f"{child.spi_in:08x}" == raw["spi-in"] and f"{child.spi_out:08x}" == raw["spi-out"]


# ---- the join -----------------------------------------------------------------------------


@pytest.mark.parametrize("release", sorted(PAIRS))
def test_join_gives_each_child_sa_the_kernels_counts(release: str) -> None:
    """Listed at 0, dumped later: each CHILD SA gets exactly its two states' counts."""
    snapshot = recorded_snapshot(release, listed_before_the_traffic(release))
    states = by_spi(recorded_states(release))
    got = kernel_traffic(snapshot.ike_sas, states.values())
    expected = {}
    for sa in snapshot.ike_sas:
        for c in sa.children:
            assert c.spi_in is not None and c.spi_out is not None
            i, o = states[c.spi_in], states[c.spi_out]
            expected[c.uniqueid] = Traffic(i.bytes, o.bytes, i.packets, o.packets)
    assert got == expected
    assert all(t.bytes_in > 1000 and t.bytes_out > 1000 for t in got.values())


@pytest.mark.parametrize("release", sorted(PAIRS))
def test_a_listing_newer_than_the_dump_is_not_undone(release: str) -> None:
    """Recorded as they were: charon answered a moment after the dump, so some of its
    counts are higher (a packet more). An SA's counts only grow: the larger one stands."""
    snapshot = recorded_snapshot(release)
    got = kernel_traffic(snapshot.ike_sas, recorded_states(release))
    newer = 0
    for sa in snapshot.ike_sas:
        for c in sa.children:
            t = got[c.uniqueid]
            assert t.bytes_in >= c.bytes_in and t.bytes_out >= c.bytes_out
            assert t.packets_in >= c.packets_in and t.packets_out >= c.packets_out
            newer += (t.bytes_in, t.bytes_out) == (c.bytes_in, c.bytes_out)
    assert newer  # the recordings do have a listing newer than the dump


def test_kernel_libipsec_holds_none_of_them() -> None:
    """No states (charon's userspace IPsec), or only other SAs' states: nothing joined."""
    snapshot = recorded_snapshot("bookworm")
    assert kernel_traffic(snapshot.ike_sas, ()) == {}
    other = recorded_states("trixie")  # another run: other SPIs
    assert kernel_traffic(snapshot.ike_sas, other) == {}


def test_states_of_another_peer_or_reqid_are_not_taken() -> None:
    """An outbound SPI is the peer's pick: another peer may pick it too. Only the state to
    this CHILD SA's peer, with its reqid, is its."""
    snapshot = recorded_snapshot("bookworm", listed_before_the_traffic("bookworm"))
    sa = snapshot.ike_sas[0]
    child = sa.children[0]
    assert child.spi_out is not None
    states = recorded_states("bookworm")
    out = by_spi(states)[child.spi_out]
    twin_peer = dataclasses.replace(out, dst="192.168.77.99", bytes=10**9, packets=10**6)
    twin_reqid = dataclasses.replace(out, reqid=out.reqid + 40, bytes=10**9, packets=10**6)
    alone = child_traffic(sa, child, index_states(states))
    assert alone is not None and alone.bytes_out == out.bytes
    assert child_traffic(sa, child, index_states((*states, twin_peer, twin_reqid))) == alone


def test_several_states_of_one_child_sa_are_summed() -> None:
    """States that agree on SPI, protocol, destination and reqid are one CHILD SA's (per-CPU
    copies): their counts add up."""
    snapshot = recorded_snapshot("trixie", listed_before_the_traffic("trixie"))
    sa = snapshot.ike_sas[0]
    child = sa.children[0]
    assert child.spi_in is not None
    states = recorded_states("trixie")
    inbound = by_spi(states)[child.spi_in]
    copy_on_cpu1 = dataclasses.replace(inbound, bytes=1000, packets=7)
    got = child_traffic(sa, child, index_states((*states, copy_on_cpu1)))
    assert got is not None
    assert (got.bytes_in, got.packets_in) == (inbound.bytes + 1000, inbound.packets + 7)


def test_a_direction_the_kernel_lacks_keeps_the_listing() -> None:
    """An SA half installed (or half deleted): the missing direction keeps charon's count."""
    snapshot = recorded_snapshot("bookworm")
    sa = snapshot.ike_sas[0]
    child = sa.children[0]
    states = [s for s in recorded_states("bookworm") if s.spi != child.spi_out]
    got = child_traffic(sa, child, index_states(states))
    assert got is not None
    assert (got.bytes_out, got.packets_out) == (child.bytes_out, child.packets_out)
    assert got.bytes_in == max(child.bytes_in, by_spi(tuple(states))[child.spi_in or 0].bytes)


# ---- the collector: gauges, the ledger's totals, staleness ---------------------------------


class RecordedKernel(KernelSource):
    """The shared kernel reader, answering with a recorded XFRM dump (or failing)."""

    def __init__(self, dump: XfrmSnapshot) -> None:
        super().__init__(KernelOptions())
        self.dump = dump
        self.error: OSError | None = None
        self.dumps = 0

    async def xfrm(self) -> XfrmSnapshot:
        self.dumps += 1
        if self.error is not None:
            raise self.error
        return self.dump


@pytest.fixture
def charon(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[StrongswanSnapshot]]:
    """What the view's rounds get from charon: the last snapshot put in the list."""
    answers: list[StrongswanSnapshot] = []

    async def fetch(*_: Any) -> StrongswanSnapshot:
        return answers[-1]

    monkeypatch.setattr(view_module, "fetch_snapshot", fetch)
    yield answers


def scrape(families: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(Families(families)).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of `name`'s samples that have `labels`."""
    return sum(
        v
        for (n, labs), v in values.items()
        if n == name and all(dict(labs).get(k) == w for k, w in labels.items())
    )


async def collector_for(
    release: str, kernel: KernelSource | None, charon: list[StrongswanSnapshot]
) -> tuple[view_module.CharonView, StrongswanCollector]:
    charon.append(recorded_snapshot(release, listed_before_the_traffic(release)))
    options = StrongswanOptions(refresh_interval=10, sa_details=True, events=True)
    address = ViciAddress("unix", path="/nonexistent/charon.vici")
    view = view_module.CharonView(address, 1, options)
    await view.refresh()  # the first listing: the ledger's baseline
    return view, StrongswanCollector(view, options, kernel=kernel)


@pytest.mark.parametrize("release", sorted(PAIRS))
async def test_scrape_shows_the_kernels_counts_in_gauges_and_totals(
    release: str, charon: list[StrongswanSnapshot]
) -> None:
    """Listed at 0 (no listing since the traffic): the scrape's gauges and _total counters
    are the recorded kernel counts, per CHILD SA, per connection and per user."""
    kernel = RecordedKernel(recorded_dump(release))
    view, collector = await collector_for(release, kernel, charon)
    got = scrape((await collector.collect()).families)
    states = by_spi(recorded_states(release))
    totals: dict[str, float] = {"in": 0, "out": 0}
    for sa in charon[-1].ike_sas:
        for c in sa.children:
            assert c.spi_in is not None and c.spi_out is not None
            for direction, state in (("in", states[c.spi_in]), ("out", states[c.spi_out])):
                labels = {"uniqueid": c.uniqueid, "direction": direction}
                assert sample(got, "strongswan_child_sa_current_bytes", **labels) == state.bytes
                assert sample(got, "strongswan_child_sa_current_packets", **labels) == state.packets
                user = {"conn": CONN, "user": sa.user, "direction": direction}
                assert sample(got, "strongswan_user_bytes_total", **user) == state.bytes
                assert sample(got, "strongswan_user_packets_total", **user) == state.packets
                totals[direction] += state.bytes
    for direction, total in totals.items():
        labels = {"conn": CONN, "child": CHILD, "direction": direction}
        assert sample(got, "strongswan_child_sa_bytes_total", **labels) == total
    assert 0 <= sample(got, "strongswan_kernel_traffic_age_seconds") < 1
    assert kernel.dumps == 1
    await view.close()


async def test_a_failed_dump_keeps_the_last_counts_and_says_how_old(
    charon: list[StrongswanSnapshot], caplog: pytest.LogCaptureFixture
) -> None:
    kernel = RecordedKernel(recorded_dump("bookworm"))
    view, collector = await collector_for("bookworm", kernel, charon)
    first = scrape((await collector.collect()).families)
    kernel.error = PermissionError(1, "netlink dump refused")
    time.sleep(0.05)
    with caplog.at_level(logging.WARNING):
        second = scrape((await collector.collect()).families)
        third = scrape((await collector.collect()).families)
    assert sum("XFRM" in r.getMessage() for r in caplog.records) == 1  # once, not per scrape
    for name in (
        "strongswan_child_sa_current_bytes",
        "strongswan_child_sa_bytes_total",
        "strongswan_user_bytes_total",
    ):
        assert sample(second, name) == sample(third, name) == sample(first, name) > 0
    age = "strongswan_kernel_traffic_age_seconds"
    assert sample(first, age) < 0.05 <= sample(second, age) <= sample(third, age)
    kernel.error = None
    assert sample(scrape((await collector.collect()).families), age) < 0.05
    await view.close()


@pytest.mark.parametrize("dump", ["empty", "other run"])
async def test_without_charons_sas_in_the_kernel_nothing_changes(
    dump: str, charon: list[StrongswanSnapshot]
) -> None:
    """kernel-libipsec (no states) or states that are not charon's: the same exposition as
    without a kernel source, and no kernel age."""
    states = () if dump == "empty" else recorded_states("trixie")
    view, with_kernel = await collector_for(
        "bookworm", RecordedKernel(XfrmSnapshot(states, ())), charon
    )
    without = StrongswanCollector(view, with_kernel._options)
    ages = {"strongswan_snapshot_age_seconds", "strongswan_sa_listing_age_seconds"}

    def steady(values: dict[Any, float]) -> dict[Any, float]:
        return {k: v for k, v in values.items() if k[0] not in ages}

    a = scrape((await with_kernel.collect()).families)
    b = scrape((await without.collect()).families)
    assert steady(a) == steady(b)
    assert sample(a, "strongswan_child_sa_current_bytes") == 0  # the listing's
    assert not any(k[0] == "strongswan_kernel_traffic_age_seconds" for k in a)
    await view.close()


async def test_totals_never_fall_when_a_dump_counts_less(
    charon: list[StrongswanSnapshot],
) -> None:
    """The kernel's counts only raise what the ledger holds: a dump older than charon's
    newest listing (counts higher than the dump's) leaves the totals where they were."""
    kernel = RecordedKernel(recorded_dump("bookworm"))
    view, collector = await collector_for("bookworm", kernel, charon)
    first = scrape((await collector.collect()).families)
    shrunk = tuple(dataclasses.replace(s, bytes=s.bytes // 2) for s in recorded_states("bookworm"))
    kernel.dump = XfrmSnapshot(shrunk, ())
    second = scrape((await collector.collect()).families)
    for name in ("strongswan_child_sa_bytes_total", "strongswan_user_bytes_total"):
        assert sample(second, name) == sample(first, name) > 0
    await view.close()


@pytest.mark.parametrize("release", sorted(PAIRS))
async def test_a_rekeyed_child_sa_the_kernel_no_longer_holds_is_forgotten(
    release: str, charon: list[StrongswanSnapshot]
) -> None:
    """charon sends no event when it deletes a REKEYED CHILD SA (the peer deleted the old
    SA after a rekey): with the kernel's counts the next listing is minutes away, so a
    REKEYED CHILD SA none of whose states is in the kernel goes at the scrape; one whose
    states are still there stays."""
    kernel = RecordedKernel(recorded_dump(release))
    base = recorded_snapshot(release, listed_before_the_traffic(release))
    first, second = base.ike_sas[0], base.ike_sas[1]
    deleted = dataclasses.replace(
        first.children[0], uniqueid="999", state="REKEYED", spi_in=0x1, spi_out=0x2
    )
    lingering = dataclasses.replace(second.children[0], state="REKEYED")
    ike_sas = (
        dataclasses.replace(first, children=(*first.children, deleted)),
        dataclasses.replace(second, children=(lingering,)),
        *base.ike_sas[2:],
    )
    charon.append(dataclasses.replace(base, ike_sas=ike_sas))
    options = StrongswanOptions(refresh_interval=10, sa_details=True, events=True)
    view = view_module.CharonView(ViciAddress("unix", path="/nonexistent/charon.vici"), 1, options)
    await view.refresh()
    collector = StrongswanCollector(view, options, kernel=kernel)
    rekeyed = {"conn": CONN, "child": CHILD, "state": "REKEYED"}
    got = scrape((await collector.collect()).families)
    assert sample(got, "strongswan_child_sas", **rekeyed) == 1
    current = view.current()
    assert current is not None
    assert "999" not in {c.uniqueid for sa in current.ike_sas for c in sa.children}
    await view.close()
