"""What the lab needs from the machine, named as Debian packages for clear messages."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

PLUGIN_DIR = Path("/usr/lib/ipsec/plugins")


@dataclass(frozen=True)
class Requirement:
    """One file or command the lab uses, and the Debian package that ships it."""

    what: str
    package: str
    path: str = ""
    command: str = ""
    module: str = ""

    def present(self) -> bool:
        if self.path:
            return Path(self.path).exists()
        if self.command:
            return shutil.which(self.command) is not None
        return importlib.util.find_spec(self.module) is not None


def _plugin(name: str, package: str) -> Requirement:
    return Requirement(
        f"charon plugin {name}", package, path=str(PLUGIN_DIR / f"libstrongswan-{name}.so")
    )


CORE = (
    Requirement("charon daemon", "strongswan-charon", path="/usr/lib/ipsec/charon"),
    Requirement("swanctl", "strongswan-swanctl", command="swanctl"),
    _plugin("vici", "strongswan-swanctl"),
    _plugin("kernel-libipsec", "libcharon-extra-plugins"),
    _plugin("xauth-generic", "libcharon-extauth-plugins"),
    _plugin("counters", "libcharon-extra-plugins"),
    Requirement("ip (iproute2)", "iproute2", command="ip"),
    Requirement("unshare", "util-linux", command="unshare"),
    Requirement("Python vici package", "python3-vici (or pip install vici)", module="vici"),
)
CERTS = (Requirement("openssl (lab certificates)", "openssl", command="openssl"),)
PROMTOOL = (Requirement("promtool", "prometheus", command="promtool"),)


def missing(*, certs: bool = False, promtool: bool = False) -> list[Requirement]:
    """The requirements not met on this machine."""
    wanted = CORE + (CERTS if certs else ()) + (PROMTOOL if promtool else ())
    return [r for r in wanted if not r.present()]


def problems(*, certs: bool = False, promtool: bool = False) -> list[str]:
    """Human-readable reasons the lab cannot run here (empty when it can)."""
    out = []
    if os.geteuid() != 0:
        out.append("needs root (network namespaces, mount namespaces, raw sockets)")
    gone = missing(certs=certs, promtool=promtool)
    if gone:
        packages = " ".join(sorted({r.package for r in gone}))
        names = ", ".join(r.what for r in gone)
        out.append(f"missing {names}: apt-get install {packages}")
    return out
