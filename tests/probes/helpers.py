"""Test helpers: a probe namespace on a lab's bridge, and /probe served from inside it."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.demo.lab import netns, process
from exporter.demo.lab.base import BRIDGE
from exporter.demo.lab.configs import SUBNET_PREFIX
from exporter.demo.lab.topology import Lab

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


@contextmanager
def probe_namespace(lab: Lab, index: int = 0) -> Iterator[tuple[str, str]]:
    """A namespace on the lab bridge at 10.99.0.(100+index); deleted on exit, always.

    Named with the lab's prefix, so the lab's leftover sweep also finds it after a crash.
    """
    name = f"{lab.prefix}p{index}"
    address = f"10.99.0.{100 + index}"
    try:
        netns.create_namespace(name)
        netns.add_veth(lab.server_ns, f"p{index}", name, "eth0", bridge_a=BRIDGE)
        netns.add_address(name, "eth0", f"{address}/{SUBNET_PREFIX}")
        yield name, address
    finally:
        netns.delete_namespace(name)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass
class ProbeAnswer:
    status: int
    text: str

    def value(self, name: str, **labels: str) -> float | None:
        found = [
            s
            for fam in text_string_to_metric_families(self.text)
            for s in fam.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) <= 1, f"{name}{labels}: {found}"
        return float(found[0].value) if found else None

    def labels(self, name: str) -> dict[str, str]:
        for fam in text_string_to_metric_families(self.text):
            for s in fam.samples:
                if s.name == name:
                    return dict(s.labels)
        raise AssertionError(f"no {name} in\n{self.text}")

    def failed_phase(self) -> str | None:
        phases = [
            s.labels["phase"]
            for fam in text_string_to_metric_families(self.text)
            for s in fam.samples
            if s.name == "probe_failed_phase" and s.value == 1
        ]
        return phases[0] if phases else None


class ProbeServer:
    """serve_probes.py running inside `netns_name`, reachable over a UNIX socket."""

    def __init__(self, netns_name: str | None, modules: dict[str, Any], workdir: Path,
                 probe: dict[str, Any] | None = None,
                 launcher: list[str] | None = None) -> None:  # fmt: skip
        """Inside `netns_name`, or (None) in the test's own namespace, behind `launcher`
        (e.g. an `unshare` that gives the server its own /etc/hosts)."""
        self.config = workdir / "probes.yml"
        doc: dict[str, Any] = {"modules": modules}
        if probe:
            doc["probe"] = probe
        self.config.write_text(yaml.safe_dump(doc))
        self.config.chmod(0o600)
        self.socket = workdir / "probe.sock"
        self.log_path = workdir / "probe-server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        argv = [sys.executable, str(HERE / "serve_probes.py"), str(self.config), str(self.socket)]
        if netns_name is not None:
            argv = netns.exec_argv(netns_name, argv)
        self.proc = subprocess.Popen(
            [*(launcher or []), *argv],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"probe server did not start:\n{self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, query: str, headers: dict[str, str] | None = None,
            timeout: float = 60.0) -> ProbeAnswer:  # fmt: skip
        conn = _UnixHTTPConnection(str(self.socket), timeout)
        try:
            conn.request("GET", query, headers=headers or {})
            resp = conn.getresponse()
            return ProbeAnswer(resp.status, resp.read().decode())
        finally:
            conn.close()

    def probe(self, module: str, target: str, **kw: Any) -> ProbeAnswer:
        answer = self.get(f"/probe?module={module}&target={target}", **kw)
        assert answer.status == 200, answer.text
        return answer

    def close(self) -> None:
        process.stop(self.proc)
        self._log.close()


@contextmanager
def probe_server(netns_name: str, modules: dict[str, Any], workdir: Path,
                 probe: dict[str, Any] | None = None) -> Iterator[ProbeServer]:  # fmt: skip
    server = ProbeServer(netns_name, modules, workdir, probe)
    try:
        yield server
    finally:
        server.close()
