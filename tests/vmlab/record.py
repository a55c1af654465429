#!/usr/bin/env python3
"""Re-record the guest fixtures: real netlink bytes, VICI answers and Libreswan's
``ipsec`` command outputs from the guest.

    python3 tests/vmlab/record.py                          # Debian 12, strongSwan
    python3 tests/vmlab/record.py --release trixie         # Debian 13, strongSwan 6
    python3 tests/vmlab/record.py --release trixie --flavour libreswan
    python3 tests/vmlab/record.py --release trixie --flavour libreswan --scenario mixed

Boots the vmlab guest, connects three clients, passes known traffic through each
client's ppp session, then dumps in the guest (tests/vmlab/guest/nldump.py, plain
sockets, no decoder) and writes, for the strongSwan flavour:

    <netlink dir>/<name>.bin      netlink messages exactly as received
    <netlink dir>/xfrm_stat.txt   /proc/net/xfrm_stat
    <netlink dir>/manifest.json   what each file is and what was up
    tests/fixtures/vici-guest/<scenario>/<command>.json   the server's VICI answers
                                  (the layout of tests/fixtures/vici/)

with <netlink dir> tests/fixtures/netlink (bookworm) or tests/fixtures/netlink-<release>
and <scenario> three-clients (bookworm) or <release>-three-clients. For the Libreswan
flavour, everything goes to tests/fixtures/libreswan/<release>/: the netlink dumps as
above under netlink/, and each ``ipsec`` command's stdout, byte for byte, as
<command>.txt, described (command, exit code, stderr, versions) in manifest.json.

``--scenario mixed`` (Libreswan flavour) connects one client of each kind instead: a
strongSwan L2TP client, a NetworkManager-l2tp one (pluto + xl2tpd) and a "Cisco IPsec"
XAuth client on setup-ipsec-vpn's xauth-psk connection, and writes the server's
``ipsec`` outputs (and the NetworkManager-l2tp client's own pluto's, as client-*.txt)
to tests/fixtures/libreswan/<release>/mixed/.

``--scenario events`` (strongSwan flavour) records the server charon's VICI events
(tests/vmlab/guest/vici_events.py) while two clients connect, one hangs up politely
and the other vanishes (SIGKILL, DPD), to
tests/fixtures/vici-guest/<release>-events/connect-disconnect-dpd.json in the layout of
tests/fixtures/vici-events/.
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
FIXTURES = REPO / "tests/fixtures"
NETLINK = FIXTURES / "netlink"
VICI = FIXTURES / "vici-guest"
LIBRESWAN = FIXTURES / "libreswan"
SCENARIO = "three-clients"
# Libreswan's status commands as the next collector will run them: file name -> argv.
# briefstatus is new in 5.x; showstates exists in both.
IPSEC_COMMANDS = (
    ("version", "ipsec --version"),
    ("trafficstatus", "ipsec trafficstatus"),
    ("globalstatus", "ipsec globalstatus"),
    ("briefstatus", "ipsec briefstatus"),
    ("showstates", "ipsec showstates"),
    ("status", "ipsec status"),
    ("whack-trafficstatus", "ipsec whack --trafficstatus"),
)
# (client, ping count, payload size): distinct per client so each ppp is recognisable.
TRAFFIC = ((1, 10, 100), (2, 20, 1000), (3, 5, 1200))


def record(g: Guest, vici: bool = True) -> dict[str, Any]:
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
        "python3 /mnt/src/tests/vmlab/guest/nldump.py" + ("" if vici else " --no-vici"),
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


def record_ipsec(g: Guest) -> dict[str, Any]:
    """Each Libreswan status command's stdout as bytes, with its rc and stderr."""
    out = {}
    for name, cmd in IPSEC_COMMANDS:
        r = g.run(cmd, b64=True, check=False)
        out[name] = {
            "command": cmd,
            "rc": r["rc"],
            "stderr": r["stderr"],
            "stdout": base64.b64decode(r["stdout_b64"]),
        }
    return out


def write(
    rec: dict[str, Any],
    image: dict[str, Any],
    netlink: Path = NETLINK,
    vici: Path | None = VICI / SCENARIO,
    what_was_up: str | None = None,
) -> None:
    netlink.mkdir(parents=True, exist_ok=True)
    data = rec["data"]
    files = []
    for d in data["netlink"]:
        raw = base64.b64decode(d["response_b64"])
        (netlink / f"{d['name']}.bin").write_bytes(raw)
        entry = {k: v for k, v in d.items() if k not in ("response_b64",)}
        entry["file"] = f"{d['name']}.bin"
        files.append(entry)
        print(f"  {netlink.name}/{d['name']}.bin ({len(raw)} bytes, {d['messages']} messages)")
    (netlink / "xfrm_stat.txt").write_text(data["xfrm_stat"])
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
        "what_was_up": what_was_up
        or (
            "L2TP/IPsec server in the guest's root netns (192.168.77.1): IKEv1 PSK, "
            "ESP transport mode for UDP/1701, xl2tpd LNS with kernel L2TP, pppd "
            "MS-CHAPv2; three clients (192.168.77.11-13, own netns, own charon, xl2tpd "
            "and pppd) connected as user nycmesh; pings of known size through each "
            "client's ppp (see traffic); an inbound 'level required' policy for UDP/1701."
        ),
        "kernel": data["kernel"],
        "image": {k: image.get(k) for k in ("key", "release", "kernel_package", "kernel_release")},
        "daemons": daemons(image),
        "server_ppp": status["server"]["ppp"],
        "clients": {n: {"ip": c["ip"], "ppp": c["ppp"]} for n, c in status["clients"].items()},
        "traffic": rec["traffic"],
        "files": files,
        "xfrm_stat": "xfrm_stat.txt",
        "context": rec["context"],
    }
    (netlink / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"  {netlink.name}/manifest.json")
    if vici is None:
        return
    folder = vici
    folder.mkdir(parents=True, exist_ok=True)
    for name, answer in data["vici"].items():
        text = json.dumps(answer, indent=2, ensure_ascii=False) + "\n"
        if "nycmeshnet" in text:
            raise SystemExit(f"vici-guest/{name}: the PSK appears in the answer")
        (folder / f"{name}.json").write_text(text)
        print(f"  vici-guest/{folder.name}/{name}.json ({len(text)} bytes)")


def daemons(image: dict[str, Any]) -> dict[str, str]:
    """The versions of the stack's packages in the image (from its manifest)."""
    wanted = ("strongswan-charon", "libreswan", "xl2tpd", "ppp", "python3")
    out = {}
    for entry in image.get("installed", []):
        name, _, version = str(entry).partition("=")
        if name in wanted:
            out[name] = version
    return out


LIBRESWAN_UP = (
    "Libreswan server in the guest's root netns (192.168.77.1) configured as "
    "hwdsl2/setup-ipsec-vpn configures it (tests/vmlab/guest/conf/libreswan-*): "
    "conn l2tp-psk (IKEv1 PSK, transport mode for UDP/1701, encapsulation=yes so ESP "
    "is in UDP/4500 without a NAT) and conn xauth-psk (no client on it); xl2tpd LNS "
    "with kernel L2TP and ip range 192.168.42.10-250; pppd +mschap-v2. Three "
    "strongSwan clients (192.168.77.11-13, own netns) connected with IKEv1 Main Mode "
    "PSK, no XAuth, then L2TP and PPP MS-CHAPv2 as user nycmesh; pings of known size "
    "through each client's ppp (see traffic)."
)


def write_libreswan(
    rec: dict[str, Any], ipsec: dict[str, Any], image: dict[str, Any], release: str
) -> None:
    folder = LIBRESWAN / release
    write(rec, image, netlink=folder / "netlink", vici=None, what_was_up=LIBRESWAN_UP)
    files = {}
    for name, r in ipsec.items():
        text = r["stdout"]
        if b"nycmeshnet" in text:
            raise SystemExit(f"libreswan/{release}/{name}.txt: the PSK appears in the output")
        (folder / f"{name}.txt").write_bytes(text)
        files[name] = {
            "file": f"{name}.txt",
            "command": r["command"],
            "rc": r["rc"],
            "stderr": r["stderr"],
            "bytes": len(text),
            "lines": text.count(b"\n"),
        }
        print(f"  libreswan/{release}/{name}.txt ({len(text)} bytes, rc {r['rc']})")
    status = rec["status"]
    manifest = {
        "about": (
            "Libreswan's status commands recorded in the vmlab guest by "
            "tests/vmlab/record.py: each .txt is the command's stdout byte for byte "
            "(rc and stderr here). netlink/ holds the kernel's answers at the same "
            "moment (see netlink/manifest.json)."
        ),
        "release": release,
        "kernel": rec["data"]["kernel"],
        "libreswan": ipsec["version"]["stdout"].decode(errors="replace").strip(),
        "daemons": daemons(image),
        "what_was_up": LIBRESWAN_UP,
        "server_ppp": status["server"]["ppp"],
        "clients": {n: {"ip": c["ip"], "ppp": c["ppp"]} for n, c in status["clients"].items()},
        "traffic": rec["traffic"],
        "files": files,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"  libreswan/{release}/manifest.json")


MIXED_UP = (
    "Libreswan server in the guest's root netns (192.168.77.1) configured as "
    "hwdsl2/setup-ipsec-vpn configures it (tests/vmlab/guest/conf/libreswan-*). Three "
    "clients of three kinds, each in its own netns: 1 (192.168.77.11) a strongSwan "
    "client, IKEv1 Main Mode PSK, no XAuth, L2TP and PPP MS-CHAPv2 as nycmesh on "
    "l2tp-psk; 2 (192.168.77.12) Libreswan's pluto and xl2tpd as NetworkManager-l2tp "
    "drives them (its conn named after the profile UUID), the same login; 3 "
    "(192.168.77.13) a strongSwan client on xauth-psk: IKEv1 PSK + XAuth as nycmesh, "
    "mode config lease from 192.168.43.10-250, tunnel mode, no L2TP. Pings of known "
    "size through 1's and 2's ppp and from 3's lease (see traffic)."
)
#: The NetworkManager-l2tp client's own pluto (client 2), through its control socket.
CLIENT_CTL = "/tmp/vmlab/c2/run/pluto/pluto.ctl"
CLIENT_COMMANDS = (
    ("client-trafficstatus", f"ipsec whack --ctlsocket {CLIENT_CTL} --trafficstatus"),
    ("client-showstates", f"ipsec whack --ctlsocket {CLIENT_CTL} --showstates"),
    ("client-status", f"ipsec whack --ctlsocket {CLIENT_CTL} --status"),
)


def record_mixed(g: Guest) -> dict[str, Any]:
    """One client of each kind on the Libreswan flavour; the server's ipsec outputs."""
    connects = [g.connect(1), g.connect(2, kind="libreswan"), g.connect(3, kind="xauth")]
    traffic = []
    for n, count, size in TRAFFIC[:2]:
        r = g.traffic(n, count=count, size=size)
        traffic.append({"client": n, "pings": count, "payload_bytes": size, "rc": r["rc"]})
    vip = connects[2]["vip"]
    _, count, size = TRAFFIC[2]
    r = g.run(f"ping -n -q -c {count} -s {size} -i 0.1 -W 1 -I {vip} 192.168.77.1",
              netns="c3", check=False)  # fmt: skip
    traffic.append({"client": 3, "pings": count, "payload_bytes": size, "from": vip, "rc": r["rc"]})
    time.sleep(1)
    ipsec = record_ipsec(g)
    for name, cmd in CLIENT_COMMANDS:
        r = g.run(cmd, b64=True, check=False)
        ipsec[name] = {
            "command": cmd,
            "rc": r["rc"],
            "stderr": r["stderr"],
            "stdout": base64.b64decode(r["stdout_b64"]),
        }
    status = g.status()
    return {"ipsec": ipsec, "status": status, "traffic": traffic, "connects": connects}


def write_mixed(rec: dict[str, Any], image: dict[str, Any], release: str) -> None:
    folder = LIBRESWAN / release / "mixed"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, r in rec["ipsec"].items():
        text = r["stdout"]
        if b"nycmeshnet" in text:
            raise SystemExit(f"libreswan/{release}/mixed/{name}.txt: the PSK appears")
        (folder / f"{name}.txt").write_bytes(text)
        files[name] = {
            "file": f"{name}.txt",
            "command": r["command"],
            "rc": r["rc"],
            "stderr": r["stderr"],
            "bytes": len(text),
            "lines": text.count(b"\n"),
        }
        print(f"  libreswan/{release}/mixed/{name}.txt ({len(text)} bytes, rc {r['rc']})")
    status = rec["status"]
    clients = {
        n: {"ip": c["ip"], "kind": c.get("kind"), "ppp": c["ppp"]}
        for n, c in status["clients"].items()
    }
    clients["3"]["lease"] = rec["connects"][2]["vip"]
    manifest = {
        "about": (
            "Libreswan's status commands with one client of each kind, recorded in the "
            "vmlab guest by tests/vmlab/record.py --scenario mixed: each .txt is the "
            "command's stdout byte for byte (rc and stderr here); client-*.txt are the "
            "NetworkManager-l2tp client's own pluto's."
        ),
        "release": release,
        "kernel": image.get("kernel_release"),
        "libreswan": rec["ipsec"]["version"]["stdout"].decode(errors="replace").strip(),
        "daemons": daemons(image),
        "what_was_up": MIXED_UP,
        "server_ppp": status["server"]["ppp"],
        "clients": clients,
        "traffic": rec["traffic"],
        "files": files,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"  libreswan/{release}/mixed/manifest.json")


EVENTS_FILE = "/tmp/vmlab/vici-events.jsonl"


def record_events(g: Guest) -> dict[str, Any]:
    """The server's VICI events through connect, polite disconnect and a DPD drop."""
    g.run(
        "(setsid env PYTHONPATH=/mnt/pydeps PYTHONDONTWRITEBYTECODE=1 python3 "
        f"/mnt/src/tests/vmlab/guest/vici_events.py > {EVENTS_FILE} 2>&1 &)"
    )
    deadline = time.monotonic() + 60
    while '"registered"' not in g.sh(f"cat {EVENTS_FILE}"):
        if time.monotonic() > deadline:
            raise SystemExit(g.sh(f"cat {EVENTS_FILE}"))
        time.sleep(0.5)
    steps = []

    def step(what: str, fn: Any) -> None:
        steps.append({"step": what, "at": g.status()["uptime"]})
        fn()

    step("client 1 connects", lambda: g.connect(1))
    step("client 2 connects", lambda: g.connect(2))
    step("client 1 disconnects (L2TP StopCCN, IKE delete)", lambda: g.disconnect(1))
    step("client 2 killed (SIGKILL, no goodbye; DPD 3 s / 9 s)", lambda: g.kill(2))
    deadline = time.monotonic() + 90
    while "192.168.77.12" in g.sh("swanctl --list-sas") and time.monotonic() < deadline:
        time.sleep(2)
    time.sleep(2)
    g.run("pkill -f vici_events.py", check=False)
    lines = [json.loads(x) for x in g.sh(f"cat {EVENTS_FILE}").splitlines() if x.strip()]
    before = next(x["list-sas-before"] for x in lines if "list-sas-before" in x)
    events = [x for x in lines if "event" in x]
    return {"list-sas-before": before, "events": events, "steps": steps}


def write_events(rec: dict[str, Any], image: dict[str, Any], release: str) -> None:
    folder = VICI / f"{release}-events"
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "about": (
            "The server charon's VICI events (ike-updown, child-updown, ike-rekey, "
            "child-rekey) recorded in the vmlab guest by tests/vmlab/record.py "
            "--scenario events, values as strings; list-sas-before is the baseline."
        ),
        "release": release,
        "daemons": daemons(image),
        "kernel": image.get("kernel_release"),
        "steps": rec["steps"],
        "list-sas-before": rec["list-sas-before"],
        "events": rec["events"],
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if "nycmeshnet" in text:
        raise SystemExit("the PSK appears in the events")
    out = folder / "connect-disconnect-dpd.json"
    out.write_text(text)
    print(f"  {out.relative_to(FIXTURES)} ({len(rec['events'])} events)")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", default="bookworm")
    ap.add_argument("--flavour", choices=("strongswan", "libreswan"), default="strongswan")
    ap.add_argument(
        "--scenario", choices=("three-clients", "mixed", "events"), default="three-clients"
    )
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    if args.scenario == "mixed":
        if args.flavour != "libreswan":
            ap.error("--scenario mixed needs --flavour libreswan")
        with Guest(clients=3, release=args.release, flavour="libreswan") as g:
            print(f"guest up in {g.boot_seconds} s")
            mixed = record_mixed(g)
            assert g.image_dir is not None
            image = json.loads((g.image_dir / "manifest.json").read_text())
        write_mixed(mixed, image, args.release)
        print(f"recorded in {time.monotonic() - t0:.0f} s")
        return 0
    if args.scenario == "events":
        with Guest(clients=2, release=args.release) as g:
            print(f"guest up in {g.boot_seconds} s")
            events = record_events(g)
            assert g.image_dir is not None
            image = json.loads((g.image_dir / "manifest.json").read_text())
        write_events(events, image, args.release)
        print(f"recorded in {time.monotonic() - t0:.0f} s")
        return 0
    with Guest(clients=3, release=args.release, flavour=args.flavour) as g:
        print(f"guest up in {g.boot_seconds} s")
        libreswan = args.flavour == "libreswan"
        rec = record(g, vici=not libreswan)
        ipsec = record_ipsec(g) if libreswan else None
        assert g.image_dir is not None
        image = json.loads((g.image_dir / "manifest.json").read_text())
    if ipsec is not None:
        write_libreswan(rec, ipsec, image, args.release)
    elif args.release == "bookworm":
        write(rec, image)
    else:
        write(
            rec,
            image,
            netlink=FIXTURES / f"netlink-{args.release}",
            vici=VICI / f"{args.release}-{SCENARIO}",
        )
    print(f"recorded in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
