"""The kernel collectors in the genuine stack: three real clients, scraped from the host.

One guest per module (conftest's `guest`). The shipped pppd hook is installed in the
guest before anyone connects; the exporter runs as `python3 -m exporter` with every
collector on the forwarded exporter port.
Tests run in file order and share the guest: the last one kills a client.
"""

from __future__ import annotations

import errno
import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .guest import Guest
from .scraped import eventually

pytestmark = pytest.mark.vmlab

CLIENTS = (1, 2, 3)
CONN = "nycmesh-l2tp-psk"
# Kernel 6.12 in .ci/run (for the 45-minute budget); kernel 6.1 runs live there in
# test_guest_stack.py, and its recorded dumps go through these decoders in
# test_recordings_matrix.py; this module on 6.1 is VMLAB_MATRIX=full's.
CI_RELEASES = ("trixie",)
HOOK = "/mnt/src/contrib/ppp/ip-{}.d/l2tp-ipsec-exporter"


Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    found = [
        v for lab, v in samples.get(name, []) if all(lab.get(k) == w for k, w in labels.items())
    ]
    assert len(found) <= 1, f"{name}{labels}: {found}"
    return found[0] if found else None


def sessions(samples: Samples) -> dict[str, dict[str, str]]:
    """interface → the labels of its l2tp_ipsec_session_info series."""
    return {lab["interface"]: lab for lab, _ in samples.get("l2tp_ipsec_session_info", [])}


def ike_sas(g: Guest) -> dict[str, str]:
    """remote host → IKE SA uniqueid, from `swanctl --list-sas` (charon's own view)."""
    text = g.sh("swanctl --list-sas")
    return {
        host: uid
        for uid, host in re.findall(
            rf"^{CONN}: #(\d+), ESTABLISHED.*?\n\s+remote\s+'[^']*' @ (\S+?)\[", text, re.M | re.S
        )
    }


def client_of_inner(g: Guest) -> dict[str, str]:
    """A client's ppp address (the server's peer address) → the client's public address."""
    st = g.status()
    return {
        c["ppp"]["local"]: c["ip"]
        for c in st["clients"].values()
        if isinstance(c, dict) and c.get("ppp")
    }


class Kernel:
    def __init__(self, g: Guest) -> None:
        self.g = g

    def scrape(self) -> Samples:
        return parse(self.g.scrape())


@pytest.fixture(scope="module")
def kernel(guest: Guest) -> Kernel:
    """Hook installed, three clients connected, the kernel collectors answering."""
    guest.sh(
        f"install -m 755 {HOOK.format('up')} /etc/ppp/ip-up.d/ && "
        f"install -m 755 {HOOK.format('down')} /etc/ppp/ip-down.d/"
    )
    for n in CLIENTS:
        guest.connect(n)
    # The real daemon with every collector; a 1 s refresh so the join sees new SAs soon.
    guest.start_exporter(
        extra=["--collector.strongswan.sa-details", "--collector.strongswan.refresh-interval", "1"]
    )
    k = Kernel(guest)

    def answering() -> bool:
        try:
            guest.scrape()
        except OSError:
            return False
        return True

    eventually(answering, 120, "exporter answering", step=1.0)
    return k


def test_three_sessions_joined_to_the_right_user_and_sa(kernel: Kernel) -> None:
    g = kernel.g
    want_sa = ike_sas(g)
    inner_to_client = client_of_inner(g)
    assert len(want_sa) == 3 and len(inner_to_client) == 3

    def joined() -> Samples | None:
        s = kernel.scrape()
        info = sessions(s)
        ok = len(info) == 3 and all(lab["ike_uniqueid"] for lab in info.values())
        return s if ok and value(s, "l2tp_ipsec_sessions") == 3 else None

    s = eventually(joined, 60, "three joined sessions")
    for iface, lab in sessions(s).items():
        client = inner_to_client[lab["inner_address"]]
        assert lab["public_address"] == client, lab
        assert lab["ike_uniqueid"] == want_sa[client], lab
        assert lab["ike_user"] == client  # IKEv1 PSK: the remote identity is its address
        assert lab["ppp_user"] == "nycmesh" == lab["user"], lab  # from the pppd hook
        assert lab["conn"] == CONN
        assert value(s, "l2tp_ipsec_session_start_timestamp_seconds", interface=iface)
    # The layers agree with each other.
    assert value(s, "ppp_interfaces") == 3
    assert value(s, "l2tp_available") == 1
    assert value(s, "l2tp_tunnels") == 3 and value(s, "l2tp_sessions") == 3
    assert {lab["interface"] for lab, _ in s["l2tp_session_info"]} == set(sessions(s))
    assert value(s, "xfrm_states", proto="esp", mode="transport") == 6
    assert len(s["xfrm_state_info"]) == 6
    for name in ("ppp", "l2tp", "xfrm", "sessions"):
        assert value(s, "l2tp_ipsec_exporter_collector_success", collector=name) == 1


# Run as nobody with no capabilities: each of the collectors' kernel requests
# (tests/vmlab/guest/nldump.py builds them byte for byte) and the two /proc files.
UNPRIVILEGED = """
import errno, json, struct, sys
sys.path.insert(0, "/mnt/src/tests/vmlab/guest")
import nldump
out = {}
for rec in nldump.netlink_dumps_each():
    out[rec["name"]] = rec
for path in ("/proc/net/pppol2tp", "/proc/net/xfrm_stat"):
    try:
        out[path] = {"lines": len(open(path).read().splitlines())}
    except OSError as e:
        out[path] = {"errno": e.errno}
print(json.dumps(out))
"""


def test_privileges_without_cap_net_admin(kernel: Kernel) -> None:
    """docs/kernel.md, Privileges, on this kernel: without CAP_NET_ADMIN the rtnetlink
    dumps, the L2TP family lookup and /proc/net/{pppol2tp,xfrm_stat} still answer, while
    the L2TP generic netlink dumps and the NETLINK_XFRM dumps are refused with EPERM."""
    r = kernel.g.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "python3",
            "-c",
            UNPRIVILEGED,
        ]
    )
    got = json.loads(r["stdout"])
    eperm = -errno.EPERM
    for name in ("rtnl-getlink", "rtnl-getaddr"):  # dumps: several messages, then DONE
        assert got[name]["error"] is None and got[name]["messages"] > 1, got[name]
    family = got["genl-ctrl-getfamily-l2tp"]  # one answer: the family, no error
    assert family["error"] is None and family["messages"] == 1, family
    for name in ("xfrm-getsa", "xfrm-getpolicy", "genl-l2tp-tunnel-get", "genl-l2tp-session-get"):
        assert got[name]["error"] == eperm, got[name]
    assert got["/proc/net/pppol2tp"]["lines"] > 3, got  # header + three sessions
    assert got["/proc/net/xfrm_stat"]["lines"] > 20, got


def test_traffic_through_one_ppp_shows_on_its_series(kernel: Kernel) -> None:
    g = kernel.g
    client_ip = g.status()["clients"]["2"]["ip"]
    before = kernel.scrape()
    (iface,) = [i for i, lab in sessions(before).items() if lab["public_address"] == client_ip]
    others = [i for i in sessions(before) if i != iface]
    (session,) = [lab for lab, _ in before["l2tp_session_info"] if lab["interface"] == iface]
    sa_in = [lab["spi"] for lab, _ in before["xfrm_state_info"] if lab["src"] == client_ip]
    count, size = 30, 1000
    sent = g.traffic(2, count=count, size=size)
    ip_bytes = count * sent.get("ip_bytes_per_packet", size + 28)
    after = kernel.scrape()

    def delta(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    rx = delta("ppp_interface_receive_bytes_total", interface=iface)
    assert ip_bytes <= rx < ip_bytes + 2000, (rx, ip_bytes)  # + LCP echoes at most
    assert delta("ppp_interface_transmit_bytes_total", interface=iface) >= ip_bytes
    assert delta("ppp_interface_receive_packets_total", interface=iface) >= count
    for other in others:
        assert delta("ppp_interface_receive_bytes_total", interface=other) < 1000
    ids = {"tunnel_id": session["tunnel_id"], "session_id": session["session_id"]}
    assert delta("l2tp_session_receive_bytes_total", **ids) >= ip_bytes
    assert delta("l2tp_tunnel_receive_bytes_total", tunnel_id=session["tunnel_id"]) >= ip_bytes
    (spi,) = sa_in
    # ESP carries the L2TP/PPP frames: at least the IP bytes, plus headers.
    assert delta("xfrm_state_bytes_total", spi=spi, dst="192.168.77.1") >= ip_bytes


def test_killed_client_session_disappears_and_counters_stay_consistent(kernel: Kernel) -> None:
    g = kernel.g
    victim = g.status()["clients"]["3"]["ip"]
    before = kernel.scrape()
    survivors = {i: lab for i, lab in sessions(before).items() if lab["public_address"] != victim}
    assert len(survivors) == 2
    g.kill(3)

    def gone() -> Samples | None:
        s = kernel.scrape()
        publics = {lab["public_address"] for lab in sessions(s).values()}
        return s if victim not in publics and value(s, "l2tp_ipsec_sessions") == 2 else None

    s = eventually(gone, 90, "the killed client's session gone", step=2.0)
    assert sessions(s) == survivors  # the other two untouched: same interface, user, SA
    assert value(s, "ppp_interfaces") == 2
    assert {lab["interface"] for lab, _ in s["ppp_interface_info"]} == set(survivors)
    assert {lab["interface"] for lab, _ in s["l2tp_session_info"]} == set(survivors)
    assert value(s, "l2tp_sessions") == 2
    for iface in survivors:
        for name in ("ppp_interface_receive_bytes_total", "ppp_interface_transmit_bytes_total"):
            assert (value(s, name, interface=iface) or 0) >= (
                value(before, name, interface=iface) or 0
            )
    # Its ESP SAs go once charon's DPD has declared the client dead.
    eventually(
        lambda: value(kernel.scrape(), "xfrm_states", proto="esp", mode="transport") == 4,
        60,
        "the killed client's SAs removed",
        step=2.0,
    )
    assert not [
        lab for lab, _ in kernel.scrape()["xfrm_state_info"] if victim in (lab["src"], lab["dst"])
    ]
