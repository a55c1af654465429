#!/usr/bin/env python3
"""vmlab guest control server: sets up the L2TP/IPsec server and client namespaces,
then answers the host's commands over HTTP (JSON in, JSON out).

Runs as PID 1 inside the emulated guest (see init.sh), with the standard library only.
The protocol is described in docs/vmlab.md; in short:

    GET  /status                       server and client state
    POST /client/<n>/connect           charon + IKE/CHILD SA, xl2tpd, pppd; waits for ppp0
                                       ({"kind": "libreswan"}: pluto + xl2tpd as
                                       NetworkManager-l2tp drives them; "xauth":
                                       IKEv1 XAuth + mode config, no L2TP)
    POST /client/<n>/disconnect        L2TP disconnect, IKE delete, daemons stopped
    POST /client/<n>/kill              SIGKILL charon, xl2tpd and pppd, no goodbye
    POST /client/<n>/traffic           {"count", "size", "mode": "ping"|"udp"} through ppp0
    POST /plain/l2tp                   clear-text L2TP attempt from the "plain" netns
    POST /run                          {"argv"|"sh", "netns", "timeout", "b64"} -> rc/out/err
    POST /exporter/start               {"args": [...]} start python3 -m exporter
    POST /exporter/stop
    GET  /exporter/log                 the exporter's stdout/stderr so far
    GET  /log/<name>                   a log file under the state dir (charon.log, ...)
    POST /poweroff
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GUEST = Path(__file__).resolve().parent
CONF = GUEST / "conf"
SRC = GUEST.parent.parent.parent  # the checkout, mounted read-only
STATE = Path("/tmp/vmlab")
SERVER_IP = "192.168.77.1"
PLAIN_IP = "192.168.77.9"
PPP_LOCAL = "192.168.42.1"
CTL_PORT = 8000
EXPORTER_PORT = 9814


def console(msg: str) -> None:
    up = Path("/proc/uptime").read_text().split()[0]
    print(f"vmlab: {msg} [{up}s]", flush=True)


def cmdline() -> dict[str, str]:
    out = {}
    for tok in Path("/proc/cmdline").read_text().split():
        k, _, v = tok.partition("=")
        if k.startswith("vmlab."):
            out[k[6:]] = v
    return out


ARGS = cmdline()
NCLIENTS = int(ARGS.get("clients", "3"))
DPD_DELAY = ARGS.get("dpd_delay", "3s")
DPD_TIMEOUT = ARGS.get("dpd_timeout", "9s")
FLAVOUR = ARGS.get("flavour", "strongswan")
# The last NATTED clients sit behind a NAT router (netns "nat", masquerade) instead of on
# the server's LAN, as home users do.
NATTED = int(ARGS.get("natted", "0"))
NAT_NS = "nat"
NAT_WAN_IP = "192.168.77.20"
NAT_LAN_IP = "192.168.88.1"
# The clients' rekey times. 0 (never) makes charon propose no IKEv1 lifetime, which
# Libreswan 5 takes as already expired (it deletes the ISAKMP SA right after Main
# Mode): against it the clients propose Windows' lifetimes, 8 h and 1 h.
if FLAVOUR == "libreswan":
    CLIENT_REKEY = {"ike_rekey": "8h", "child_rekey": "1h"}
else:
    CLIENT_REKEY = {"ike_rekey": "0", "child_rekey": "0"}
# strongSwan's crypto plugins: Debian 12 builds the native ones (5.9.8); Debian 13's
# strongSwan 6 has only the openssl plugin for them.
if Path("/usr/lib/ipsec/plugins/libstrongswan-aes.so").exists():
    CRYPTO = {"crypto": "aes sha1 sha2 md5 des hmac gmp curve25519 kdf"}
    CRYPTO["swanctl_crypto"] = "sha1 sha2 aes hmac"
else:
    CRYPTO = {"crypto": "openssl", "swanctl_crypto": "openssl"}


def render(name: str, dest: Path, **kw: str) -> None:
    text = string.Template((CONF / name).read_text()).substitute(kw)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)


def sh(cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd!r} -> {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def wait_for(pred: Any, deadline_s: float, what: str, step: float = 0.1) -> Any:
    """Poll pred() until it returns a truthy value or the wall-clock deadline passes."""
    end = time.monotonic() + deadline_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(step)


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    e = dict(os.environ)
    if env:
        e.update(env)
    with open(log, "ab") as f:
        return subprocess.Popen(
            argv,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=e,
            start_new_session=True,
        )


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive: reap it if it is ours.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def reap_children() -> None:
    # PID 1 adopts every orphan: reap them so they do not pile up as zombies.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def ifaces(netns: str | None = None) -> list[dict[str, Any]]:
    pre = f"ip -n {netns} " if netns else "ip "
    out = sh(pre + "-j -s addr show", check=False).stdout
    # "ip -j -s addr" is not valid on all versions; fall back to link + addr.
    if not out.strip().startswith("["):
        out = sh(pre + "-j addr show").stdout
    found: list[dict[str, Any]] = json.loads(out or "[]")
    return found


def iface_stats(name: str, netns: str | None = None) -> dict[str, int]:
    keys = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
    files = " ".join(f"/sys/class/net/{name}/statistics/{k}" for k in keys)
    pre = f"ip netns exec {netns} " if netns else ""
    vals = sh(f"{pre}cat {files}").stdout.split()
    return dict(zip(keys, map(int, vals), strict=True))


def ppp_ifaces(netns: str | None = None) -> list[dict[str, Any]]:
    """ppp interfaces with their local and peer inner addresses."""
    out = []
    for i in ifaces(netns):
        if not i.get("ifname", "").startswith("ppp"):
            continue
        for a in i.get("addr_info", []):
            if a.get("family") == "inet":
                out.append(
                    {"ifname": i["ifname"], "local": a.get("local"), "peer": a.get("address")}
                )
    return out


def xfrm_stat() -> dict[str, int]:
    out = {}
    for line in Path("/proc/net/xfrm_stat").read_text().splitlines():
        k, v = line.split()
        out[k] = int(v)
    return out


# --- server --------------------------------------------------------------------------


class Server:
    dir = STATE / "server"

    def setup(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        st = str(self.dir)
        render("server-strongswan.conf", Path("/etc/strongswan.conf"), state=st, **CRYPTO)
        render(
            "server-swanctl.conf",
            Path("/etc/swanctl/swanctl.conf"),
            server_ip=SERVER_IP,
            dpd_delay=DPD_DELAY,
            dpd_timeout=DPD_TIMEOUT,
        )
        render(
            "server-xl2tpd.conf",
            Path("/etc/xl2tpd/xl2tpd.conf"),
            server_ip=SERVER_IP,
            pool_start="192.168.42.10",
            pool_end="192.168.42.250",
            ppp_local=PPP_LOCAL,
        )
        render("server-options.xl2tpd", Path("/etc/ppp/options.xl2tpd"), state=st)
        render("chap-secrets", Path("/etc/ppp/chap-secrets"))
        # Debian's /etc/ppp/options would add its own defaults to every pppd.
        Path("/etc/ppp/options").write_text("lock\n")
        Path("/run/xl2tpd").mkdir(parents=True, exist_ok=True)

        self.charon = spawn(["/usr/lib/ipsec/charon"], self.dir / "charon.out")
        wait_for(lambda: Path("/run/charon.vici").exists(), 30, "the server's VICI socket")
        sh("swanctl --load-all --file /etc/swanctl/swanctl.conf")
        # Clear-text L2TP is refused: inbound UDP/1701 must have come through ESP.
        # Priority below charon's per-client policies (about 2*200000).
        sh(
            f"ip xfrm policy add dir in src 0.0.0.0/0 dst {SERVER_IP}/32 proto 17 dport 1701"
            " priority 500000 tmpl proto esp mode transport level required"
        )
        self.xl2tpd = spawn(
            [
                "xl2tpd",
                "-D",
                "-c",
                "/etc/xl2tpd/xl2tpd.conf",
                "-p",
                "/run/xl2tpd.pid",
                "-C",
                "/run/xl2tpd/l2tp-control",
            ],
            self.dir / "xl2tpd.log",
        )
        wait_for(lambda: Path("/run/xl2tpd/l2tp-control").exists(), 30, "server xl2tpd")

    def status(self) -> dict[str, Any]:
        return {
            "flavour": "strongswan",
            "charon": alive(self.charon.pid),
            "xl2tpd": alive(self.xl2tpd.pid),
            "ppp": ppp_ifaces(),
        }


class LibreswanServer:
    """Libreswan + xl2tpd + pppd, configured as hwdsl2/setup-ipsec-vpn configures them
    (conf/libreswan-*): ``l2tp-psk`` (IKEv1 PSK, transport mode for UDP/1701, forced
    UDP encapsulation) and ``xauth-psk`` (IKEv1 XAuth with a mode-config pool)."""

    dir = STATE / "server"

    def setup(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        st = str(self.dir)
        render(
            "libreswan-ipsec.conf",
            Path("/etc/ipsec.conf"),
            state=st,
            server_ip=SERVER_IP,
            dpd_delay=DPD_DELAY,
            dpd_timeout=DPD_TIMEOUT,
        )
        render("libreswan-ipsec.secrets", Path("/etc/ipsec.secrets"))
        # setup-ipsec-vpn's XAuth login file: nycmesh, openssl passwd -1 of the password
        # ($$ is a $ in the template).
        render("libreswan-passwd", Path("/etc/ipsec.d/passwd"))
        render("libreswan-xl2tpd.conf", Path("/etc/xl2tpd/xl2tpd.conf"))
        render("libreswan-options.xl2tpd", Path("/etc/ppp/options.xl2tpd"), state=st)
        render("libreswan-chap-secrets", Path("/etc/ppp/chap-secrets"))
        for f in ("/etc/ipsec.secrets", "/etc/ipsec.d/passwd", "/etc/ppp/chap-secrets"):
            os.chmod(f, 0o600)
        Path("/etc/ppp/options").write_text("lock\n")
        Path("/run/xl2tpd").mkdir(parents=True, exist_ok=True)
        Path("/run/pluto").mkdir(parents=True, exist_ok=True)
        # What ipsec.service runs (ExecStart), without systemd.
        self.pluto = spawn(
            ["/usr/libexec/ipsec/pluto", "--config", "/etc/ipsec.conf", "--nofork"],
            self.dir / "pluto.out",
        )
        wait_for(lambda: Path("/run/pluto/pluto.ctl").exists(), 60, "pluto's control socket")
        # pluto loads the auto=add connections itself; wait until both are there.
        wait_for(
            lambda: all(
                f'"{c}"' in sh("ipsec status", check=False).stdout
                for c in ("l2tp-psk", "xauth-psk")
            ),
            60,
            "pluto's connections",
            step=0.5,
        )
        self.xl2tpd = spawn(
            [
                "xl2tpd",
                "-D",
                "-c",
                "/etc/xl2tpd/xl2tpd.conf",
                "-p",
                "/run/xl2tpd.pid",
                "-C",
                "/run/xl2tpd/l2tp-control",
            ],
            self.dir / "xl2tpd.log",
        )
        wait_for(lambda: Path("/run/xl2tpd/l2tp-control").exists(), 30, "server xl2tpd")

    def status(self) -> dict[str, Any]:
        return {
            "flavour": "libreswan",
            "pluto": alive(self.pluto.pid),
            "xl2tpd": alive(self.xl2tpd.pid),
            "ppp": ppp_ifaces(),
        }


# --- clients --------------------------------------------------------------------------


# NetworkManager-l2tp names the connection and its run directory after the profile's
# UUID: /run/nm-l2tp-<uuid>/{ipsec.conf,xl2tpd.conf,xl2tpd-control,xl2tpd.pid,ppp-options}.
NM_UUID = "5e1f0c2a-7a3b-4c55-9d7e-6b2f1d0a9c4{n}"


def libreswan_5() -> bool:
    """Whether the guest's Libreswan is 5.x (its commands and defaults changed)."""
    return "Libreswan 5" in sh("ipsec --version", check=False).stdout


class Client:
    """One user's machine: a netns with its own charon, xl2tpd and pppd (the strongSwan
    kind), or its own pluto, xl2tpd and pppd driven as NetworkManager-l2tp drives them
    (the Libreswan kind)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ns = f"c{n}"
        self.natted = n > NCLIENTS - NATTED
        self.ip = f"192.168.88.{10 + n}" if self.natted else f"192.168.77.{10 + n}"
        self.dir = STATE / self.ns
        self.run = self.dir / "run"
        self.lock = threading.Lock()
        self.charon: subprocess.Popen[bytes] | None = None
        self.xl2tpd: subprocess.Popen[bytes] | None = None
        self.kind = "strongswan"
        self.uuid = NM_UUID.format(n=n)
        # Files the Libreswan kind binds over the system's inside its namespace: pluto,
        # ipsec and the NSS database read fixed paths, as on a laptop.
        self.etc = self.dir / "etc"
        self.binds = {
            self.etc / "ipsec.conf": "/etc/ipsec.conf",
            self.etc / "ipsec.secrets": "/etc/ipsec.secrets",
            self.etc / "ipsec.d": "/etc/ipsec.d",
            self.dir / "nss": "/var/lib/ipsec/nss",
        }

    def netns_cmds(self) -> list[str]:
        cmds = [
            f"netns add {self.ns}",
            f"link add v{self.n}h type veth peer name eth0 netns {self.ns}",
        ]
        if self.natted:  # its other end goes to the NAT router's LAN bridge
            return [*cmds, f"link set v{self.n}h netns {NAT_NS}"]
        return [*cmds, f"link set v{self.n}h master br0 up"]

    def netns_inner(self) -> str:
        return f"ip link set lo up && ip addr add {self.ip}/24 dev eth0 && ip link set eth0 up"

    def in_ns(self, argv: list[str]) -> list[str]:
        # ip netns exec gives a private mount namespace; bind our own /run into it so
        # charon's pid file, VICI socket and xl2tpd's control pipe are per client.
        # The Libreswan kind also gets its own /etc/ipsec.* and NSS database there.
        mounts = f"mount --bind {self.run} /run"
        if self.kind == "libreswan":
            mounts += "".join(f" && mount --bind {a} {b}" for a, b in self.binds.items())
        return [
            "ip",
            "netns",
            "exec",
            self.ns,
            "/bin/sh",
            "-c",
            f'{mounts} && exec "$@"',
            "sh",
            *argv,
        ]

    @property
    def nm_rundir(self) -> Path:
        """NetworkManager-l2tp's /run/nm-l2tp-<uuid>, seen from the root namespace."""
        return self.run / f"nm-l2tp-{self.uuid}"

    def render(self, ike: str, esp: str) -> None:
        d = str(self.dir)
        render("client-strongswan.conf", self.dir / "strongswan.conf", dir=d, **CRYPTO)
        render(
            "client-swanctl.conf",
            self.dir / "swanctl.conf",
            client_ip=self.ip,
            server_ip=SERVER_IP,
            ike_proposal=ike,
            esp_proposal=esp,
            **CLIENT_REKEY,
        )
        render("client-xl2tpd.conf", self.dir / "xl2tpd.conf", server_ip=SERVER_IP, dir=d)
        render("client-options.l2tpd", self.dir / "options.l2tpd", dir=d)

    def swanctl(
        self, cmd: str, args: str = "", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return sh(f"swanctl {cmd} --uri unix://{self.run}/charon.vici {args}", timeout=timeout)

    def ppp(self) -> dict[str, Any] | None:
        p = ppp_ifaces(self.ns)
        return p[0] if p else None

    def pids(self) -> dict[str, int | None]:
        if self.kind == "libreswan":
            return {
                "pluto": read_pid(self.run / "pluto/pluto.pid"),
                "xl2tpd": read_pid(self.nm_rundir / "xl2tpd.pid"),
                "pppd": read_pid(self.run / "ppp0.pid"),
            }
        return {
            "charon": read_pid(self.run / "charon.pid"),
            "xl2tpd": read_pid(self.run / "xl2tpd.pid"),
            "pppd": read_pid(self.run / "ppp0.pid"),
        }

    def status(self) -> dict[str, Any]:
        pids = self.pids()
        return {
            "n": self.n,
            "kind": self.kind,
            "netns": self.ns,
            "ip": self.ip,
            "alive": {k: alive(v) for k, v in pids.items()},
            "ppp": self.ppp(),
        }

    def connect(
        self,
        ike: str,
        esp: str,
        timeout: float,
        kind: str = "strongswan",
        pfs: str = "",
        login: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """``login``: the PPP user and password (default nycmesh's; strongSwan kind)."""
        t0 = time.monotonic()
        self._stop(signal.SIGKILL)
        if kind not in ("strongswan", "libreswan", "xauth"):
            raise ValueError(f"unknown client kind {kind!r}")
        self.kind = kind
        for f in self.run.glob("*") if self.run.exists() else []:
            if f.is_file() or f.is_socket() or f.is_fifo():
                f.unlink()
        if kind == "libreswan":
            return self.connect_libreswan(timeout, t0, pfs)
        if kind == "xauth":
            return self.connect_xauth(ike, esp, t0)
        (self.run / "xl2tpd").mkdir(parents=True, exist_ok=True)
        for log in ("pppd.log", "xl2tpd.log", "charon.log", "charon.out"):
            (self.dir / log).unlink(missing_ok=True)
        self.render(ike, esp)
        if login is not None:  # another PPP login than nycmesh (the server must know it)
            opts = self.dir / "options.l2tpd"
            text = opts.read_text().replace("name nycmesh\n", f"name {login[0]}\n")
            opts.write_text(text.replace("password nycmeshnet\n", f"password {login[1]}\n"))
        self.charon = spawn(
            self.in_ns(["/usr/lib/ipsec/charon"]),
            self.dir / "charon.out",
            env={"STRONGSWAN_CONF": str(self.dir / "strongswan.conf")},
        )
        wait_for(lambda: (self.run / "charon.vici").exists(), 30, f"{self.ns} VICI socket")
        self.swanctl("--load-all", f"--file {self.dir}/swanctl.conf")
        t_ike = time.monotonic()
        self.swanctl("--initiate", "--ike nycmesh --child l2tp --timeout 60", timeout=70)
        t_ipsec = time.monotonic() - t_ike
        self.xl2tpd = spawn(
            self.in_ns(
                [
                    "xl2tpd",
                    "-D",
                    "-c",
                    str(self.dir / "xl2tpd.conf"),
                    "-p",
                    "/run/xl2tpd.pid",
                    "-C",
                    "/run/xl2tpd/l2tp-control",
                ]
            ),
            self.dir / "xl2tpd.log",
        )
        ctl = self.run / "xl2tpd/l2tp-control"
        wait_for(lambda: ctl.exists(), 30, f"{self.ns} xl2tpd control pipe")
        with open(ctl, "w") as pipe:
            pipe.write("c nycmesh\n")
        ppp = wait_for(self.ppp, timeout, f"{self.ns} ppp0 address", step=0.3)
        return {
            "client": self.n,
            "ppp": ppp,
            "ipsec_seconds": round(t_ipsec, 2),
            "seconds": round(time.monotonic() - t0, 2),
        }

    def connect_libreswan(self, timeout: float, t0: float, pfs: str = "") -> dict[str, Any]:
        """What NetworkManager-l2tp does with Libreswan (nm-l2tp-service.c): its files
        in /run/nm-l2tp-<uuid>/ and the PSK in /etc/ipsec.d/ipsec.nm-l2tp.secrets; the
        system's pluto (started as ipsec.service starts it, in this namespace);
        ``ipsec auto --add``/``--up`` (Libreswan 4) or ``ipsec add``/``up`` (5) on its
        config; then xl2tpd on its own config and control file, which dials at once
        (``autodial = yes``), and pppd with MS-CHAPv2. IKEv1 Main Mode with the PSK, no
        XAuth, ESP in transport mode for UDP/1701. ``pfs``: NM's ipsec-pfs ("no" is
        its "Disable PFS" box); unset, NM writes no pfs= and Libreswan proposes PFS."""
        v5 = libreswan_5()
        for log in ("pppd.log", "xl2tpd.log", "pluto.log", "pluto.out", "ipsec.out"):
            (self.dir / log).unlink(missing_ok=True)
        d = str(self.dir)
        rundir = self.nm_rundir
        shutil.rmtree(rundir, ignore_errors=True)
        rundir.mkdir(mode=0o700, parents=True)
        (self.run / "pluto").mkdir(parents=True, exist_ok=True)
        (self.etc / "ipsec.d").mkdir(parents=True, exist_ok=True)
        render("nm-l2tp-system-ipsec.conf", self.etc / "ipsec.conf", dir=d)
        render("nm-l2tp-ipsec.secrets", self.etc / "ipsec.secrets")
        psk = base64.b64encode(b"nycmeshnet").decode()
        secrets = self.etc / "ipsec.d/ipsec.nm-l2tp.secrets"
        secrets.write_text(f": PSK 0s{psk}\n")
        os.chmod(secrets, 0o600)
        render(
            "nm-l2tp-ipsec.conf",
            rundir / "ipsec.conf",
            uuid=self.uuid,
            client_ip=self.ip,
            server_ip=SERVER_IP,
            keyingtries="" if v5 else "  keyingtries=%forever\n",
            ikev1="  keyexchange=ikev1" if v5 else "  ikev2=no",
            pfs=f"  pfs={pfs}" if pfs else "",
        )
        render("nm-l2tp-xl2tpd.conf", rundir / "xl2tpd.conf", server_ip=SERVER_IP,
               rundir=f"/run/nm-l2tp-{self.uuid}")  # fmt: skip
        render("nm-l2tp-ppp-options", rundir / "ppp-options", uuid=self.uuid, dir=d)
        # The NSS database of the package (certutil -N at build time), the client's copy.
        nss = self.dir / "nss"
        shutil.rmtree(nss, ignore_errors=True)
        shutil.copytree("/var/lib/ipsec/nss", nss)
        # Debian ships /etc/ipsec.conf and /etc/ipsec.secrets with libreswan; the binds
        # need them to exist.
        for target in ("/etc/ipsec.conf", "/etc/ipsec.secrets"):
            Path(target).touch(exist_ok=True)
        Path("/etc/ipsec.d").mkdir(exist_ok=True)
        # ipsec.service's ExecStart, without systemd.
        self.charon = spawn(
            self.in_ns(["/usr/libexec/ipsec/pluto", "--config", "/etc/ipsec.conf", "--nofork"]),
            self.dir / "pluto.out",
        )
        ctl = self.run / "pluto/pluto.ctl"
        wait_for(lambda: ctl.exists(), 60, f"{self.ns} pluto control socket")
        conf = f"/run/nm-l2tp-{self.uuid}/ipsec.conf"
        if v5:
            add = ["ipsec", "add", self.uuid, "--config", conf, "--verbose"]
            up = ["ipsec", "up", self.uuid]
        else:
            add = ["ipsec", "auto", "--config", conf, "--verbose", "--add", self.uuid]
            up = ["ipsec", "auto", "--up", self.uuid]
        t_ike = time.monotonic()
        with open(self.dir / "ipsec.out", "ab") as out:
            for argv, limit in ((add, 60), (up, 70)):
                p = subprocess.run(self.in_ns(argv), stdout=out, stderr=subprocess.STDOUT,
                                   timeout=limit, check=False)  # fmt: skip
                if p.returncode != 0:
                    tail = (self.dir / "ipsec.out").read_text()[-1500:]
                    raise RuntimeError(f"{' '.join(argv)} -> {p.returncode}: {tail}")
        t_ipsec = time.monotonic() - t_ike
        self.xl2tpd = spawn(
            self.in_ns(
                [
                    "xl2tpd",
                    "-D",
                    "-c",
                    f"/run/nm-l2tp-{self.uuid}/xl2tpd.conf",
                    "-C",
                    f"/run/nm-l2tp-{self.uuid}/xl2tpd-control",
                    "-p",
                    f"/run/nm-l2tp-{self.uuid}/xl2tpd.pid",
                ]
            ),
            self.dir / "xl2tpd.log",
        )
        ppp = wait_for(self.ppp, timeout, f"{self.ns} ppp0 address", step=0.3)
        return {
            "client": self.n,
            "kind": self.kind,
            "ppp": ppp,
            "ipsec_seconds": round(t_ipsec, 2),
            "seconds": round(time.monotonic() - t0, 2),
        }

    def connect_xauth(self, ike: str, esp: str, t0: float) -> dict[str, Any]:
        """A "Cisco IPsec" login on the Libreswan flavour's xauth-psk connection:
        IKEv1 Main Mode PSK, XAuth as nycmesh, a virtual IP from the pool by mode
        config, a tunnel-mode CHILD SA; no L2TP, no PPP."""
        for log in ("charon.log", "charon.out"):
            (self.dir / log).unlink(missing_ok=True)
        self.run.mkdir(parents=True, exist_ok=True)  # bound over /run in its namespace
        d = str(self.dir)
        conf = self.dir / "strongswan-xauth.conf"
        render("client-strongswan-xauth.conf", conf, dir=d, **CRYPTO)
        render(
            "client-swanctl-xauth.conf",
            self.dir / "swanctl-xauth.conf",
            client_ip=self.ip,
            server_ip=SERVER_IP,
            ike_proposal=ike,
            esp_proposal=esp,
            **CLIENT_REKEY,
        )
        self.charon = spawn(
            self.in_ns(["/usr/lib/ipsec/charon"]),
            self.dir / "charon.out",
            env={"STRONGSWAN_CONF": str(conf)},
        )
        wait_for(lambda: (self.run / "charon.vici").exists(), 30, f"{self.ns} VICI socket")
        self.swanctl("--load-all", f"--file {self.dir}/swanctl-xauth.conf")
        self.swanctl("--initiate", "--ike xauth --child net --timeout 60", timeout=70)
        sas = self.swanctl("--list-sas").stdout
        vip = re.search(r"local\s+'[^']*' @ \S+ \[(\d+\.\d+\.\d+\.\d+)\]", sas)
        return {
            "client": self.n,
            "kind": self.kind,
            "vip": vip[1] if vip else None,
            "sas": sas,
            "seconds": round(time.monotonic() - t0, 2),
        }

    def ipsec(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``ipsec ARGS`` in the client's namespace, against its own pluto."""
        return subprocess.run(
            self.in_ns(["ipsec", *args]), capture_output=True, text=True, timeout=timeout
        )

    def _stop(self, sig: signal.Signals) -> dict[str, int | None]:
        pids = self.pids()
        for name in ("pppd", "xl2tpd", "charon", "pluto"):
            if name not in pids:
                continue
            pid = pids[name]
            if pid is not None and alive(pid):
                os.kill(pid, sig)
        for p in (self.charon, self.xl2tpd):
            if p is not None and p.poll() is None and sig == signal.SIGKILL:
                p.kill()
        return pids

    def kill(self) -> dict[str, Any]:
        """A client that vanishes: SIGKILL its daemons; its kernel state goes too."""
        pids = self._stop(signal.SIGKILL)
        for p in (self.charon, self.xl2tpd):
            if p is not None:
                p.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(v) for v in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        # What charon installed in the kernel would outlive it; a vanished laptop's
        # would not.
        sh(f"ip -n {self.ns} xfrm state flush; ip -n {self.ns} xfrm policy flush", check=False)
        return {"client": self.n, "killed": pids}

    def disconnect(self) -> dict[str, Any]:
        """A polite hang-up: L2TP StopCCN, IKE delete, then daemons stopped."""
        t0 = time.monotonic()
        ctl = self.run / "xl2tpd/l2tp-control"
        if self.kind == "libreswan":
            # NetworkManager-l2tp: SIGTERM to xl2tpd (it hangs up the call and the
            # tunnel), then "ipsec whack --delete --name UUID". Its pluto is the
            # system's; the lab stops it afterwards.
            if self.xl2tpd is not None and self.xl2tpd.poll() is None:
                self.xl2tpd.terminate()
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: self.ppp() is None, 20, f"{self.ns} ppp0 down", step=0.3)
            if (self.run / "pluto/pluto.ctl").exists():
                self.ipsec("whack", "--delete", "--name", self.uuid)
                self.ipsec("whack", "--shutdown")
        elif ctl.exists() and self.xl2tpd is not None and self.xl2tpd.poll() is None:
            with open(ctl, "w") as f:
                f.write("d nycmesh\n")
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: self.ppp() is None, 20, f"{self.ns} ppp0 down", step=0.3)
        if self.kind != "libreswan" and (self.run / "charon.vici").exists():
            ike = "xauth" if self.kind == "xauth" else "nycmesh"
            self.swanctl("--terminate", f"--ike {ike} --timeout 20", timeout=30)
        pids = self._stop(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(alive(v) for v in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        self._stop(signal.SIGKILL)
        for p in (self.charon, self.xl2tpd):
            if p is not None:
                p.wait(timeout=10)
        return {"client": self.n, "seconds": round(time.monotonic() - t0, 2)}

    def traffic(self, count: int, size: int, mode: str) -> dict[str, Any]:
        """Send count packets of size payload bytes through ppp0 to the server's end."""
        ppp = self.ppp()
        if ppp is None:
            raise RuntimeError(f"{self.ns} has no ppp session")
        server_if = next(
            (p["ifname"] for p in ppp_ifaces() if p["peer"].split("/")[0] == ppp["local"]),
            None,
        )
        before_s = iface_stats(server_if) if server_if else None
        before_c = iface_stats(ppp["ifname"], self.ns)
        if mode == "ping":
            p = sh(
                f"ip netns exec {self.ns} ping -n -q -c {count} -s {size} -i 0.05 -W 5 {PPP_LOCAL}",
                timeout=120,
                check=False,
            )
            ip_bytes = size + 8 + 20
            out = p.stdout
        elif mode == "udp":
            code = (
                "import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
                f"[s.sendto(b'x'*{size},('{PPP_LOCAL}',9)) for _ in range({count})]"
            )
            p = sh(f'ip netns exec {self.ns} python3 -c "{code}"', timeout=120, check=False)
            ip_bytes = size + 8 + 20
            out = p.stdout + p.stderr
        else:
            raise ValueError(f"unknown traffic mode {mode!r}")
        time.sleep(0.5)
        after_s = iface_stats(server_if) if server_if else None
        after_c = iface_stats(ppp["ifname"], self.ns)
        return {
            "client": self.n,
            "mode": mode,
            "count": count,
            "size": size,
            "ip_bytes_per_packet": ip_bytes,
            "rc": p.returncode,
            "output": out,
            "server_ifname": server_if,
            "server_before": before_s,
            "server_after": after_s,
            "client_ifname": ppp["ifname"],
            "client_before": before_c,
            "client_after": after_c,
        }


class Plain:
    """A client without IPsec: its clear-text L2TP must be refused by policy."""

    ns = "plain"
    dir = STATE / "plain"

    def attempt(self, wait: float) -> dict[str, Any]:
        before = xfrm_stat()
        ppp_before = len(ppp_ifaces())
        run = self.dir / "run"
        (run / "xl2tpd").mkdir(parents=True, exist_ok=True)
        d = str(self.dir)
        render("client-xl2tpd.conf", self.dir / "xl2tpd.conf", server_ip=SERVER_IP, dir=d)
        render("client-options.l2tpd", self.dir / "options.l2tpd", dir=d)
        argv = [
            "ip",
            "netns",
            "exec",
            self.ns,
            "/bin/sh",
            "-c",
            f'mount --bind {run} /run && exec "$@"',
            "sh",
            "xl2tpd",
            "-D",
            "-c",
            str(self.dir / "xl2tpd.conf"),
            "-p",
            "/run/xl2tpd.pid",
            "-C",
            "/run/xl2tpd/l2tp-control",
        ]
        proc = spawn(argv, self.dir / "xl2tpd.log")
        try:
            ctl = run / "xl2tpd/l2tp-control"
            wait_for(lambda: ctl.exists(), 30, "plain xl2tpd control pipe")
            with open(ctl, "w") as pipe:
                pipe.write("c nycmesh\n")
            with contextlib.suppress(TimeoutError):
                wait_for(
                    lambda: xfrm_stat()["XfrmInTmplMismatch"] > before["XfrmInTmplMismatch"],
                    wait,
                    "XfrmInTmplMismatch to rise",
                )
            time.sleep(1.0)
            after = xfrm_stat()
            return {
                "before": before,
                "after": after,
                "ppp_before": ppp_before,
                "ppp_after": len(ppp_ifaces()),
                "plain_ppp": ppp_ifaces(self.ns),
            }
        finally:
            proc.kill()
            proc.wait()
            for f in run.glob("*"):
                if not f.is_dir():
                    f.unlink()


# --- exporter ---------------------------------------------------------------------------


class Exporter:
    log = STATE / "exporter.log"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, args: list[str] | None, extra: list[str] | None) -> dict[str, Any]:
        self.stop()
        argv = args or [
            "--web.listen-address",
            f"0.0.0.0:{EXPORTER_PORT}",
            "--vici.socket",
            "unix:///var/run/charon.vici",
        ]
        argv = [*argv, *(extra or [])]
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-m", "exporter", *argv],
            cwd="/",
            stdout=open(self.log, "ab"),  # noqa: SIM115 (the child keeps it)
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={
                **os.environ,
                "PYTHONPATH": f"{SRC}:/mnt/pydeps",
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            start_new_session=True,
        )
        return {"pid": self.proc.pid, "argv": argv}

    def stop(self) -> dict[str, Any]:
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            rc = self.proc.returncode
        return {"returncode": rc}

    def status(self) -> dict[str, Any]:
        if self.proc is None:
            return {"running": False, "returncode": None}
        rc = self.proc.poll()
        return {"running": rc is None, "returncode": rc, "pid": self.proc.pid}


# --- HTTP -------------------------------------------------------------------------------


SERVER: Server | LibreswanServer = LibreswanServer() if FLAVOUR == "libreswan" else Server()
CLIENTS = {n: Client(n) for n in range(1, NCLIENTS + 1)}
PLAIN = Plain()
EXPORTER = Exporter()


def run_command(req: dict[str, Any]) -> dict[str, Any]:
    argv = list(req["argv"]) if "argv" in req else ["/bin/sh", "-c", req["sh"]]
    if req.get("netns"):
        argv = ["ip", "netns", "exec", req["netns"], *argv]
    t0 = time.monotonic()
    p = subprocess.run(
        argv,
        capture_output=True,
        timeout=float(req.get("timeout", 60)),
        input=base64.b64decode(req["stdin_b64"]) if "stdin_b64" in req else None,
    )
    out: dict[str, Any] = {"rc": p.returncode, "seconds": round(time.monotonic() - t0, 3)}
    if req.get("b64"):
        out["stdout_b64"] = base64.b64encode(p.stdout).decode()
    else:
        out["stdout"] = p.stdout.decode(errors="replace")
    out["stderr"] = p.stderr.decode(errors="replace")
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet console
        pass

    def _reply(self, code: int, body: Any, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw.strip() else {}

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            body = self._body() if method == "POST" else {}
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            result = self._route(method, parts, body)
            if isinstance(result, bytes):
                self._reply(200, result, "text/plain; charset=utf-8")
            else:
                self._reply(200, result)
        except KeyError as e:
            self._reply(404, {"error": f"not found: {e}"})
        except Exception as e:  # the host gets the reason, the guest keeps serving
            self._reply(500, {"error": f"{type(e).__name__}: {e}"})
        finally:
            reap_children()

    def _route(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        match (method, parts):
            case ("GET", ["status"]):
                return {
                    "server": SERVER.status(),
                    "clients": {n: c.status() for n, c in CLIENTS.items()},
                    "exporter": EXPORTER.status(),
                    "xfrm_stat": xfrm_stat(),
                    "uptime": float(Path("/proc/uptime").read_text().split()[0]),
                }
            case ("POST", ["client", n, action]):
                c = CLIENTS[int(n)]
                with c.lock:
                    if action == "connect":
                        return c.connect(
                            body.get("ike_proposal", "aes256-sha256-modp2048"),
                            body.get("esp_proposal", "aes256-sha256"),
                            float(body.get("timeout", 60)),
                            body.get("kind", "strongswan"),
                            body.get("pfs", ""),
                            (body["ppp_user"], body["ppp_password"])
                            if body.get("ppp_user")
                            else None,
                        )
                    if action == "disconnect":
                        return c.disconnect()
                    if action == "kill":
                        return c.kill()
                    if action == "traffic":
                        return c.traffic(
                            int(body.get("count", 10)),
                            int(body.get("size", 1000)),
                            body.get("mode", "ping"),
                        )
                raise KeyError(action)
            case ("POST", ["plain", "l2tp"]):
                return PLAIN.attempt(float(body.get("wait", 15)))
            case ("POST", ["run"]):
                return run_command(body)
            case ("POST", ["exporter", "start"]):
                return EXPORTER.start(body.get("args"), body.get("extra"))
            case ("POST", ["exporter", "stop"]):
                return EXPORTER.stop()
            case ("GET", ["exporter", "log"]):
                return EXPORTER.log.read_bytes() if EXPORTER.log.exists() else b""
            case ("GET", ["log", *rest]):
                p = (STATE / "/".join(rest)).resolve()
                if not str(p).startswith(str(STATE)):
                    raise KeyError("/".join(rest))
                return p.read_bytes()
            case ("POST", ["poweroff"]):
                threading.Timer(0.5, poweroff).start()
                return {"ok": True}
        raise KeyError("/".join(parts))


def poweroff() -> None:
    os.sync()
    Path("/proc/sysrq-trigger").write_text("o")


def setup_nat() -> None:
    """The home router: WAN on the server's LAN, a LAN bridge for the clients behind it,
    forwarding and source NAT (masquerade) to its WAN address."""
    batch = [
        "link set lo up",
        f"addr add {NAT_WAN_IP}/24 dev wan0",
        "link set wan0 up",
        "link add lan0 type bridge",
        f"addr add {NAT_LAN_IP}/24 dev lan0",
        "link set lan0 up",
    ]
    batch += [f"link set v{c.n}h master lan0 up" for c in CLIENTS.values() if c.natted]
    f = STATE / "net-nat.batch"
    f.write_text("\n".join(batch) + "\n")
    sh(f"ip -n {NAT_NS} -batch {f}")
    sh(
        f"ip netns exec {NAT_NS} sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward && "
        "iptables -t nat -A POSTROUTING -o wan0 -j MASQUERADE'"
    )


def setup_network() -> None:
    batch = [
        "link set lo up",
        "link set eth0 up",
        "addr add 10.0.2.15/24 dev eth0",
        "link add br0 type bridge",
        f"addr add {SERVER_IP}/24 dev br0",
        "link set br0 up",
        f"netns add {PLAIN.ns}",
        f"link add v0h type veth peer name eth0 netns {PLAIN.ns}",
        "link set v0h master br0 up",
    ]
    if NATTED:
        batch += [
            f"netns add {NAT_NS}",
            f"link add vnat type veth peer name wan0 netns {NAT_NS}",
            "link set vnat master br0 up",
        ]
    for c in CLIENTS.values():
        batch += c.netns_cmds()
    (STATE / "net.batch").write_text("\n".join(batch) + "\n")
    sh(f"ip -batch {STATE}/net.batch")
    if NATTED:
        setup_nat()
    nets = [(c.ns, c.ip) for c in CLIENTS.values()] + [(PLAIN.ns, PLAIN_IP)]
    for ns, ip in nets:
        f = STATE / f"net-{ns}.batch"
        lines = f"link set lo up\naddr add {ip}/24 dev eth0\nlink set eth0 up\n"
        if ip.startswith("192.168.88."):
            lines += f"route add default via {NAT_LAN_IP}\n"
        f.write_text(lines)
        sh(f"ip -n {ns} -batch {f}")
    # No forwarding between clients: each reaches only the server, like the internet.
    Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")


def main() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    os.chdir("/")
    try:
        setup_network()
        console("network up")
        SERVER.setup()
        console(f"server up ({FLAVOUR}, xl2tpd)")
    except Exception as e:
        console(f"VMLAB-FAIL setup: {type(e).__name__}: {e}")
    httpd = ThreadingHTTPServer(("0.0.0.0", CTL_PORT), Handler)
    httpd.daemon_threads = True
    console(f"VMLAB-READY ctl={CTL_PORT} exporter={EXPORTER_PORT} clients={NCLIENTS}")
    try:
        httpd.serve_forever()
    finally:
        poweroff()


if __name__ == "__main__":
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    socket.setdefaulttimeout(None)
    main()
