"""Network namespaces, veth pairs and bridges for the lab, driven through iproute2.

Every name a lab creates starts with a per-instance prefix (``l2x-<id>-``), so that parallel
labs never collide and leftovers of a crashed run can be found and removed by prefix.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

LAB_PREFIX = "l2x-"
# Each lab's work folder holds the pid that owns it: leftovers are only those whose owner is
# gone, so cleaning up never tears down a lab that another process is running.
OWNER_FILE = "owner.pid"


class NetnsError(RuntimeError):
    """An iproute2 command failed; the message carries its stderr."""


def new_lab_id() -> str:
    """A short random id; four hex digits keep interface and namespace names short."""
    return secrets.token_hex(2)


def run(args: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
    """Run a command, return its stdout; raise NetnsError with stderr when it fails."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """``ip [-n NETNS] ARGS``."""
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run([*prefix, *args], check=check)


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside ``netns`` (for Popen)."""
    return ["ip", "netns", "exec", netns, *argv]


def run_in(netns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
    """Run a command inside a namespace and return its stdout."""
    return run(exec_argv(netns, argv), check=check, timeout=timeout)


def list_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    # Lines look like "name (id: 3)" or just "name".
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def create_namespace(name: str) -> None:
    """Create a namespace with loopback up (charon and ping need lo)."""
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def namespace_pids(name: str) -> list[int]:
    out = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def delete_namespace(name: str) -> None:
    """SIGKILL whatever still runs in the namespace, then delete it (idempotent).

    Deleting the namespace also removes its veths, bridges, TUN devices and routes.
    """
    for pid in namespace_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if name in list_namespaces():
        ip("netns", "delete", name, check=False)


def add_bridge(netns: str, name: str) -> None:
    ip("link", "add", name, "type", "bridge", netns=netns)
    ip("link", "set", name, "up", netns=netns)


def add_veth(
    netns_a: str, name_a: str, netns_b: str, name_b: str, *, bridge_a: str | None = None
) -> None:
    """A veth pair created directly inside the two namespaces (never in the root one),
    optionally enslaving the first end to a bridge."""
    ip(
        "link",
        "add",
        name_a,
        "type",
        "veth",
        "peer",
        "name",
        name_b,
        "netns",
        netns_b,
        netns=netns_a,
    )
    if bridge_a:
        ip("link", "set", name_a, "master", bridge_a, netns=netns_a)
    ip("link", "set", name_a, "up", netns=netns_a)
    ip("link", "set", name_b, "up", netns=netns_b)


def add_address(netns: str, dev: str, cidr: str) -> None:
    ip("addr", "add", cidr, "dev", dev, netns=netns)


def add_loopback_address(netns: str, address: str) -> None:
    """A /32 on lo: the address that tunnelled traffic is sent to."""
    add_address(netns, "lo", f"{address}/32")


def lab_workdir_glob(lab_id: str = "*") -> str:
    """Pattern of a lab's work folders under the temp dir (``/tmp/l2x-<id>-XXXX``)."""
    return f"{LAB_PREFIX}{lab_id}-*"


def claim(workdir: Path) -> None:
    """Record in the lab's work folder that this process owns the lab."""
    (workdir / OWNER_FILE).write_text(f"{os.getpid()}\n")


def _pid_alive(pid: int) -> bool:
    # A killed owner can linger as a zombie until reaped; it owns nothing any more.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _owner_alive(lab_id: str) -> bool:
    for owner in Path(tempfile.gettempdir()).glob(f"{lab_workdir_glob(lab_id)}/{OWNER_FILE}"):
        try:
            pid = int(owner.read_text().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(pid):
            return True
    return False


_ID_RE = re.compile(rf"^{re.escape(LAB_PREFIX)}([0-9a-f]+)-")


def remove_leftovers(*, include_live: bool = False) -> list[str]:
    """Delete lab namespaces (killing what runs in them) and work folders whose owning
    process is gone; return what was removed.

    ``include_live`` also removes labs of live processes (a manual "clean everything").
    """
    removed: list[str] = []
    for name in list_namespaces():
        m = _ID_RE.match(name)
        if m and (include_live or not _owner_alive(m.group(1))):
            delete_namespace(name)
            removed.append(name)
    for folder in Path(tempfile.gettempdir()).glob(lab_workdir_glob()):
        m = _ID_RE.match(folder.name)
        if m and folder.is_dir() and (include_live or not _owner_alive(m.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed
