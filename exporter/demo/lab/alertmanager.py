"""A real Alertmanager (Debian's `prometheus-alertmanager`) on loopback and a webhook
receiver that records what it delivers, for the alert-delivery tests and
`demo --with-prometheus`.

`local_config` turns the shipped alerts/alertmanager.example.yml into one whose receivers
all post to the local recorder (each receiver keeps its name and its send_resolved), with
the routes, grouping and inhibitions as shipped and only the timings shortened.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from exporter.demo.lab import process
from exporter.demo.lab.prometheus import free_loopback_port

#: Debian's name first; upstream's tarball calls it `alertmanager`.
BINARIES = ("prometheus-alertmanager", "alertmanager")
#: Kinds of receiver config and whether they send resolved notifications by default.
SEND_RESOLVED_DEFAULT = {
    "webhook_configs": True,
    "email_configs": False,
    "slack_configs": False,
    "pagerduty_configs": True,
    "opsgenie_configs": True,
    "telegram_configs": True,
    "msteams_configs": True,
}


class AlertmanagerError(RuntimeError):
    pass


def find_binary() -> str | None:
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _send_resolved(receiver: dict[str, Any]) -> bool:
    """Whether a shipped receiver tells of resolved alerts (any of its configs does)."""
    for kind, configs in receiver.items():
        if kind.endswith("_configs"):
            for config in configs or []:
                if config.get("send_resolved", SEND_RESOLVED_DEFAULT.get(kind, False)):
                    return True
    return False


def local_config(
    example: dict[str, Any],
    webhook_base: str,
    *,
    group_wait: str | None = None,
    group_interval: str | None = None,
    repeat_interval: str | None = None,
) -> dict[str, Any]:
    """``example`` (a parsed Alertmanager config) with every receiver replaced by a webhook
    to ``{webhook_base}/{receiver name}`` and the given timings set on every route that
    has them (the root always); routes, matchers, grouping and inhibitions untouched."""
    config = copy.deepcopy(example)
    config["receivers"] = [
        {
            "name": receiver["name"],
            "webhook_configs": [
                {
                    "url": f"{webhook_base}/{receiver['name']}",
                    "send_resolved": _send_resolved(receiver),
                }
            ],
        }
        for receiver in example.get("receivers", [])
    ]
    timings = {
        "group_wait": group_wait,
        "group_interval": group_interval,
        "repeat_interval": repeat_interval,
    }

    def shorten(route: dict[str, Any], root: bool) -> None:
        for key, value in timings.items():
            if value is not None and (root or key in route):
                route[key] = value
        for child in route.get("routes", []) or []:
            shorten(child, False)

    shorten(config["route"], True)
    return config


# -- the receiver ------------------------------------------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Notification:
    """One POST from Alertmanager: which receiver (the URL's last part) and its JSON."""

    receiver: str
    body: dict[str, Any]
    at: float

    @property
    def status(self) -> str:
        return str(self.body.get("status", ""))

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The alerts that are JSON objects (anything else a sender put there is left out:
        the demo prints what it can, it does not fail on a stray POST)."""
        alerts = self.body.get("alerts", [])
        return [a for a in alerts if isinstance(a, dict)] if isinstance(alerts, list) else []

    @property
    def alertnames(self) -> set[str]:
        return {str(_mapping(a.get("labels")).get("alertname", "")) for a in self.alerts}

    def summary_line(self) -> str:
        labels = _mapping(self.body.get("commonLabels"))
        names = ", ".join(sorted(self.alertnames))
        summaries = "; ".join(
            sorted({str(_mapping(a.get("annotations")).get("summary", "")) for a in self.alerts})
        )
        where = labels.get("instance", "")
        head = f"[{self.status.upper()}:{len(self.alerts)}] {names} {where}"
        return f"{head} to {self.receiver}: {summaries}"


class WebhookRecorder:
    """An HTTP server on 127.0.0.1 that records every JSON POST it gets (Alertmanager's
    webhook format) and answers 200; ``on_notification`` is called for each."""

    def __init__(self, on_notification: Callable[[Notification], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._received: list[Notification] = []
        self.on_notification = on_notification
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                if not isinstance(body, dict):  # not Alertmanager's: kept as text
                    body = {"unparsed": raw.decode(errors="replace")}
                recorder._record(Notification(self.path.rsplit("/", 1)[-1], body, time.time()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="webhook-recorder", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def _record(self, notification: Notification) -> None:
        with self._lock:
            self._received.append(notification)
        if self.on_notification is not None:
            self.on_notification(notification)

    def received(self) -> list[Notification]:
        with self._lock:
            return list(self._received)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> WebhookRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- the server --------------------------------------------------------------------------------


class AlertmanagerServer:
    """Alertmanager with its own temporary storage on 127.0.0.1, clustering off (no gossip
    port on every address); always stopped, and its folder removed, on exit."""

    def __init__(self, config: str, port: int | None = None, binary: str | None = None) -> None:
        self.config = config
        self.port = port or free_loopback_port()
        self.binary = binary or find_binary() or BINARIES[0]
        self.workdir = Path(tempfile.mkdtemp(prefix="l2x-am-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> AlertmanagerServer:
        config_file = self.workdir / "alertmanager.yml"
        config_file.write_text(self.config)
        argv = [
            self.binary,
            f"--config.file={config_file}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
        ]
        log = self.workdir / "alertmanager.log"
        ready = f"{self.url}/-/ready"
        self._proc = process.start_until_ready(argv, log, ready, timeout, AlertmanagerError)
        return self

    def log_text(self) -> str:
        path = self.workdir / "alertmanager.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts it holds now (API v2), with their state (active, suppressed)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as response:
            alerts: list[dict[str, Any]] = json.load(response)
            return alerts

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Send alerts as Prometheus does (API v2)."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def stop(self) -> None:
        if self._proc is not None:
            process.stop(self._proc)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> AlertmanagerServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
