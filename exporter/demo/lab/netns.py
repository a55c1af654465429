"""Network namespaces, veth pairs and bridges for the lab, driven through iproute2.

Every name a lab creates starts with a per-instance prefix (``l2x-<id>-``), so that parallel
labs never collide and what a crashed lab left can be found by prefix. Only this
process's own leftovers are removed: on a machine shared by several runs, a namespace
whose owner merely looks gone from here may still be another run's lab.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

LAB_PREFIX = "l2x-"
# Each lab's work folder holds the pid and start time of the process that owns it: a lab
# start removes only its own process's leftovers (a lab whose close could not delete
# everything), never a lab that is open, here or in another process.
OWNER_FILE = "owner.pid"
#: Work folders of the labs this process has open (claimed and not released).
_open: set[Path] = set()

log = logging.getLogger("exporter.demo.lab")


class NetnsError(RuntimeError):
    """An iproute2 command failed; the message carries its stderr."""


def new_lab_id() -> str:
    """A short random id no namespace or work folder uses yet; four hex digits keep
    interface and namespace names short."""
    taken = _ids(list_namespaces()) | _ids(p.name for p in _workdirs())
    while True:
        lab_id = secrets.token_hex(2)
        if lab_id not in taken:
            return lab_id


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
    """Record in the lab's work folder that this process owns the lab, and that it is open."""
    (workdir / OWNER_FILE).write_text(_this_process())
    _open.add(workdir)


def release(workdir: Path) -> None:
    """The lab is closed: what is left of it is a leftover for this process's next start."""
    _open.discard(workdir)


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" if gone): with the pid, it
    names one process, also after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def _this_process() -> str:
    pid = os.getpid()
    return f"{pid} {_start_time(pid)}\n"


def _pid_alive(pid: int) -> bool:
    # A killed owner can linger as a zombie until reaped; it owns nothing any more.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _claims(lab_id: str) -> dict[Path, str]:
    claims = {}
    for folder in _workdirs(lab_id):
        with contextlib.suppress(OSError):
            claims[folder] = (folder / OWNER_FILE).read_text()
    return claims


def _ours(lab_id: str) -> bool:
    """Whether `lab_id` is a closed lab of this very process (pid and start time)."""
    me = _this_process().split()
    return any(
        text.split() == me and folder not in _open for folder, text in _claims(lab_id).items()
    )


def _owner_alive(lab_id: str) -> bool:
    for text in _claims(lab_id).values():
        pid = text.split()[0] if text.split() else ""
        if pid.isdigit() and _pid_alive(int(pid)):
            return True
    return False


_ID_RE = re.compile(rf"^{re.escape(LAB_PREFIX)}([0-9a-f]+)-")


def _ids(names: Iterable[str]) -> set[str]:
    return {m.group(1) for name in names if (m := _ID_RE.match(name))}


def _workdirs(lab_id: str = "*") -> list[Path]:
    return [p for p in Path(tempfile.gettempdir()).glob(lab_workdir_glob(lab_id)) if p.is_dir()]


def remove_leftovers() -> list[str]:
    """Delete the namespaces (killing what runs in them) and work folders of labs this
    process made and closed, but could not delete; return what was removed.

    Other runs' labs are left alone, also when their owner looks gone: one line names
    them, for a human to delete with `ip netns delete` once nothing uses them.
    """
    removed: list[str] = []
    others: list[str] = []
    for name in list_namespaces():
        m = _ID_RE.match(name)
        if m is None:
            continue
        if _ours(m.group(1)):
            delete_namespace(name)
            removed.append(name)
        elif not _owner_alive(m.group(1)):
            others.append(name)
    for folder in _workdirs():
        m = _ID_RE.match(folder.name)
        if m and _ours(m.group(1)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    if others:
        log.warning(
            "lab namespaces of other runs whose owner looks gone were left alone "
            "(delete them by hand if nothing uses them): %s",
            ", ".join(others),
        )
    return removed
