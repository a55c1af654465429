"""The recorded guest fixtures are whole and say what their manifest says.

No QEMU here: these check tests/fixtures/netlink/ and tests/fixtures/vici-guest/ as
committed, with a bare netlink walk (no decoder), so a broken re-record shows at once.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NETLINK = FIXTURES / "netlink"
MANIFEST = json.loads((NETLINK / "manifest.json").read_text())
NLMSG_DONE = 3
NLMSG_ERROR = 2
RTM_NEWLINK = 16
IFLA_IFNAME = 3


def walk(raw: bytes) -> list[tuple[int, bytes]]:
    out = []
    off = 0
    while off < len(raw):
        length, mtype = struct.unpack_from("=IH", raw, off)
        assert length >= 16 and off + length <= len(raw), f"bad length at {off}"
        out.append((mtype, raw[off + 16 : off + length]))
        off += (length + 3) & ~3
    assert off == len(raw)
    return out


@pytest.mark.parametrize("entry", MANIFEST["files"], ids=lambda e: e["name"])
def test_netlink_file_is_whole(entry: dict[str, object]) -> None:
    msgs = walk((NETLINK / str(entry["file"])).read_bytes())
    assert len(msgs) == entry["messages"]
    assert all(t != NLMSG_ERROR for t, _ in msgs)
    if entry["dump"]:
        assert msgs[-1][0] == NLMSG_DONE
        assert len(msgs) > 1


def test_link_dump_has_the_servers_ppp_interfaces() -> None:
    names = []
    for mtype, payload in walk((NETLINK / "rtnl-getlink.bin").read_bytes()):
        if mtype != RTM_NEWLINK:
            continue
        off = 16  # ifinfomsg
        while off + 4 <= len(payload):
            alen, atype = struct.unpack_from("=HH", payload, off)
            if atype == IFLA_IFNAME:
                names.append(payload[off + 4 : off + alen].rstrip(b"\0").decode())
            off += (alen + 3) & ~3
    ppp = sorted(n for n in names if n.startswith("ppp"))
    assert ppp == sorted(p["ifname"] for p in MANIFEST["server_ppp"])
    assert len(ppp) == 3


def test_vici_answers_show_three_transport_sas() -> None:
    sas = json.loads((FIXTURES / "vici-guest" / MANIFEST["scenario"] / "list-sas.json").read_text())
    children = [
        child for event in sas for ike in event.values() for child in ike["child-sas"].values()
    ]
    assert len(sas) == 3
    assert {c["mode"] for c in children} == {"TRANSPORT"}
    assert {c["state"] for c in children} == {"INSTALLED"}
