"""Clients behind a NAT router: NAT-T in transport mode, and two devices behind one NAT
address logging in with the same PPP user (NYC Mesh's shared ``nycmesh``).

The guest's NAT router is a network namespace (``nat``) with its WAN at 192.168.77.20
on the server's LAN, a LAN bridge 192.168.88.1/24 and an iptables(-nft) MASQUERADE
rule; clients 2 and 3 sit behind it (192.168.88.12, .13), client 1 on the server's LAN.
One guest per server flavour (module scope); the tests run in file order and share it.

What happens with two L2TP/IPsec devices behind one NAT is a known limit of
transport mode (setup-ipsec-vpn's README says so): both ask for the same selectors
(server UDP/1701 <-> NAT address UDP), so the server's kernel has one policy for both.
The tests pin down what each server really does, so a change shows.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import vmlab_skip_reason
from .guest import Guest, GuestError

pytestmark = pytest.mark.vmlab

NAT_WAN = "192.168.77.20"
CELLS = (("bookworm", "strongswan"), ("trixie", "libreswan"))


@pytest.fixture(scope="module", params=CELLS, ids=[f"{r}-{f}" for r, f in CELLS])
def nat(request: pytest.FixtureRequest) -> Iterator[Guest]:
    release, flavour = request.param
    reason = vmlab_skip_reason(release)
    if reason:
        pytest.skip(reason)
    log_dir = None
    if os.environ.get("VMLAB_LOG_DIR"):
        log_dir = Path(os.environ["VMLAB_LOG_DIR"]) / f"nat-{release}-{flavour}"
        log_dir.mkdir(parents=True, exist_ok=True)
    g = Guest(clients=3, natted=2, release=release, flavour=flavour, log_dir=log_dir)
    with g:
        sys.stderr.write(f"\nvmlab nat {release}/{flavour}: booted in {g.boot_seconds} s\n")
        yield g
        if request.session.testsfailed:
            sys.stderr.write(f"\n--- vmlab nat serial log (tail) ---\n{g.serial_tail(30)}\n")
            for name in ("server/pluto.log", "server/charon.log", "c3/charon.log"):
                with contextlib.suppress(Exception):
                    sys.stderr.write(f"--- {name} (tail) ---\n{g.log(name)[-3000:]}\n")


def esp_states(g: Guest, peer: str) -> list[str]:
    """The kernel's ESP states to or from ``peer``, one text block each."""
    blocks = re.split(r"(?m)^(?=src )", g.sh("ip xfrm state"))
    return [b for b in blocks if b.startswith("src ") and peer in b.splitlines()[0]]


def ping(g: Guest, n: int) -> int:
    return int(g.traffic(n, count=5, size=200)["rc"])


def test_natt_client_connects_in_transport_mode(nat: Guest) -> None:
    """One client behind the NAT: IKE floats to UDP/4500, ESP is UDP-encapsulated in
    transport mode, the server sees the NAT's address everywhere, and the client's
    private address only as its IKE identity."""
    nat.connect(1)
    r = nat.connect(2)
    assert r["ppp"]["peer"] == "192.168.42.1"
    if nat.flavour == "libreswan":
        traffic = nat.sh("ipsec trafficstatus")
        assert re.search(rf"{re.escape(NAT_WAN)}, type=ESP, .* id='192\.168\.88\.12'", traffic)
        shown = nat.sh("ipsec showstates")
        assert re.search(rf"\] {re.escape(NAT_WAN)}:4500 STATE_QUICK_R2 ", shown), shown
    else:
        sas = nat.sh("swanctl --list-sas")
        assert f"remote '192.168.88.12' @ {NAT_WAN}[4500]" in sas, sas
        assert "INSTALLED, TRANSPORT-in-UDP" in sas, sas
    states = esp_states(nat, NAT_WAN)
    assert len(states) == 2, states
    for s in states:
        assert "mode transport" in s, s
        assert "encap type espinudp" in s, s
    tunnels = nat.sh("ip l2tp show tunnel")
    assert f"From 192.168.77.1 to {NAT_WAN}" in tunnels, tunnels
    assert len(nat.status()["server"]["ppp"]) == 2
    assert ping(nat, 2) == 0
    assert ping(nat, 1) == 0


def works(g: Guest, n: int) -> bool:
    """Client n has a ppp session and its pings to the server's end get answers."""
    try:
        return ping(g, n) == 0
    except GuestError:  # no ppp session, or it went away while pinging
        return False


def test_two_clients_behind_one_nat_with_the_same_login(nat: Guest) -> None:
    """The second device behind the same NAT, same PPP user: the two never both work.

    Both ask for the same selectors (server UDP/1701 <-> the NAT's address, UDP), so
    the server has one policy pair for both, and its kernel L2TP tunnels to them have
    the same addresses and ports. What happens then depends on timing (seen in runs):
    strongSwan 5.9.8 installs the second CHILD SA with the first one's reqid and the
    kernel sends to the NAT address with the newest SA, so the first device's
    downstream goes to the second; or the second's connect fails, or its session dies
    a moment later, or neither works. Libreswan 5.2 completed the second's Main Mode
    but gave it no IPsec SA; the first kept working, except once when pluto's own
    Quick Mode on the first device's ISAKMP SA broke it.
    The tested claim: after the dust settles at most one of the two passes traffic,
    two CHILD SAs to one NAT address share a reqid, and the client on the server's LAN
    is untouched."""
    connected, why = True, ""
    try:
        nat.connect(3, timeout=40)
    except GuestError as e:
        connected, why = False, str(e).splitlines()[0][:300]
    if nat.flavour == "strongswan":
        sas = nat.sh("swanctl --list-sas")
        reqids = re.findall(r"l2tp: #\d+, reqid (\d+), INSTALLED, TRANSPORT-in-UDP", sas)
        assert len(set(reqids)) <= 1, sas
    # pppd's LCP echoes (5 s x 3 on the strongSwan flavour) end a session that lost
    # its downstream; give them time.
    time.sleep(20)
    working = [n for n in (2, 3) if works(nat, n)]
    sys.stderr.write(
        f"\nvmlab nat {nat.flavour}: second client connected={connected} {why}; "
        f"working behind the NAT: {working}\n"
    )
    assert len(working) <= 1, working
    assert works(nat, 1)
