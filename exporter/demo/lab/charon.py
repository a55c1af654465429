"""One real charon daemon in its own network namespace and private mount namespace."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from exporter.demo.lab import netns
from exporter.demo.lab.configs import Kernel, strongswan_conf

CHARON_BIN = "/usr/lib/ipsec/charon"
SWANCTL_BIN = "swanctl"


class CharonError(RuntimeError):
    """charon did not start, or a swanctl/VICI command against it failed."""


BINARY_KEY = "$base64"


def decode(value: Any) -> Any:
    """VICI answers as plain JSON-able data: bytes become str, recursively.

    Bytes that are not UTF-8 (a certificate's DER ``data``) become ``{"$base64": "..."}``.
    """
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {BINARY_KEY: base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {decode(k): decode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [decode(v) for v in value]
    return value


class Charon:
    """A charon with its own strongswan.conf, VICI socket, log file and swanctl folder.

    Everything lives in ``workdir``: ``strongswan.conf``, ``charon.vici``, ``charon.log``,
    ``run/`` (bind-mounted over /run, because the pid file path is hard-wired) and
    ``swanctl/`` (``SWANCTL_DIR``: swanctl.conf plus x509/ etc.).
    """

    def __init__(
        self, name: str, netns_name: str, workdir: Path, *, kernel: Kernel, server: bool
    ) -> None:
        self.name = name
        self.netns = netns_name
        self.workdir = workdir
        self.kernel: Kernel = kernel
        self.server = server
        self._proc: subprocess.Popen[bytes] | None = None
        self._loaded: tuple[str, dict[str, bytes]] | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / "charon.vici"

    @property
    def uri(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "charon.log"

    @property
    def swanctl_dir(self) -> Path:
        return self.workdir / "swanctl"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "STRONGSWAN_CONF": str(self.workdir / "strongswan.conf"),
            "SWANCTL_DIR": str(self.swanctl_dir),
        }

    def start(self, timeout: float = 10.0) -> None:
        """Start charon and wait (wall clock) until its VICI socket answers."""
        if self.running():
            return
        (self.workdir / "run").mkdir(parents=True, exist_ok=True)
        self.swanctl_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "strongswan.conf").write_text(
            strongswan_conf(self.workdir, kernel=self.kernel, server=self.server)
        )
        # A stale socket from a killed run would make the wait below succeed too early.
        self.socket_path.unlink(missing_ok=True)
        script = f'mount --bind "{self.workdir}/run" /run && exec "{CHARON_BIN}"'
        argv = netns.exec_argv(
            self.netns, ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        )
        with open(self.workdir / "charon.stderr", "ab") as err:
            self._proc = subprocess.Popen(
                argv,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,  # Ctrl-C in a demo terminal must not hit charon first
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise CharonError(
                    f"charon {self.name} exited with {self._proc.returncode}:\n"
                    + self.log_text()[-3000:]
                )
            if self._socket_answers():
                return
            time.sleep(0.05)
        self.kill()
        raise CharonError(f"charon {self.name}: no VICI socket after {timeout}s")

    def _socket_answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            with self.session(timeout=1.0) as s:
                s.version()
        except OSError:
            return False
        return True

    @contextmanager
    def session(self, timeout: float = 10.0) -> Iterator[Any]:
        """A blocking ``vici.Session`` on this charon's socket."""
        # Imported here so that requirements.problems() can report a missing vici package.
        import vici

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.socket_path))
            yield vici.Session(sock)
        finally:
            sock.close()

    def swanctl(self, *args: str, timeout: float = 30.0, check: bool = True) -> str:
        """Run ``swanctl --uri <this charon> ARGS`` and return its stdout."""
        proc = subprocess.run(
            [SWANCTL_BIN, *args, "--uri", self.uri],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise CharonError(
                f"swanctl {' '.join(args)} on {self.name} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return proc.stdout

    def load(self, swanctl_conf: str, files: Mapping[str, bytes] | None = None) -> None:
        """Write swanctl.conf (plus e.g. ``x509/cert.pem``) and load all of it.

        Remembered, so :meth:`restart` can load it again (charon keeps no config).
        """
        files = dict(files or {})
        for rel, data in files.items():
            path = self.swanctl_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        conf = self.swanctl_dir / "swanctl.conf"
        conf.write_text(swanctl_conf)
        # The file holds the PSK: keep it readable only by root, like /etc/swanctl.
        conf.chmod(0o600)
        self.swanctl("--load-all", "--noprompt", "--file", str(conf))
        self._loaded = (swanctl_conf, files)

    def initiate(self, child: str, ike: str, timeout: float = 15.0) -> None:
        """Bring ``ike``/``child`` up and wait until it is up (or failed)."""
        self.swanctl(
            "--initiate",
            "--child",
            child,
            "--ike",
            ike,
            "--timeout",
            str(int(timeout)),
            timeout=timeout + 5,
        )

    def terminate(self, ike: str, timeout: float = 15.0) -> None:
        self.swanctl(
            "--terminate",
            "--ike",
            ike,
            "--timeout",
            str(int(timeout)),
            "--force",
            timeout=timeout + 5,
        )

    def call(self, command: str, args: Mapping[str, str] | None = None) -> Any:
        """One VICI request, decoded to plain str/list/dict."""
        with self.session() as s:
            return decode(s.request(command, dict(args) if args else None))

    def streamed(self, command: str, event: str, args: Mapping[str, str] | None = None) -> Any:
        """One streamed VICI command: the decoded list of its events."""
        with self.session() as s:
            return [
                decode(e) for e in s.streamed_request(command, event, dict(args) if args else None)
            ]

    def list_sas(self) -> list[dict[str, Any]]:
        """``list-sas`` as a list of ``{ike_name: ike_sa}`` events."""
        result: list[dict[str, Any]] = self.streamed("list-sas", "list-sa")
        return result

    def child_bytes(self) -> tuple[int, int]:
        """(bytes-in, bytes-out) summed over this charon's installed CHILD_SAs."""
        total_in = total_out = 0
        for event in self.list_sas():
            for ike in event.values():
                for child in ike.get("child-sas", {}).values():
                    total_in += int(child.get("bytes-in", 0))
                    total_out += int(child.get("bytes-out", 0))
        return total_in, total_out

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if not self._proc:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: the "client died" case. The socket file stays behind, as in real life."""
        if not self._proc:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def restart(self, *, hard: bool = False, reload: bool = True) -> None:
        """Stop (or kill) and start again on the same socket path; reload the config."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()
        if reload and self._loaded:
            self.load(*self._loaded)
