"""A real xl2tpd LNS in a lab namespace (user-space mode: L2TP control works, PPP cannot)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exporter.demo.lab import netns

XL2TPD = "/usr/sbin/xl2tpd"
LNS_HOST_NAME = "lab-lns"


def xl2tpd_conf(workdir: Path, listen: str) -> str:
    return f"""\
[global]
listen-addr = {listen}
port = 1701
access control = no
auth file = {workdir}/l2tp-secrets

[lns default]
ip range = 10.99.150.10-10.99.150.50
local ip = 10.99.150.1
require chap = yes
refuse pap = yes
require authentication = yes
name = {LNS_HOST_NAME}
hostname = {LNS_HOST_NAME}
pppoptfile = {workdir}/options.xl2tpd
length bit = yes
"""


PPP_OPTIONS = """\
require-mschap-v2
refuse-pap
refuse-chap
refuse-mschap
auth
mtu 1280
mru 1280
"""


class Xl2tpd:
    def __init__(self, netns_name: str, workdir: Path, listen: str = "0.0.0.0") -> None:
        self.netns = netns_name
        self.workdir = workdir
        self.listen = listen
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "xl2tpd.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "xl2tpd.conf").write_text(xl2tpd_conf(self.workdir, self.listen))
        (self.workdir / "l2tp-secrets").write_text("")
        (self.workdir / "l2tp-secrets").chmod(0o600)
        (self.workdir / "options.xl2tpd").write_text(PPP_OPTIONS)
        argv = [
            XL2TPD, "-D",
            "-c", str(self.workdir / "xl2tpd.conf"),
            "-s", str(self.workdir / "l2tp-secrets"),
            "-p", str(self.workdir / "xl2tpd.pid"),
            "-C", str(self.workdir / "l2tp-control"),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                netns.exec_argv(self.netns, argv),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while "Listening on IP address" not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"xl2tpd did not start:\n{self.log_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@contextmanager
def running_xl2tpd(netns_name: str, workdir: Path, listen: str = "0.0.0.0") -> Iterator[Xl2tpd]:
    lns = Xl2tpd(netns_name, workdir, listen)
    try:
        lns.start()
        yield lns
    finally:
        lns.stop()
