"""Host-side driver for the vmlab guest: boot QEMU, wait for the guest, drive it.

    with Guest() as g:
        g.connect(1)
        print(g.scrape())

The guest is booted under software emulation from the cached image (see build.py),
with the checkout and the dependency wheels shared read-only over 9p. Two host
forwards on 127.0.0.1 reach the guest's control server and the exporter; the guest
has no other way out (``restrict=on``). QEMU is always killed on exit; the serial
log is kept and its tail is put into every error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if TYPE_CHECKING:  # mypy checks the package import; a script finds build.py next to it
    from . import build
else:
    try:
        from . import build
    except ImportError:  # run as a script: python3 tests/vmlab/guest.py
        import build

CTL_PORT = 8000
EXPORTER_PORT = 9814
QEMU = "qemu-system-x86_64"
FLAVOURS = ("strongswan", "libreswan")


class GuestError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Guest:
    """One booted guest. Use as a context manager; see the module docstring."""

    def __init__(
        self,
        clients: int = 3,
        boot_timeout: float = 180.0,
        log_dir: Path | None = None,
        dpd_delay: str = "3s",
        dpd_timeout: str = "9s",
        memory_mb: int = 1024,
        release: str | None = None,
        flavour: str = "strongswan",
        natted: int = 0,
    ) -> None:
        """``release``: a key of build.RELEASES (default: $VMLAB_RELEASE or bookworm);
        ``flavour``: the server the guest runs, ``strongswan`` or ``libreswan``;
        ``natted``: how many of the clients (the last ones) sit behind the NAT router."""
        if flavour not in FLAVOURS:
            raise ValueError(f"unknown flavour {flavour!r} (one of {', '.join(FLAVOURS)})")
        self.release = build.release(release).suite
        self.flavour = flavour
        self.natted = natted
        self.clients = clients
        self.boot_timeout = boot_timeout
        self.dpd = (dpd_delay, dpd_timeout)
        self.memory_mb = memory_mb
        # One vCPU: with two, multi-threaded TCG races the kernel's live text patching
        # (Linux 6.12 panicked with "Oops: int3" in sched_clock_cpu when it flipped a
        # static key at boot in a CI run); one vCPU cannot race itself.
        self.cpus = int(os.environ.get("VMLAB_CPUS", "1"))
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="vmlab-"))
        self.serial_log = self.log_dir / "serial.log"
        self.qemu_log = self.log_dir / "qemu.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl_port = 0
        self.exporter_port = 0
        self.boot_seconds: float | None = None
        self.image_dir: Path | None = None

    # --- lifecycle -------------------------------------------------------------------

    def command(self, image: Path, pydeps: Path) -> list[str]:
        fwd = (
            f"hostfwd=tcp:127.0.0.1:{self.ctl_port}-:{CTL_PORT},"
            f"hostfwd=tcp:127.0.0.1:{self.exporter_port}-:{EXPORTER_PORT}"
        )
        append = (
            "console=ttyS0 panic=-1 quiet loglevel=3 "
            f"vmlab.clients={self.clients} vmlab.dpd_delay={self.dpd[0]} "
            f"vmlab.dpd_timeout={self.dpd[1]} vmlab.flavour={self.flavour} "
            f"vmlab.natted={self.natted}"
        )
        return [
            QEMU,
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            str(self.cpus),
            "-m",
            str(self.memory_mb),
            "-nographic",
            "-no-reboot",
            "-serial",
            f"file:{self.serial_log}",
            "-monitor",
            "none",
            "-kernel",
            str(image / "vmlinuz"),
            "-initrd",
            str(image / "initrd.img"),
            "-append",
            append,
            "-drive",
            f"file={image / 'root.ext4'},format=raw,if=virtio,snapshot=on",
            "-netdev",
            f"user,id=n0,restrict=on,{fwd}",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-virtfs",
            f"local,path={REPO},mount_tag=src,security_model=none,readonly=on",
            "-virtfs",
            f"local,path={pydeps / 'site'},mount_tag=pydeps,security_model=none,readonly=on",
        ]

    def start(self) -> Guest:
        if shutil.which(QEMU) is None:
            raise GuestError(f"{QEMU} not found (apt-get install qemu-system-x86)")
        image, pydeps = build.ensure(self.release)
        self.image_dir = image
        self.ctl_port, self.exporter_port = free_port(), free_port()
        while self.exporter_port == self.ctl_port:
            self.exporter_port = free_port()
        self.serial_log.write_bytes(b"")
        t0 = time.monotonic()
        with open(self.qemu_log, "wb") as qlog:
            self.proc = subprocess.Popen(
                self.command(image, pydeps),
                stdin=subprocess.DEVNULL,
                stdout=qlog,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_serial("VMLAB-READY", self.boot_timeout)
            if "VMLAB-FAIL" in self.serial():
                raise GuestError("guest setup failed")
            self.boot_seconds = round(time.monotonic() - t0, 1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        self.proc = None

    def __enter__(self) -> Guest:
        return self.start()

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- serial console --------------------------------------------------------------

    def serial(self) -> str:
        try:
            return self.serial_log.read_bytes().decode(errors="replace")
        except OSError:
            return ""

    def serial_tail(self, lines: int = 60) -> str:
        return "\n".join(self.serial().splitlines()[-lines:])

    def wait_serial(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.serial()
            if marker in text:
                return
            if "VMLAB-FAIL" in text or "Kernel panic" in text:
                break
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.2)
        qemu = self.qemu_log.read_text(errors="replace") if self.qemu_log.exists() else ""
        raise GuestError(
            f"no {marker!r} on the serial console after {timeout:.0f} s\n"
            f"--- qemu ---\n{qemu[-2000:]}\n--- serial (tail) ---\n{self.serial_tail()}"
        )

    # --- control channel -------------------------------------------------------------

    def _http(self, method: str, path: str, body: Any = None, timeout: float = 120) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.ctl_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return bytes(r.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise GuestError(f"{method} {path} -> {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise GuestError(
                f"{method} {path}: {e}\n--- serial (tail) ---\n{self.serial_tail()}"
            ) from None

    def get(self, path: str, timeout: float = 60) -> Any:
        return json.loads(self._http("GET", path, timeout=timeout))

    def post(self, path: str, body: Any = None, timeout: float = 120) -> Any:
        return json.loads(self._http("POST", path, body or {}, timeout=timeout))

    def status(self) -> dict[str, Any]:
        return dict(self.get("/status"))

    def connect(self, n: int, timeout: float = 90, **kw: Any) -> dict[str, Any]:
        return dict(self.post(f"/client/{n}/connect", {"timeout": timeout, **kw}, timeout + 30))

    def disconnect(self, n: int) -> dict[str, Any]:
        return dict(self.post(f"/client/{n}/disconnect"))

    def kill(self, n: int) -> dict[str, Any]:
        return dict(self.post(f"/client/{n}/kill"))

    def traffic(self, n: int, count: int = 20, size: int = 1000, mode: str = "ping") -> Any:
        return self.post(f"/client/{n}/traffic", {"count": count, "size": size, "mode": mode})

    def plain_l2tp(self, wait: float = 20) -> dict[str, Any]:
        return dict(self.post("/plain/l2tp", {"wait": wait}, timeout=wait + 60))

    def run(
        self,
        cmd: str | list[str],
        netns: str | None = None,
        timeout: float = 60,
        b64: bool = False,
        check: bool = True,
    ) -> dict[str, Any]:
        """Run a command in the guest (a shell line or an argv list)."""
        body: dict[str, Any] = {"timeout": timeout, "b64": b64}
        body["sh" if isinstance(cmd, str) else "argv"] = cmd
        if netns:
            body["netns"] = netns
        r = dict(self.post("/run", body, timeout=timeout + 30))
        if check and r["rc"] != 0:
            raise GuestError(f"{cmd!r} -> rc {r['rc']}: {r.get('stderr', '')}")
        return r

    def sh(self, cmd: str, **kw: Any) -> str:
        return str(self.run(cmd, **kw)["stdout"])

    def log(self, name: str) -> str:
        return self._http("GET", f"/log/{name}").decode(errors="replace")

    # --- exporter --------------------------------------------------------------------

    def start_exporter(
        self, args: list[str] | None = None, extra: list[str] | None = None
    ) -> dict[str, Any]:
        """Start ``python3 -m exporter`` in the guest (default flags, or ``args``)."""
        return dict(self.post("/exporter/start", {"args": args, "extra": extra}))

    def stop_exporter(self) -> dict[str, Any]:
        return dict(self.post("/exporter/stop"))

    def exporter_log(self) -> str:
        return self._http("GET", "/exporter/log").decode(errors="replace")

    def scrape(self, path: str = "/metrics", timeout: float = 30) -> str:
        url = f"http://127.0.0.1:{self.exporter_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bytes(r.read()).decode()

    def wait_exporter(self, timeout: float = 300) -> str:
        """Scrape until the exporter answers; the exporter's log on failure.

        The first start in a fresh guest compiles the exporter over 9p under TCG: 65-120 s
        on an idle host, past 90 s on a busy CI host (test_guest_stack, the first guest
        module, errored so), hence 300 s."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                return self.scrape()
            except (urllib.error.URLError, OSError, ConnectionError) as e:
                last = e
            st = self.status()["exporter"]
            if not st["running"]:
                raise GuestError(
                    f"exporter exited with {st['returncode']}\n{self.exporter_log()[-3000:]}"
                )
            time.sleep(0.5)
        raise GuestError(
            f"exporter did not answer in {timeout:.0f} s ({last})\n{self.exporter_log()[-3000:]}"
        )

    def poweroff(self) -> None:
        with contextlib.suppress(GuestError):
            self.post("/poweroff", timeout=10)


def main() -> int:
    """Boot a guest by hand, connect the clients, and keep it up until Ctrl-C."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--release", choices=sorted(build.RELEASES), default=None)
    ap.add_argument("--flavour", choices=FLAVOURS, default="strongswan")
    ap.add_argument("--natted", type=int, default=0, help="clients behind the NAT router")
    ap.add_argument("--connect", action="store_true", help="connect every client")
    ap.add_argument("--exporter", action="store_true", help="start the exporter")
    args = ap.parse_args()
    with Guest(
        clients=args.clients, release=args.release, flavour=args.flavour, natted=args.natted
    ) as g:
        print(f"booted in {g.boot_seconds} s; serial log {g.serial_log}")
        print(f"control: http://127.0.0.1:{g.ctl_port}/status")
        print(f"exporter: http://127.0.0.1:{g.exporter_port}/metrics")
        if args.connect:
            for n in range(1, args.clients + 1):
                print(json.dumps(g.connect(n)))
        if args.exporter:
            g.start_exporter()
        print("Ctrl-C to stop")
        try:
            while g.proc is not None and g.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
