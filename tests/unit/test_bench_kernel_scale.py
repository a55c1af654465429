"""bench/kernel_scale.py's cloning, at a small N, so the benchmark cannot rot.

The recorded guest dumps cloned to N clients go through the production dump functions
(answered by the bench's recorded kernel) and must give N of each: ppp interfaces with
distinct indexes, names and addresses, N L2TP tunnels and calls, 2N XFRM states with
distinct SPIs. The same cloned bytes decoded through pyroute2's own marshals give the
same snapshots as the byte decoders (`exporter.kernel.nlraw`) the dump sockets use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.nlsocket import Marshal
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from bench import kernel_scale
from bench.kernel_scale import RECORDINGS, RecordedKernel, Recording, clone
from exporter.kernel.l2tp import decode_sessions, decode_tunnels, dump_l2tp, l2tp_msg
from exporter.kernel.nlraw import RawMarshal
from exporter.kernel.rtnl import (
    MarshalRtnlDump,
    decode_addresses,
    decode_links,
    dump_ppp,
    ppp_interfaces,
)
from exporter.kernel.xfrm import (
    MarshalXfrm,
    MarshalXfrmDump,
    decode_policies,
    decode_states,
    dump_xfrm,
)

N = 7


@pytest.mark.parametrize("name", RECORDINGS)
async def test_cloned_dumps_decode_to_n_of_each(name: str, tmp_path: Path) -> None:
    rec = Recording.load(name)
    cloned = clone(rec, N)
    kernel = RecordedKernel(cloned, rec.l2tp_family)
    pppol2tp = tmp_path / "pppol2tp"
    pppol2tp.write_text(cloned.pppol2tp)
    with kernel.serving(pppol2tp):
        interfaces = await dump_ppp("ppp*", 5.0)
        l2tp = await dump_l2tp(5.0)
        xfrm = await dump_xfrm(5.0)
    assert kernel.requests == {
        "links": 1,
        "addresses2": 1,
        "ctrl": 1,
        "tunnels": 1,
        "sessions": 1,
        "states": 1,
        "policies": 1,
    }
    assert len(interfaces) == N
    for values in (
        {i.index for i in interfaces},
        {i.name for i in interfaces},
        {i.peer_address for i in interfaces},
        {t.tunnel_id for t in l2tp.tunnels},
        {t.peer_address for t in l2tp.tunnels},
        {(s.tunnel_id, s.session_id) for s in l2tp.sessions},
        {s.interface for s in l2tp.sessions},
    ):
        assert len(values) == N
    assert {s.interface for s in l2tp.sessions} == {i.name for i in interfaces}
    assert {t.peer_address for t in l2tp.tunnels} == {
        kernel_scale.public_address(i) for i in range(N)
    }
    assert len({(s.dst, s.spi) for s in xfrm.states}) == 2 * N
    assert {s.reqid for s in xfrm.states} == set(range(1, N + 1))
    assert len(cloned.hooks) == N


@pytest.mark.parametrize("name", RECORDINGS)
def test_byte_decoders_agree_with_pyroute2_on_the_clones(name: str) -> None:
    """pyroute2's marshals decode every attribute; the dump sockets' `RawMarshal` leaves
    the messages as bytes. Both through the same decoders: the same snapshots."""
    rec = Recording.load(name)
    cloned = clone(rec, N)

    def both(
        marshal: Callable[[], Marshal], raw_marshal: Callable[[], Marshal], msgs: list[bytes]
    ) -> tuple[list[Any], list[Any]]:
        data = b"".join(msgs)
        return list(marshal().parse(data)), list(raw_marshal().parse(data))

    def l2tp_marshal() -> Marshal:
        marshal = Marshal()
        marshal.msg_map[rec.l2tp_family] = l2tp_msg
        return marshal

    def l2tp_raw() -> Marshal:
        marshal = RawMarshal()
        marshal.raw_types = frozenset({rec.l2tp_family})
        return marshal

    rtnl_raw = MarshalRtnlDump
    links, raw_links = both(MarshalRtnl, rtnl_raw, cloned.links)
    addresses, raw_addresses = both(MarshalRtnl, rtnl_raw, cloned.addresses)
    assert decode_links(links) == decode_links(raw_links)
    assert decode_addresses(addresses) == decode_addresses(raw_addresses)
    assert len(ppp_interfaces(decode_links(raw_links), [], "ppp*", 0.0)) == N
    tunnels, raw_tunnels = both(l2tp_marshal, l2tp_raw, cloned.tunnels)
    sessions, raw_sessions = both(l2tp_marshal, l2tp_raw, cloned.sessions)
    assert decode_tunnels(tunnels) == decode_tunnels(raw_tunnels)
    assert decode_sessions(sessions) == decode_sessions(raw_sessions)
    xfrm_raw = MarshalXfrmDump
    states, raw_states = both(MarshalXfrm, xfrm_raw, cloned.states)
    policies, raw_policies = both(MarshalXfrm, xfrm_raw, cloned.policies)
    assert decode_states(states) == decode_states(raw_states)
    assert len(decode_states(raw_states)) == 2 * N
    assert decode_policies(policies) == decode_policies(raw_policies)


def test_the_bench_runs_and_its_checks_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """The whole benchmark at 3 clients, one scrape: the strongSwan side, the kernel side,
    the join to the IKE SAs; it exits 0 only when every count check passed."""
    assert kernel_scale.main(["--clients", "3", "--scrapes", "1"]) == 0
    table = capsys.readouterr().out
    assert "| netlink | 3 |" in table and "| netlink-trixie | 3 |" in table
    assert "| floor ÷ strongSwan snapshot only |" in table


def test_the_floor_walks_every_message_of_the_scrapes_dumps() -> None:
    """The floor's walk reads each message of the dumps a scrape reads, no fewer (the
    floor would be too low) and no more."""
    rec = Recording.load("netlink")
    cloned = clone(rec, N)
    kernel = RecordedKernel(cloned, rec.l2tp_family)
    expected = sum(len(getattr(cloned, name)) for name in kernel_scale.FLOOR_DUMPS)
    assert expected > 10 * N
    assert kernel_scale.floor_walk(kernel) == expected


def test_the_floor_writes_every_sample() -> None:
    lines = [('a_total{x="1"} ', 1.0), ("b ", 2)]
    assert kernel_scale.floor_write(lines) == len('a_total{x="1"} 1.0\nb 2\n')
