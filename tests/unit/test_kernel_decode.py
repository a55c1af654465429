"""Kernel collectors on the REAL netlink bytes recorded in the vmlab guest.

Every test here feeds the recorded bytes of tests/fixtures/netlink/ through pyroute2's
marshal classes, exactly the ones the live sockets use (`MarshalRtnl` for
AsyncIPRoute, a generic-netlink `Marshal` with the family id bound to `l2tp_msg` as
`L2tpSocket.bind()` does, `MarshalXfrm` for `AsyncXfrmSocket`), and then through the
production decoders; expected values come from the recorder's manifest (`ip` views,
what was up), not from the decoder. Golden files: tests/golden/kernel-*.prom, rewritten
with `UPDATE_GOLDEN=1 pytest tests/unit/test_kernel_decode.py`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from pyroute2.netlink import GENL_ID_CTRL, ctrlmsg
from pyroute2.netlink.nlsocket import Marshal
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from exporter.collectors.join import join_sessions
from exporter.collectors.l2tp import render_l2tp
from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.ppp import render_ppp
from exporter.collectors.sessions import render_sessions
from exporter.collectors.xfrm import render_xfrm, render_xfrm_stat
from exporter.kernel.l2tp import decode_sessions, decode_tunnels, l2tp_msg
from exporter.kernel.model import L2tpSnapshot, PppHookRecord, XfrmSnapshot
from exporter.kernel.rtnl import decode_addresses, decode_links, ppp_interfaces
from exporter.kernel.xfrm import MarshalXfrm, decode_policies, decode_states
from exporter.kernel.xfrm_stat import parse_xfrm_stat
from exporter.strongswan.fetch import assemble_snapshot
from tests.recordings import RECORDED_NOW, load_answers
from tests.reference import Families

NETLINK = Path(__file__).parent.parent / "fixtures" / "netlink"
VICI_GUEST = Path(__file__).parent.parent / "fixtures" / "vici-guest" / "three-clients"
GOLDEN = Path(__file__).parent.parent / "golden"
MANIFEST = json.loads((NETLINK / "manifest.json").read_text())
#: The guest's boot, on the epoch clock, for up-since stamps: fixed so goldens are stable.
BOOTED_AT = RECORDED_NOW - 3600.0


def raw(name: str) -> bytes:
    return (NETLINK / f"{name}.bin").read_bytes()


def l2tp_family_id() -> int:
    marshal = Marshal()
    marshal.msg_map[GENL_ID_CTRL] = ctrlmsg
    (answer,) = marshal.parse(raw("genl-ctrl-getfamily-l2tp"))
    return int(answer.get_attr("CTRL_ATTR_FAMILY_ID"))


def l2tp_marshal() -> Marshal:
    # What AsyncGenericNetlinkSocket.bind() leaves behind for the resolved family.
    marshal = Marshal()
    marshal.msg_map[l2tp_family_id()] = l2tp_msg
    return marshal


def ppp_fixture() -> list[Any]:
    links = decode_links(MarshalRtnl().parse(raw("rtnl-getlink")))
    addresses = decode_addresses(MarshalRtnl().parse(raw("rtnl-getaddr")))
    return ppp_interfaces(links, addresses, "ppp*", BOOTED_AT)


def l2tp_fixture() -> L2tpSnapshot:
    tunnels = decode_tunnels(l2tp_marshal().parse(raw("genl-l2tp-tunnel-get")))
    sessions = decode_sessions(l2tp_marshal().parse(raw("genl-l2tp-session-get")))
    return L2tpSnapshot(tuple(tunnels), tuple(sessions))


def xfrm_fixture() -> XfrmSnapshot:
    states = decode_states(MarshalXfrm().parse(raw("xfrm-getsa")))
    policies = decode_policies(MarshalXfrm().parse(raw("xfrm-getpolicy")))
    return XfrmSnapshot(tuple(states), tuple(policies))


def exposition(families: list[Any]) -> str:
    return generate_latest(Families(families)).decode()


def check_golden(name: str, text: str) -> None:
    golden = GOLDEN / f"kernel-{name}.prom"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text()


# -- rtnetlink ----------------------------------------------------------------------------


def test_ppp_interfaces_decoded_from_recorded_link_and_address_dumps() -> None:
    """Real RTM_GETLINK/RTM_GETADDR bytes → the server's three ppp interfaces, with the
    addresses the recorder saw (manifest `server_ppp`)."""
    got = {i.name: (i.local_address, i.peer_address) for i in ppp_fixture()}
    want = {p["ifname"]: (p["local"], p["peer"]) for p in MANIFEST["server_ppp"]}
    assert got == want


def test_ppp_counters_are_the_kernels_64bit_stats() -> None:
    """Real link dump bytes: traffic the recorder sent through each ppp shows in its
    counters (at least pings x IP bytes each way), and the up-since stamps are in
    connection order."""
    by_name = {i.name: i for i in ppp_fixture()}
    for t in MANIFEST["traffic"]:
        stats = by_name[t["server_ifname"]].stats
        assert stats.rx_bytes >= t["pings"] * t["ip_bytes_each"]
        assert stats.tx_bytes >= t["pings"] * t["ip_bytes_each"]
        assert stats.rx_packets >= t["pings"]
    stamps = [by_name[n].up_since for n in ("ppp0", "ppp1", "ppp2")]
    assert all(s is not None and s > BOOTED_AT for s in stamps)
    assert stamps == sorted(stamps)


def test_ppp_pattern_selects_interfaces() -> None:
    """Real link dump bytes: the name pattern applies, and non-ppp links never match."""
    links = decode_links(MarshalRtnl().parse(raw("rtnl-getlink")))
    addresses = decode_addresses(MarshalRtnl().parse(raw("rtnl-getaddr")))
    assert [i.name for i in ppp_interfaces(links, addresses, "ppp1", 0.0)] == ["ppp1"]
    assert ppp_interfaces(links, addresses, "*", 0.0) == ppp_interfaces(
        links, addresses, "ppp*", 0.0
    )


# -- L2TP generic netlink -----------------------------------------------------------------


def _ip_l2tp_tunnels() -> dict[int, tuple[str, str, int]]:
    out = {}
    text = MANIFEST["context"]["l2tp_tunnels"]
    for m in re.finditer(
        r"Tunnel (\d+), encap (\w+)\n\s+From (\S+) to (\S+)\n\s+Peer tunnel (\d+)", text
    ):
        out[int(m.group(1))] = (m.group(3), m.group(4), int(m.group(5)))
    return out


def test_l2tp_family_id_resolved_from_recorded_ctrl_answer() -> None:
    """Real CTRL_CMD_GETFAMILY answer bytes → the family id the dumps were sent to."""
    (ctrl,) = [f for f in MANIFEST["files"] if f["name"] == "genl-ctrl-getfamily-l2tp"]
    assert l2tp_family_id() == ctrl["l2tp_family_id"]


def test_l2tp_tunnels_decoded_from_recorded_dump() -> None:
    """Real L2TP_CMD_TUNNEL_GET bytes → the tunnels `ip l2tp show tunnel` listed."""
    snap = l2tp_fixture()
    got = {t.tunnel_id: (t.local_address, t.peer_address, t.peer_tunnel_id) for t in snap.tunnels}
    assert got == _ip_l2tp_tunnels()
    assert {t.peer_address for t in snap.tunnels} == {c["ip"] for c in MANIFEST["clients"].values()}
    for t in snap.tunnels:
        assert (t.encap, t.local_port, t.peer_port) == ("udp", 1701, 1701)
        assert t.stats.rx_packets > 0 and t.stats.tx_bytes > 0


def test_l2tp_sessions_decoded_from_recorded_dump() -> None:
    """Real L2TP_CMD_SESSION_GET bytes → one call per tunnel (session 0, xl2tpd's
    tunnel socket, left out), ids as `ip l2tp show session` listed them."""
    snap = l2tp_fixture()
    listed = re.findall(
        r"Session (\d+) in tunnel (\d+)\n\s+Peer session (\d+)",
        MANIFEST["context"]["l2tp_sessions"],
    )
    want = {(int(t), int(s), int(p)) for s, t, p in listed if s != "0"}
    assert {(s.tunnel_id, s.session_id, s.peer_session_id) for s in snap.sessions} == want
    assert {s.tunnel_id for s in snap.sessions} == {t.tunnel_id for t in snap.tunnels}


# -- XFRM ---------------------------------------------------------------------------------


def _ip_xfrm_states() -> set[tuple[str, str, str, str, int]]:
    text = MANIFEST["context"]["xfrm_state"]
    return {
        (m.group(1), m.group(2), m.group(3), m.group(5), int(m.group(4)))
        for m in re.finditer(
            r"src (\S+) dst (\S+)\n\s+proto esp spi (0x[0-9a-f]+) reqid (\d+) mode (\w+)", text
        )
    }


def test_xfrm_states_decoded_from_recorded_dump() -> None:
    """Real XFRM_MSG_GETSA bytes through the XFRM message classes defined here →
    the six transport-mode ESP SAs `ip xfrm state` listed (src, dst, spi, mode, reqid)."""
    snap = xfrm_fixture()
    got = {(s.src, s.dst, s.spi_hex, s.mode, s.reqid) for s in snap.states}
    assert got == _ip_xfrm_states()
    assert len(snap.states) == 6
    for s in snap.states:
        assert s.proto == "esp" and s.packets > 0 and s.bytes > 0
        assert (s.replay_errors, s.integrity_errors) == (0, 0)


def test_xfrm_policies_decoded_from_recorded_dump() -> None:
    """Real XFRM_MSG_GETPOLICY bytes → directions and priorities as `ip xfrm policy`."""
    snap = xfrm_fixture()
    text = MANIFEST["context"]["xfrm_policy"]
    want = [
        ("socket_" + d if kind == "socket" else d, int(p))
        for kind, d, p in re.findall(r"\t(dir|socket) (\w+) priority (\d+)", text)
    ]
    assert [(p.direction, p.priority) for p in snap.policies] == want


def test_xfrm_stat_parsed_from_recorded_file() -> None:
    """The recorded /proc/net/xfrm_stat: every kernel counter, by its own name."""
    stat = parse_xfrm_stat((NETLINK / "xfrm_stat.txt").read_text())
    assert len(stat) >= 28 and "XfrmInTmplMismatch" in stat


# -- the join -----------------------------------------------------------------------------


def _hooks_from_recording() -> dict[str, PppHookRecord]:
    """What the hook writes on the server for each session of the recording.

    The recording has no /proc/net/pppol2tp (see docs/kernel.md), so the interface ↔
    tunnel link comes, as in production without that file, from the hook: the L2TP ids
    pppd was started with. They are taken from the recorded tunnel dump (the tunnel
    whose peer is the client whose ppp got that interface's peer address).
    """
    snap = l2tp_fixture()
    client_of_inner = {c["ppp"]["local"]: c["ip"] for c in MANIFEST["clients"].values()}
    hooks = {}
    for iface in ppp_fixture():
        peer = client_of_inner[iface.peer_address]
        (tunnel,) = [t for t in snap.tunnels if t.peer_address == peer]
        (session,) = [s for s in snap.sessions if s.tunnel_id == tunnel.tunnel_id]
        hooks[iface.name] = PppHookRecord(
            interface=iface.name,
            ifindex=iface.index,
            peer_name="nycmesh",
            local_address=iface.local_address,
            peer_address=iface.peer_address,
            ipparam="",
            pppd_pid=None,
            up_since=None,
            l2tp_tunnel_id=tunnel.tunnel_id,
            l2tp_session_id=session.session_id,
        )
    return hooks


def test_sessions_join_each_interface_to_its_clients_ike_sa() -> None:
    """Real rtnetlink, L2TP and VICI recordings of one moment: each ppp interface is
    joined through its L2TP tunnel's peer to the IKE SA of that client."""
    strongswan = assemble_snapshot(load_answers(VICI_GUEST), RECORDED_NOW)
    sessions = join_sessions(ppp_fixture(), l2tp_fixture(), _hooks_from_recording(), strongswan)
    assert len(sessions) == 3
    sa_of = {sa.remote_host: sa for sa in strongswan.ike_sas}
    client_of_inner = {c["ppp"]["local"]: c["ip"] for c in MANIFEST["clients"].values()}
    for s in sessions:
        client = client_of_inner[s.inner_address]
        assert s.public_address == client
        assert s.ike_uniqueid == sa_of[client].uniqueid
        assert (s.user, s.ppp_user, s.ike_user) == ("nycmesh", "nycmesh", sa_of[client].user)
        assert s.conn == "nycmesh-l2tp-psk"
        assert s.started_at is not None


def test_stale_hook_record_is_ignored() -> None:
    """Real ppp interfaces with a hook record of an earlier interface index (pppd killed,
    no ip-down, name reused): the record is not applied."""
    hooks = _hooks_from_recording()
    old = hooks["ppp0"]
    assert old.ifindex is not None
    hooks["ppp0"] = dataclasses.replace(old, ifindex=old.ifindex + 100)
    sessions = {s.interface: s for s in join_sessions(ppp_fixture(), l2tp_fixture(), hooks, None)}
    assert sessions["ppp0"].ppp_user == "" and sessions["ppp0"].public_address == ""
    assert sessions["ppp1"].ppp_user == "nycmesh"


# -- golden exposition --------------------------------------------------------------------


def test_golden_ppp() -> None:
    """Real link/address dump bytes → the exact ppp exposition."""
    check_golden("ppp", exposition(render_ppp(ppp_fixture(), SeriesLimiter(100))))


def test_golden_l2tp() -> None:
    """Real L2TP genl dump bytes → the exact l2tp exposition."""
    check_golden("l2tp", exposition(render_l2tp(l2tp_fixture(), SeriesLimiter(100))))


def test_ppp_and_l2tp_series_are_bounded() -> None:
    """The series limit bounds the per-interface, per-tunnel and per-session families too
    (3 recorded ppp interfaces and L2TP sessions, limit 2)."""
    limiter = SeriesLimiter(2)
    ppp = {f.name: f for f in render_ppp(ppp_fixture(), limiter)}
    l2tp = {f.name: f for f in render_l2tp(l2tp_fixture(), limiter)}
    assert ppp["ppp_interfaces"].samples[0].value == 3  # the count is not cut
    assert len(ppp["ppp_interface_info"].samples) == 2
    assert len(ppp["ppp_interface_receive_bytes"].samples) == 2
    assert len(l2tp["l2tp_session_info"].samples) == 2
    assert len(l2tp["l2tp_session_transmit_packets"].samples) == 2
    assert limiter.dropped["ppp_interface_info"] == 1
    assert limiter.dropped["l2tp_session_info"] == 1


def test_golden_xfrm() -> None:
    """Real XFRM dump bytes and xfrm_stat → the exact xfrm exposition; series limit 4
    so the bound shows (two SAs left out)."""
    limiter = SeriesLimiter(4)
    stat = parse_xfrm_stat((NETLINK / "xfrm_stat.txt").read_text())
    families = [*render_xfrm(xfrm_fixture(), limiter), render_xfrm_stat(stat)]
    check_golden("xfrm", exposition(families))
    assert limiter.dropped == {"xfrm_state_info": 2}


def test_golden_sessions() -> None:
    """Real rtnetlink, L2TP and VICI recordings (hook records as above) → the exact
    sessions exposition."""
    strongswan = assemble_snapshot(load_answers(VICI_GUEST), RECORDED_NOW)
    sessions = join_sessions(ppp_fixture(), l2tp_fixture(), _hooks_from_recording(), strongswan)
    check_golden("sessions", exposition(render_sessions(sessions, SeriesLimiter(1000))))


@pytest.mark.parametrize("name", ["ppp", "l2tp", "xfrm", "sessions"])
def test_golden_files_pass_promtool(name: str) -> None:
    """promtool check metrics on each golden file (skips without promtool)."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    text = (GOLDEN / f"kernel-{name}.prom").read_text()
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
