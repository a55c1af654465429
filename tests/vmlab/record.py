#!/usr/bin/env python3
"""Re-record the guest fixtures: real netlink bytes and VICI answers from the guest.

    python3 tests/vmlab/record.py

Boots the vmlab guest, connects three clients, passes known traffic through each
client's ppp session, then dumps in the guest (tests/vmlab/guest/nldump.py, plain
sockets, no decoder) and writes:

    tests/fixtures/netlink/<name>.bin      netlink messages exactly as received
    tests/fixtures/netlink/xfrm_stat.txt   /proc/net/xfrm_stat
    tests/fixtures/netlink/manifest.json   what each file is and what was up
    tests/fixtures/vici-guest/<scenario>/<command>.json   the server's VICI answers
                                           (the layout of tests/fixtures/vici/)
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy checks the package import; a script finds guest.py next to it
    from .guest import Guest
else:
    try:
        from .guest import Guest
    except ImportError:  # run as a script
        from guest import Guest

REPO = Path(__file__).resolve().parents[2]
NETLINK = REPO / "tests/fixtures/netlink"
VICI = REPO / "tests/fixtures/vici-guest"
SCENARIO = "three-clients"
# (client, ping count, payload size): distinct per client so each ppp is recognisable.
TRAFFIC = ((1, 10, 100), (2, 20, 1000), (3, 5, 1200))


def record(g: Guest) -> dict[str, Any]:
    for n, _, _ in TRAFFIC:
        g.connect(n)
    traffic = []
    for n, count, size in TRAFFIC:
        r = g.traffic(n, count=count, size=size)
        traffic.append(
            {
                "client": n,
                "pings": count,
                "payload_bytes": size,
                "ip_bytes_each": r["ip_bytes_per_packet"],
                "server_ifname": r["server_ifname"],
                "rc": r["rc"],
            }
        )
    time.sleep(1)
    status = g.status()
    dumped = g.run(
        "PYTHONPATH=/mnt/pydeps PYTHONDONTWRITEBYTECODE=1 "
        "python3 /mnt/src/tests/vmlab/guest/nldump.py",
        timeout=60,
    )
    data = json.loads(dumped["stdout"])
    context = {
        "ip_addr": json.loads(g.sh("ip -j addr show")),
        "xfrm_state": g.sh("ip xfrm state | grep -v -e '^\tauth' -e '^\tenc'"),
        "xfrm_policy": g.sh("ip xfrm policy"),
        "l2tp_tunnels": g.sh("ip l2tp show tunnel"),
        "l2tp_sessions": g.sh("ip l2tp show session"),
        "ppp_stats": {
            p["ifname"]: g.sh(f"ip -s -s link show {p['ifname']}") for p in status["server"]["ppp"]
        },
    }
    return {"data": data, "status": status, "traffic": traffic, "context": context}


def write(rec: dict[str, Any], image: dict[str, Any]) -> None:
    NETLINK.mkdir(parents=True, exist_ok=True)
    data = rec["data"]
    files = []
    for d in data["netlink"]:
        raw = base64.b64decode(d["response_b64"])
        (NETLINK / f"{d['name']}.bin").write_bytes(raw)
        entry = {k: v for k, v in d.items() if k not in ("response_b64",)}
        entry["file"] = f"{d['name']}.bin"
        files.append(entry)
        print(f"  netlink/{d['name']}.bin ({len(raw)} bytes, {d['messages']} messages)")
    (NETLINK / "xfrm_stat.txt").write_text(data["xfrm_stat"])
    status = rec["status"]
    manifest = {
        "about": (
            "Raw netlink answers recorded in the vmlab guest by tests/vmlab/record.py: "
            "each .bin is every byte recv() returned for one request, messages "
            "concatenated as the kernel sent them (host byte order, little-endian). "
            "The XFRM SA dump holds the session's ESP keys: throwaway keys of an "
            "emulated guest."
        ),
        "scenario": SCENARIO,
        "what_was_up": (
            "L2TP/IPsec server in the guest's root netns (192.168.77.1): IKEv1 PSK, "
            "ESP transport mode for UDP/1701, xl2tpd LNS with kernel L2TP, pppd "
            "MS-CHAPv2; three clients (192.168.77.11-13, own netns, own charon, xl2tpd "
            "and pppd) connected as user nycmesh; pings of known size through each "
            "client's ppp (see traffic); an inbound 'level required' policy for UDP/1701."
        ),
        "kernel": data["kernel"],
        "image": {k: image.get(k) for k in ("key", "kernel_package", "kernel_release")},
        "server_ppp": status["server"]["ppp"],
        "clients": {n: {"ip": c["ip"], "ppp": c["ppp"]} for n, c in status["clients"].items()},
        "traffic": rec["traffic"],
        "files": files,
        "xfrm_stat": "xfrm_stat.txt",
        "context": rec["context"],
    }
    (NETLINK / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print("  netlink/manifest.json")
    folder = VICI / SCENARIO
    folder.mkdir(parents=True, exist_ok=True)
    for name, answer in data["vici"].items():
        text = json.dumps(answer, indent=2, ensure_ascii=False) + "\n"
        if "nycmeshnet" in text:
            raise SystemExit(f"vici-guest/{name}: the PSK appears in the answer")
        (folder / f"{name}.json").write_text(text)
        print(f"  vici-guest/{SCENARIO}/{name}.json ({len(text)} bytes)")


def main() -> int:
    t0 = time.monotonic()
    with Guest(clients=3) as g:
        print(f"guest up in {g.boot_seconds} s")
        rec = record(g)
        assert g.image_dir is not None
        image = json.loads((g.image_dir / "manifest.json").read_text())
    write(rec, image)
    print(f"recorded in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
