"""A real Prometheus server (Debian's `prometheus`) on loopback, for the scrape-path tests
and `demo --with-prometheus`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from exporter.demo.lab import process


class PrometheusError(RuntimeError):
    pass


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape_config(
    targets: list[str],
    interval: str = "1s",
    rule_files: list[str] | None = None,
    alertmanagers: list[str] | None = None,
) -> str:
    """A config scraping the exporter(s) as job `l2tp-ipsec`, sending alerts to
    ``alertmanagers`` (host:port) if given; YAML is a JSON superset."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "l2tp-ipsec",
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "static_configs": [{"targets": targets}],
            }
        ],
    }
    if rule_files:
        config["rule_files"] = rule_files
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]}
    return json.dumps(config, indent=2)


class PrometheusServer:
    """`prometheus` with its own temporary data dir on 127.0.0.1; always stopped on exit."""

    def __init__(self, config: str, port: int | None = None, binary: str = "prometheus") -> None:
        self.config = config
        self.port = port or free_loopback_port()
        self.binary = shutil.which(binary) or binary
        self.workdir = Path(tempfile.mkdtemp(prefix="l2x-prom-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(self.config)
        argv = [
            self.binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]
        log = self.workdir / "prometheus.log"
        ready = f"{self.url}/-/ready"
        self._proc = process.start_until_ready(argv, log, ready, timeout, PrometheusError)
        return self

    def log_text(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until the instant query returns at least one series."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise PrometheusError(f"no result for {expr!r} within {timeout} s")

    def stop(self) -> None:
        if self._proc is not None:
            process.stop(self._proc)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
