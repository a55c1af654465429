"""What pppd gives its ip-up/ip-down hooks in the genuine stack: a fact finder.

    python3 tests/vmlab/pppd_probe.py --release bookworm [--out DIR]

Boots one guest (strongSwan flavour), installs the shipped hooks and a probe hook
(guest/pppd_probe_hook.sh, first and last in ip-up.d and ip-down.d) that dumps its argv,
environment and the ppp interface's statistics; then client 1 connects, sends a known
number of bytes, hangs up politely; client 2 connects, sends bytes and is killed (no
goodbye). Prints (and writes to DIR/report.json) the dumps, the server's interface
counters read just before each end, the times, and pppd's log. issue 18's accounting
rests on what this showed (docs/logins.md, "What pppd gives the hooks").
"""

from __future__ import annotations

import argparse
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
    except ImportError:
        from guest import Guest

PROBE = "/mnt/src/tests/vmlab/guest/pppd_probe_hook.sh"
HOOK = "/mnt/src/contrib/ppp/ip-{}.d/l2tp-ipsec-exporter"


def install(g: Guest) -> None:
    g.sh(
        f"install -m 755 {HOOK.format('up')} /etc/ppp/ip-up.d/ && "
        f"install -m 755 {HOOK.format('down')} /etc/ppp/ip-down.d/ && "
        f"install -m 755 {PROBE} /etc/ppp/ip-up.d/00-probe && "
        f"install -m 755 {PROBE} /etc/ppp/ip-down.d/00-probe && "
        f"install -m 755 {PROBE} /etc/ppp/ip-down.d/zz-probe"
    )


def parse_dump(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {"env": {}, "raw": text}
    section = "head"
    for line in text.splitlines():
        if line.startswith("--- "):
            section = line[4:]
            continue
        if section == "env" and "=" in line:
            k, _, v = line.partition("=")
            out["env"][k] = v
        elif section in ("head", "sysfs") and "=" in line:
            k, _, v = line.partition("=")
            out[k] = v
    return out


def dumps(g: Guest) -> dict[str, dict[str, Any]]:
    names = g.sh("ls /tmp/vmlab/probe 2>/dev/null || true").split()
    return {n: parse_dump(g.log(f"probe/{n}")) for n in names if n.endswith(".txt")}


def server_iface(g: Guest, n: int) -> str | None:
    c = g.status()["clients"][str(n)]
    local = (c.get("ppp") or {}).get("local")
    for p in g.status()["server"]["ppp"]:
        if local and p["peer"].split("/")[0] == local:
            return str(p["ifname"])
    return None


def stats(g: Guest, iface: str) -> dict[str, int]:
    keys = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
    files = " ".join(f"/sys/class/net/{iface}/statistics/{k}" for k in keys)
    return dict(zip(keys, map(int, g.sh(f"cat {files}").split()), strict=True))


def uptime(g: Guest) -> float:
    return float(g.status()["uptime"])


def wait_down(g: Guest, iface: str, pid_hint: set[str], timeout: float) -> dict[str, Any] | None:
    """The server-side ip-down dump of ``iface`` not seen before (names in pid_hint)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, d in dumps(g).items():
            if name.startswith(f"ip-down.d.00-probe.{iface}.") and name not in pid_hint:
                if d["env"].get("PEERNAME"):  # the server's pppd (clients' have no PEERNAME?)
                    return {"name": name, **d}
                if d["env"].get("IPLOCAL") == "192.168.42.1":
                    return {"name": name, **d}
        time.sleep(1.0)
    return None


def scenario(g: Guest) -> dict[str, Any]:
    report: dict[str, Any] = {"release": g.release, "boot_seconds": g.boot_seconds}
    report["versions"] = g.sh(
        "pppd --version 2>&1 | head -1; xl2tpd -v 2>&1 | head -1; uname -r; "
        "dpkg-query -W ppp xl2tpd strongswan-charon 2>/dev/null"
    )
    report["etc_ppp_ip_down"] = g.sh("cat /etc/ppp/ip-down")
    report["server_options"] = g.sh("cat /etc/ppp/options.xl2tpd /etc/ppp/options")
    install(g)

    # 1: polite hang-up after known traffic.
    g.connect(1)
    if1 = server_iface(g, 1)
    assert if1, g.status()
    t1 = g.traffic(1, count=20, size=1000, mode="ping")
    t1u = g.traffic(1, count=10, size=500, mode="udp")
    time.sleep(1)
    before1 = stats(g, if1)
    up1 = uptime(g)
    seen = set(dumps(g))
    d1 = g.disconnect(1)
    down1 = wait_down(g, if1, seen, 60)
    report["polite"] = {
        "iface": if1,
        "traffic_ping": {k: t1[k] for k in ("server_before", "server_after", "client_after")},
        "traffic_udp": {k: t1u[k] for k in ("server_before", "server_after", "client_after")},
        "stats_before_disconnect": before1,
        "uptime_at_disconnect": up1,
        "disconnect": d1,
        "ip_down": down1,
    }

    # 2: killed client, no goodbye.
    g.connect(2)
    if2 = server_iface(g, 2)
    assert if2, g.status()
    t2 = g.traffic(2, count=10, size=700, mode="udp")
    time.sleep(1)
    before2 = stats(g, if2)
    seen = set(dumps(g))
    up2 = uptime(g)
    k2 = g.kill(2)
    t_iface_gone = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not any(p["ifname"] == if2 for p in g.status()["server"]["ppp"]):
            t_iface_gone = uptime(g)
            break
        time.sleep(1)
    down2 = wait_down(g, if2, seen, 60)
    report["killed"] = {
        "iface": if2,
        "traffic_udp": {k: t2[k] for k in ("server_before", "server_after", "client_after")},
        "stats_before_kill": before2,
        "uptime_at_kill": up2,
        "kill": k2,
        "uptime_iface_gone_seen": t_iface_gone,
        "ip_down": down2,
    }
    report["all_dumps"] = dumps(g)
    report["server_pppd_log"] = g.log("server/pppd.log")
    report["state_dir"] = g.sh("ls -la /run/l2tp-ipsec-exporter/ppp/ 2>&1; true")
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", default="bookworm")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with Guest(clients=2, release=args.release) as g:
        report = scenario(g)
    text = json.dumps(report, indent=1, sort_keys=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
