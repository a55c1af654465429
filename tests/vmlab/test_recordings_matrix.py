"""The matrix recordings (tests/vmlab/record.py): Libreswan's ``ipsec`` outputs on
Debian 12 and 13, and strongSwan 6's VICI answers and netlink dumps on Debian 13.

No QEMU here. The Libreswan outputs are only loaded and checked for their shape (their
parser is the Libreswan collector's job); the netlink dumps and VICI answers go through
the production decoders, as tests/unit/test_kernel_decode.py does for Debian 12, with
expected values from the recorder's manifests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink import GENL_ID_CTRL, ctrlmsg
from pyroute2.netlink.nlsocket import Marshal
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from exporter.collectors.join import join_sessions
from exporter.kernel.l2tp import decode_sessions, decode_tunnels, l2tp_msg
from exporter.kernel.model import L2tpSnapshot, PppHookRecord, PppInterface, XfrmSnapshot
from exporter.kernel.rtnl import decode_addresses, decode_links, ppp_interfaces
from exporter.kernel.xfrm import MarshalXfrm, decode_policies, decode_states
from exporter.kernel.xfrm_stat import parse_xfrm_stat
from exporter.libreswan.parse import parse_showstates, parse_trafficstatus
from exporter.strongswan.charon_events import decode_event
from exporter.strongswan.fetch import assemble_snapshot
from tests.recordings import RECORDED_NOW, load_answers

from .test_recordings import walk

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LIBRESWAN = FIXTURES / "libreswan"
#: release → (Libreswan version line, the line prefixes its ipsec commands print)
LIBRESWAN_RELEASES = {
    "bookworm": ("Libreswan 4.10", True),
    "trixie": ("Libreswan 5.2", False),
}
CLIENTS = ("192.168.77.11", "192.168.77.12", "192.168.77.13")
SERVER = "192.168.77.1"
BOOTED_AT = RECORDED_NOW - 3600.0
# (netlink dir, VICI scenario) of the strongSwan 6 recording.
TRIXIE_NETLINK = FIXTURES / "netlink-trixie"
TRIXIE_VICI = FIXTURES / "vici-guest" / "trixie-three-clients"

# --- netlink, any flavour ------------------------------------------------------------------


class Dumps:
    """One recorded set of netlink dumps, decoded by the production decoders."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())

    def raw(self, name: str) -> bytes:
        return (self.folder / f"{name}.bin").read_bytes()

    def ppp(self) -> list[PppInterface]:
        links = decode_links(MarshalRtnl().parse(self.raw("rtnl-getlink")))
        addresses = decode_addresses(MarshalRtnl().parse(self.raw("rtnl-getaddr")))
        return ppp_interfaces(links, addresses, "ppp*", BOOTED_AT)

    def l2tp(self) -> L2tpSnapshot:
        ctrl = Marshal()
        ctrl.msg_map[GENL_ID_CTRL] = ctrlmsg
        (answer,) = ctrl.parse(self.raw("genl-ctrl-getfamily-l2tp"))
        marshal = Marshal()
        marshal.msg_map[int(answer.get_attr("CTRL_ATTR_FAMILY_ID"))] = l2tp_msg
        tunnels = decode_tunnels(marshal.parse(self.raw("genl-l2tp-tunnel-get")))
        sessions = decode_sessions(marshal.parse(self.raw("genl-l2tp-session-get")))
        return L2tpSnapshot(tuple(tunnels), tuple(sessions))

    def xfrm(self) -> XfrmSnapshot:
        states = decode_states(MarshalXfrm().parse(self.raw("xfrm-getsa")))
        policies = decode_policies(MarshalXfrm().parse(self.raw("xfrm-getpolicy")))
        return XfrmSnapshot(tuple(states), tuple(policies))


DUMPS = {
    "trixie-strongswan": TRIXIE_NETLINK,
    "bookworm-libreswan": LIBRESWAN / "bookworm" / "netlink",
    "trixie-libreswan": LIBRESWAN / "trixie" / "netlink",
}


@pytest.fixture(params=sorted(DUMPS), scope="module")
def dumps(request: pytest.FixtureRequest) -> Dumps:
    return Dumps(DUMPS[request.param])


def test_netlink_files_are_whole(dumps: Dumps) -> None:
    for entry in dumps.manifest["files"]:
        msgs = walk(dumps.raw(entry["name"]))
        assert len(msgs) == entry["messages"], entry["name"]
        assert all(t != 2 for t, _ in msgs), entry["name"]  # no NLMSG_ERROR
        if entry["dump"]:
            assert msgs[-1][0] == 3 and len(msgs) > 1, entry["name"]  # NLMSG_DONE


def test_ppp_interfaces_decoded(dumps: Dumps) -> None:
    """The production rtnetlink decoders find the server's three ppp interfaces with the
    addresses the recorder saw."""
    got = {(i.name, i.local_address, i.peer_address) for i in dumps.ppp()}
    want = {
        (p["ifname"], p["local"], p["peer"].split("/")[0]) for p in dumps.manifest["server_ppp"]
    }
    assert got == want
    assert len(got) == 3
    assert {i.peer_address for i in dumps.ppp()} == {
        c["ppp"]["local"] for c in dumps.manifest["clients"].values()
    }


def test_l2tp_tunnels_and_sessions_decoded(dumps: Dumps) -> None:
    """One kernel L2TP tunnel per client, each with one user session. (Linux 6.1 also
    lists xl2tpd's session 0 of each tunnel; 6.12 does not.)"""
    snap = dumps.l2tp()
    assert sorted(t.peer_address for t in snap.tunnels) == list(CLIENTS)
    users = [s for s in snap.sessions if s.session_id != 0]
    assert len(users) == 3
    assert {s.tunnel_id for s in users} == {t.tunnel_id for t in snap.tunnels}


def test_xfrm_states_decoded(dumps: Dumps) -> None:
    """Six transport-mode ESP states, two per client; the Libreswan flavour's are
    UDP-encapsulated (setup-ipsec-vpn's encapsulation=yes), the strongSwan one's not."""
    states = dumps.xfrm().states
    assert len(states) == 6
    assert {(s.proto, s.mode) for s in states} == {("esp", "transport")}
    assert {s.src for s in states} | {s.dst for s in states} == {SERVER, *CLIENTS}
    assert all(s.packets > 0 and s.bytes > 0 for s in states)
    encap = {(s.encap_sport, s.encap_dport) for s in states}
    if "libreswan" in str(dumps.folder):
        assert encap == {(4500, 4500)}
    else:
        assert encap == {(None, None)}


def test_xfrm_stat_parsed(dumps: Dumps) -> None:
    stat = parse_xfrm_stat((dumps.folder / "xfrm_stat.txt").read_text())
    assert len(stat) >= 28 and "XfrmInTmplMismatch" in stat


# --- Libreswan's ipsec outputs ----------------------------------------------------------------


def libreswan(release: str) -> tuple[dict[str, Any], dict[str, str]]:
    folder = LIBRESWAN / release
    manifest = json.loads((folder / "manifest.json").read_text())
    files = manifest["files"].items()
    texts = {name: (folder / entry["file"]).read_bytes().decode() for name, entry in files}
    return manifest, texts


@pytest.mark.parametrize("release", sorted(LIBRESWAN_RELEASES))
def test_libreswan_recordings_are_whole(release: str) -> None:
    manifest, texts = libreswan(release)
    version, _ = LIBRESWAN_RELEASES[release]
    assert texts["version"].strip() == version == manifest["libreswan"]
    assert manifest["kernel"].startswith("6.1." if release == "bookworm" else "6.12.")
    for name, entry in manifest["files"].items():
        assert entry["rc"] == 0, name
        assert len(texts[name].encode()) == entry["bytes"], name
        assert "nycmeshnet" not in texts[name], name


@pytest.mark.parametrize("release", sorted(LIBRESWAN_RELEASES))
def test_libreswan_line_prefixes(release: str) -> None:
    """4.x prefixes the whack output lines of trafficstatus (006) and the status
    listings (000); 5.x prints none. globalstatus has none in either."""
    _, texts = libreswan(release)
    _, prefixed = LIBRESWAN_RELEASES[release]
    for name in ("trafficstatus", "briefstatus", "showstates", "status"):
        lines = [ln for ln in texts[name].splitlines() if ln.strip()]
        with_prefix = [ln for ln in lines if re.match(r"\d{3} ", ln)]
        if prefixed:
            assert with_prefix == lines, name
        else:
            assert with_prefix == [], name
    assert not re.search(r"^\d{3} ", texts["globalstatus"], re.M)


def unprefixed(text: str) -> str:
    return re.sub(r"^\d{3} ", "", text, flags=re.M)


@pytest.mark.parametrize("release", sorted(LIBRESWAN_RELEASES))
def test_libreswan_trafficstatus_shape(release: str) -> None:
    """One line per IPsec SA: the connection instance, the client, byte counters and the
    peer's ID; whack --trafficstatus prints the same (recorded a moment later: LCP echoes
    and keepalives may have moved the counters)."""
    _, texts = libreswan(release)

    def uncounted(text: str) -> str:
        return re.sub(r"(in|out)Bytes=\d+", r"\1Bytes=N", text)

    assert uncounted(texts["whack-trafficstatus"]) == uncounted(texts["trafficstatus"])
    rows = re.findall(
        r'^#(\d+): "l2tp-psk"\[(\d+)\] (\S+), type=ESP, add_time=(\d+), '
        r"inBytes=(\d+), outBytes=(\d+), maxBytes=2\^63B, id='([^']*)'$",
        unprefixed(texts["trafficstatus"]),
        re.M,
    )
    assert [r[2] for r in rows] == list(CLIENTS)
    assert [r[6] for r in rows] == list(CLIENTS)  # the peer ID is its address (PSK)
    assert all(int(r[4]) > 0 and int(r[5]) > 0 for r in rows)


@pytest.mark.parametrize("release", sorted(LIBRESWAN_RELEASES))
def test_libreswan_states_shape(release: str) -> None:
    """showstates: per client the ISAKMP SA (MAIN_R3) and IPsec SA (QUICK_R2), at port
    4500 (encapsulated), and a traffic line per IPsec SA; nothing else. briefstatus:
    three lines of totals, nothing per SA."""
    _, texts = libreswan(release)
    states = unprefixed(texts["showstates"])
    for client in CLIENTS:
        assert re.search(rf"\] {re.escape(client)}:4500 STATE_MAIN_R3 ", states)
        assert re.search(rf"\] {re.escape(client)}:4500 STATE_QUICK_R2 ", states)
    assert len(re.findall(r" Traffic: ESPin=\S+ ESPout=\S+", states)) == 3
    assert all(ln.startswith("#") for ln in states.splitlines())
    brief = unprefixed(texts["briefstatus"]).splitlines()
    assert len(brief) == 3
    assert brief[0].startswith("State Information: ")
    assert brief[1].startswith("IKE SAs: total(3),")
    assert brief[2].startswith("IPsec SAs: total(3),")


@pytest.mark.parametrize("release", sorted(LIBRESWAN_RELEASES))
def test_libreswan_globalstatus_shape(release: str) -> None:
    """key=value lines; the state counts agree with the three clients."""
    _, texts = libreswan(release)
    pairs = dict(ln.split("=", 1) for ln in texts["globalstatus"].splitlines() if "=" in ln)
    assert pairs["current.states.ike"] == "3"
    assert pairs["current.states.ipsec"] == "3"
    assert pairs["current.states.enumerate.STATE_MAIN_R3"] == "3"
    assert pairs["current.states.enumerate.STATE_QUICK_R2"] == "3"


@pytest.mark.parametrize("release", sorted(LIBRESWAN_RELEASES))
def test_libreswan_status_lists_both_connections(release: str) -> None:
    _, texts = libreswan(release)
    status = unprefixed(texts["status"])
    assert re.search(r'^"l2tp-psk": 192\.168\.77\.1', status, re.M)
    assert re.search(r'^"xauth-psk": ', status, re.M)


# --- strongSwan 6 (Debian 13): VICI answers through the production snapshot -----------------


def test_strongswan6_version() -> None:
    version = json.loads((TRIXIE_VICI / "version.json").read_text())
    assert version["daemon"] == "charon"
    assert version["version"] == "6.0.1"
    assert version["release"].startswith("6.12.")


def test_strongswan6_snapshot_has_three_transport_sas() -> None:
    snap = assemble_snapshot(load_answers(TRIXIE_VICI), RECORDED_NOW)
    assert sorted(sa.remote_host for sa in snap.ike_sas) == list(CLIENTS)
    assert {sa.state for sa in snap.ike_sas} == {"ESTABLISHED"}
    assert {sa.version for sa in snap.ike_sas} == {"1"}
    children = [c for sa in snap.ike_sas for c in sa.children]
    assert len(children) == 3
    assert {(c.mode, c.state) for c in children} == {("TRANSPORT", "INSTALLED")}


def test_strongswan6_sessions_join() -> None:
    """strongSwan 6's list-sas and Linux 6.12's dumps of one moment: each ppp interface
    joins through its L2TP tunnel's peer to that client's IKE SA."""
    dumps = Dumps(TRIXIE_NETLINK)
    strongswan = assemble_snapshot(load_answers(TRIXIE_VICI), RECORDED_NOW)
    l2tp = dumps.l2tp()
    client_of_inner = {c["ppp"]["local"]: c["ip"] for c in dumps.manifest["clients"].values()}
    hooks = {}
    for iface in dumps.ppp():
        peer = client_of_inner[iface.peer_address]
        (tunnel,) = [t for t in l2tp.tunnels if t.peer_address == peer]
        (session,) = [
            s for s in l2tp.sessions if s.tunnel_id == tunnel.tunnel_id and s.session_id != 0
        ]
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
    sessions = join_sessions(dumps.ppp(), l2tp, hooks, strongswan)
    assert len(sessions) == 3
    sa_of = {sa.remote_host: sa for sa in strongswan.ike_sas}
    for s in sessions:
        client = client_of_inner[s.inner_address]
        assert s.public_address == client
        assert s.ike_uniqueid == sa_of[client].uniqueid
        assert s.conn == "nycmesh-l2tp-psk"


# --- strongSwan 6's events (record.py --scenario events) ----------------------------------

TRIXIE_EVENTS = FIXTURES / "vici-guest" / "trixie-events" / "connect-disconnect-dpd.json"


def test_strongswan6_events_decode() -> None:
    """strongSwan 6.0.1's ike-updown and child-updown events through the production
    decoder: two clients up (IKE SA, then its CHILD SA), a polite hang-up (CHILD SA
    deleted, then the IKE SA while DELETING) and a DPD death (the IKE SA first, its
    CHILD SA after, still INSTALLED)."""
    doc = json.loads(TRIXIE_EVENTS.read_text())
    assert doc["daemons"]["strongswan-charon"].startswith("6.0.1")
    assert doc["kernel"].startswith("6.12.")
    assert doc["list-sas-before"] == []
    decoded = [decode_event(e["event"], e["message"], RECORDED_NOW) for e in doc["events"]]
    seen = []
    for event in decoded:
        assert event is not None
        (sa,) = event.sas  # type: ignore[union-attr]
        assert sa.conn == "nycmesh-l2tp-psk" and sa.version == "1"
        children = [(c.name, c.mode, c.state) for c in sa.children]
        seen.append((type(event).__name__, sa.remote_host, sa.state, children))
    transport = [("l2tp", "TRANSPORT", "INSTALLED")]
    assert seen == [
        ("IkeUp", "192.168.77.11", "ESTABLISHED", []),
        ("ChildUp", "192.168.77.11", "ESTABLISHED", transport),
        ("IkeUp", "192.168.77.12", "ESTABLISHED", []),
        ("ChildUp", "192.168.77.12", "ESTABLISHED", transport),
        ("ChildDown", "192.168.77.11", "ESTABLISHED", [("l2tp", "TRANSPORT", "DELETED")]),
        ("IkeDown", "192.168.77.11", "DELETING", []),
        ("IkeDown", "192.168.77.12", "ESTABLISHED", []),
        ("ChildDown", "192.168.77.12", "ESTABLISHED", transport),
    ]
    # The IKE SA of each client keeps its uniqueid from up to down.
    ids: dict[str, set[str]] = {}
    for event in decoded:
        for sa in event.sas:  # type: ignore[union-attr]
            ids.setdefault(sa.remote_host, set()).add(sa.uniqueid)
    assert all(len(v) == 1 for v in ids.values()), ids


def test_strongswan6_events_have_5_9_keys() -> None:
    """The IKE SA keys of 6.0.1's events are those 5.9's recorded events carry
    (tests/fixtures/vici-events/, host lab), less what that lab's setup adds (NAT,
    XAuth, virtual IPs, rekey times) and the task lists of the moment."""
    doc = json.loads(TRIXIE_EVENTS.read_text())
    old = json.loads((FIXTURES / "vici-events" / "dpd-dead-clients.json").read_text())

    def keys(events: list[dict[str, Any]]) -> set[str]:
        out: set[str] = set()
        for e in events:
            for v in e["message"].values():
                if isinstance(v, dict):
                    out |= {k for k in v if not k.startswith("tasks-")}
        return out

    situational = {"nat-any", "nat-remote", "remote-vips", "remote-xauth-id", "rekey-time"}
    assert keys(doc["events"]) == keys(old["events"]) - situational


# --- Libreswan with one client of each kind (record.py --scenario mixed) ------------------


def mixed(release: str) -> tuple[dict[str, Any], dict[str, str]]:
    folder = LIBRESWAN / release / "mixed"
    manifest = json.loads((folder / "manifest.json").read_text())
    texts = {
        name: (folder / entry["file"]).read_bytes().decode()
        for name, entry in manifest["files"].items()
    }
    return manifest, texts


@pytest.mark.parametrize("release", sorted(LIBRESWAN_RELEASES))
def test_mixed_recordings_are_whole(release: str) -> None:
    manifest, texts = mixed(release)
    version, _ = LIBRESWAN_RELEASES[release]
    assert texts["version"].strip() == version == manifest["libreswan"]
    assert [c["kind"] for _, c in sorted(manifest["clients"].items())] == [
        "strongswan",
        "libreswan",
        "xauth",
    ]
    for name, entry in manifest["files"].items():
        assert entry["rc"] == 0, name
        assert len(texts[name].encode()) == entry["bytes"], name
        assert "nycmeshnet" not in texts[name], name


@pytest.mark.parametrize("release", sorted(LIBRESWAN_RELEASES))
def test_mixed_trafficstatus_xauth_line(release: str) -> None:
    """An XAuth login on xauth-psk: username= comes before type=, lease= last, no id=;
    the two L2TP clients (strongSwan's and NetworkManager-l2tp's) look alike on the
    server, each with its address as its ID."""
    manifest, texts = mixed(release)
    lease = manifest["clients"]["3"]["lease"]
    rows = unprefixed(texts["trafficstatus"]).splitlines()
    assert len(rows) == 3, rows
    l2tp = [
        re.fullmatch(
            r'#\d+: "l2tp-psk"\[\d+\] (\S+), type=ESP, add_time=\d+, inBytes=\d+, '
            r"outBytes=\d+, maxBytes=2\^63B, id='([^']*)'",
            row,
        )
        for row in rows[:2]
    ]
    assert [(m[1], m[2]) for m in l2tp if m] == [(c, c) for c in CLIENTS[:2]], rows
    xauth = re.fullmatch(
        r'#\d+: "xauth-psk"\[\d+\] (\S+), username=(\S+), type=ESP, add_time=\d+, '
        r"inBytes=(\d+), outBytes=\d+, maxBytes=2\^63B, lease=(\S+)",
        rows[2],
    )
    assert xauth, rows[2]
    assert xauth[1] == CLIENTS[2] and xauth[2] == "nycmesh" and xauth[4] == f"{lease}/32"
    assert int(xauth[3]) > 0  # its pings from the lease went in


@pytest.mark.parametrize("release", sorted(LIBRESWAN_RELEASES))
def test_mixed_states_and_the_nm_client_side(release: str) -> None:
    """showstates: the XAuth client's IPsec SA is a tunnel (tun. SPIs) and its traffic
    line ends with the user; the NetworkManager-l2tp client's own pluto shows the
    initiator's states (MAIN_I4, QUICK_I2) under NM's UUID-named connection."""
    _, texts = mixed(release)
    states = unprefixed(texts["showstates"])
    (traffic,) = [ln for ln in states.splitlines() if '"xauth-psk"' in ln and "Traffic:" in ln]
    assert "tun.0@" in traffic and traffic.rstrip().endswith("username=nycmesh"), traffic
    client = unprefixed(texts["client-showstates"])
    conn = r'"5e1f0c2a-7a3b-4c55-9d7e-6b2f1d0a9c42"'
    assert re.search(rf"^#\d+: {conn}:4500 STATE_MAIN_I4 ", client, re.M), client
    assert re.search(rf"^#\d+: {conn}:4500 STATE_QUICK_I2 ", client, re.M), client
    mine = unprefixed(texts["client-trafficstatus"])
    assert re.fullmatch(rf"#\d+: {conn}, type=ESP, .*, id='192\.168\.77\.1'\n", mine), mine


@pytest.mark.parametrize("release", sorted(LIBRESWAN_RELEASES))
def test_mixed_through_the_libreswan_parser(release: str) -> None:
    """The mixed recordings through exporter/libreswan/parse.py: the XAuth SA's user and
    lease, the L2TP clients' identities, every line read (none skipped), on the server
    and on the NetworkManager-l2tp client's side."""
    manifest, texts = mixed(release)
    traffic = parse_trafficstatus(texts["trafficstatus"])
    assert traffic.skipped == 0
    got = {sa.peer: (sa.connection, sa.username, sa.identity, sa.lease) for sa in traffic.sas}
    lease = manifest["clients"]["3"]["lease"]
    assert got == {
        CLIENTS[0]: ("l2tp-psk", None, CLIENTS[0], None),
        CLIENTS[1]: ("l2tp-psk", None, CLIENTS[1], None),
        CLIENTS[2]: ("xauth-psk", "nycmesh", None, lease),
    }
    states = parse_showstates(texts["showstates"])
    assert states.skipped == 0
    assert {sa.peer for sa in states.ike_sas} == set(CLIENTS)
    client = parse_trafficstatus(texts["client-trafficstatus"])
    assert client.skipped == 0 and len(client.sas) == 1
    (sa,) = client.sas
    assert sa.connection == "5e1f0c2a-7a3b-4c55-9d7e-6b2f1d0a9c42" and sa.identity == SERVER
    assert parse_showstates(texts["client-showstates"]).skipped == 0
