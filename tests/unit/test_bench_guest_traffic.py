"""The pure parts of bench/guest_traffic.py, so the guest bench cannot rot unseen: its
reading of `ip -s xfrm state`, the XFRM states it adds, and its staleness verdict."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("guest_traffic", ROOT / "bench/guest_traffic.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["guest_traffic"] = module
    spec.loader.exec_module(module)
    return module


gt = _load()

# `ip -s xfrm state` of iproute2 6.1 in the guest (bookworm), one client's pair, keys cut.
IP_S_XFRM = """\
src 192.168.77.1 dst 192.168.77.11
\tproto esp spi 0xc5d1a2b3(3318850227) reqid 1(0x00000001) mode transport
\treplay-window 0 seq 0x00000000 flag af-unspec (0x00100000)
\tauth-trunc hmac(sha256) 0x00 (256 bits) 128
\tenc cbc(aes) 0x00 (256 bits)
\tanti-replay context: seq 0x0, oseq 0x1b, bitmap 0x00000000
\tsel src 192.168.77.1/32 dst 192.168.77.11/32 proto udp sport 1701
\tlifetime config:
\t  limit: soft (INF)(bytes), hard (INF)(bytes)
\t  limit: soft (INF)(packets), hard (INF)(packets)
\t  expire add: soft 0(sec), hard 0(sec)
\t  expire use: soft 0(sec), hard 0(sec)
\tlifetime current:
\t  23456(bytes), 27(packets)
\t  add 2026-12-03 10:00:00 use 2026-12-03 10:00:01
\tstats:
\t  replay-window 0 replay 0 failed 0
src 192.168.77.11 dst 192.168.77.1
\tproto esp spi 0xcf000001(3472883713) reqid 1(0x00000001) mode transport
\treplay-window 32 seq 0x00000000 flag af-unspec (0x00100000)
\tsel src 192.168.77.11/32 dst 192.168.77.1/32 proto udp dport 1701
\tlifetime current:
\t  22831(bytes), 26(packets)
\t  add 2026-12-03 10:00:00 use 2026-12-03 10:00:01
"""

SCRAPE = """\
strongswan_ike_sa_info{conn="c",uniqueid="7",remote_host="192.168.77.11",user="u"} 1.0
strongswan_child_sa_current_bytes{uniqueid="9",ike_uniqueid="7",direction="in"} 22831.0
strongswan_child_sa_current_bytes{uniqueid="9",ike_uniqueid="7",direction="out"} 23456.0
strongswan_child_sa_current_packets{uniqueid="9",ike_uniqueid="7",direction="in"} 26.0
strongswan_child_sa_current_packets{uniqueid="9",ike_uniqueid="7",direction="out"} 27.0
"""


def test_parse_reads_each_state_with_its_current_counts() -> None:
    states = gt.parse_xfrm(IP_S_XFRM)
    assert [(s.src, s.dst, s.spi, s.reqid, s.bytes, s.packets) for s in states] == [
        ("192.168.77.1", "192.168.77.11", 0xC5D1A2B3, 1, 23456, 27),
        ("192.168.77.11", "192.168.77.1", 0xCF000001, 1, 22831, 26),
    ]
    assert {s.proto for s in states} == {"esp"} and {s.mode for s in states} == {"transport"}
    assert gt.parse_xfrm("") == []


def test_parse_refuses_a_state_without_counts() -> None:
    with pytest.raises(ValueError):
        gt.parse_xfrm(IP_S_XFRM.replace("lifetime current", "lifetime now"))


def test_state_batch_adds_charon_like_pairs_with_distinct_spis() -> None:
    lines = gt.state_batch(600).splitlines()
    assert len(lines) == 1200
    assert all(line.startswith("xfrm state add src ") for line in lines)
    spis = [line.split(" spi ")[1].split()[0] for line in lines]
    assert len(set(spis)) == 1200
    # No SPI in charon's range, no peer that is a guest address or a network address.
    assert all(int(s, 16) < 0xC0000000 for s in spis)
    peers = {gt.peer_address(i) for i in range(5000)}
    assert len(peers) == 5000
    assert not any(p.startswith("192.168.") or p.endswith((".0", ".255")) for p in peers)
    # One reqid per pair; inbound peer -> server, outbound server -> peer, transport ESP.
    inbound, outbound = lines[2 * 300], lines[2 * 300 + 1]
    assert f"src {gt.peer_address(300)} dst {gt.SERVER_IP} " in inbound
    assert f"src {gt.SERVER_IP} dst {gt.peer_address(300)} " in outbound
    for line in (inbound, outbound):
        assert f"reqid {gt.EXTRA_REQID_BASE + 300} mode transport" in line
        assert "proto esp" in line
    assert gt.extra_spis(300) == (int(spis[600], 16), int(spis[601], 16))
    # A later batch continues where the first stopped.
    assert gt.state_batch(1, start=600).splitlines()[0].split(" spi ")[1].split()[0] == (
        f"0x{gt.extra_spis(600)[0]:08x}"
    )


def test_staleness_is_empty_only_when_the_scrape_has_the_kernels_counts() -> None:
    kernel = {s.spi: s for s in gt.parse_xfrm(IP_S_XFRM)}
    assert gt.staleness(SCRAPE, kernel, ["192.168.77.11"]) == []
    behind = SCRAPE.replace("22831.0", "21803.0")
    (wrong,) = gt.staleness(behind, kernel, ["192.168.77.11"])
    assert (wrong.direction, wrong.what, wrong.kernel, wrong.scraped) == (
        "in",
        "bytes",
        22831,
        21803.0,
    )
    # A client missing from the scrape is four mismatches, not a pass.
    assert len(gt.staleness(SCRAPE, kernel, ["192.168.77.11", "192.168.77.12"])) == 4


def test_of_hosts_keeps_only_the_clients_states() -> None:
    states = gt.parse_xfrm(IP_S_XFRM + gt.state_batch(0))
    assert set(gt.of_hosts(states, ["192.168.77.11"])) == {0xC5D1A2B3, 0xCF000001}
    assert gt.of_hosts(states, ["10.200.0.1"]) == {}


def test_percentiles() -> None:
    assert gt.median([3.0, 1.0, 2.0]) == 2.0
    assert gt.p95([float(i) for i in range(1, 101)]) == 95.0


def test_get_batch_reads_exactly_the_given_states() -> None:
    states = gt.parse_xfrm(IP_S_XFRM)
    assert gt.get_batch(states).splitlines() == [
        "xfrm state get src 192.168.77.1 dst 192.168.77.11 proto esp spi 0xc5d1a2b3",
        "xfrm state get src 192.168.77.11 dst 192.168.77.1 proto esp spi 0xcf000001",
    ]


def test_a_scrape_between_two_moving_readings_is_judged_by_the_bracket() -> None:
    before = {s.spi: s for s in gt.parse_xfrm(IP_S_XFRM)}
    grown = IP_S_XFRM.replace("22831(bytes), 26(packets)", "23859(bytes), 27(packets)")
    after = {s.spi: s for s in gt.parse_xfrm(grown)}
    host = ["192.168.77.11"]
    assert gt.bracket(SCRAPE, before, after, host) == []  # the older reading, still fresh
    assert gt.bracket(SCRAPE.replace("22831.0", "23859.0"), before, after, host) == []
    (old,) = gt.bracket(SCRAPE.replace("22831.0", "21803.0"), before, after, host)
    assert (old.what, old.kernel, old.scraped) == ("bytes", 23859, 21803.0)
    assert len(gt.bracket(SCRAPE.replace("22831.0", "23860.0"), before, after, host)) == 1
    attempts = [
        {"before": [vars(s) for s in before.values()], "after": [vars(s) for s in after.values()],
         "text": SCRAPE},
        {"before": [vars(s) for s in after.values()], "after": [vars(s) for s in after.values()],
         "text": SCRAPE.replace("22831.0", "23859.0").replace("26.0", "27.0")},
    ]  # fmt: skip
    assert gt.judge(attempts, host) == {"exact": 1, "bracketed": 0, "states": 2, "wrong": []}
    assert gt.judge(attempts[:1], host) == {"exact": 0, "bracketed": 1, "states": 2, "wrong": []}
