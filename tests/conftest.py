"""Shared fixtures: real charon labs (exporter.demo.lab) and the exporter as a real subprocess.

Lab fixtures skip with the reason when the machine cannot run them (not root, charon
missing); CI runs as root with the packages installed, so there they run.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from exporter.demo.lab import process

REPO = Path(__file__).resolve().parent.parent

# Labs and exporters alive right now: when a test fails, their logs go into its report.
_LIVE_LABS: list[Any] = []
_LIVE_EXPORTERS: list[ExporterProcess] = []


# -- failure reports ---------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for lab in _LIVE_LABS:
            for name, text in lab.logs().items():
                report.sections.append((f"charon {name} log (lab {lab.id})", text[-20000:]))
        for exp in _LIVE_EXPORTERS:
            report.sections.append((f"exporter {exp.url} stderr", exp.stderr_text()[-20000:]))
    return report


# -- lab ---------------------------------------------------------------------------------------


def _lab_skip_reason() -> str | None:
    from exporter.demo.lab import requirements

    problems = requirements.problems(certs=True)
    return "lab: " + "; ".join(problems) if problems else None


@pytest.fixture(scope="session")
def lab_available() -> None:
    """Skip (with the reason) when this machine cannot run real charons in namespaces."""
    reason = _lab_skip_reason()
    if reason:
        pytest.skip(reason)


LabFactory = Callable[..., Any]


def _lab_factory() -> Iterator[LabFactory]:
    from exporter.demo.lab.topology import Lab

    made: list[Lab] = []

    def make(*args: Any, **kwargs: Any) -> Lab:
        lab = Lab(*args, **kwargs)
        made.append(lab)
        _LIVE_LABS.append(lab)
        return lab.start()

    try:
        yield make
    finally:
        for lab in made:
            lab.close()
            _LIVE_LABS.remove(lab)


@pytest.fixture
def make_lab(lab_available: None) -> Iterator[LabFactory]:
    """``make_lab(clients, server_kernel=..., with_cert=..., connect=...)`` -> started
    ``exporter.demo.lab.topology.Lab``; every lab made is torn down after the test."""
    yield from _lab_factory()


@pytest.fixture(scope="module")
def make_module_lab(lab_available: None) -> Iterator[LabFactory]:
    """Like ``make_lab`` but torn down after the module: only for tests that read."""
    yield from _lab_factory()


@pytest.fixture(scope="module")
def ra_lab(make_module_lab: LabFactory) -> Any:
    """Read-only remote-access lab: 3 IKEv1 PSK+XAuth clients (``nycmesh``), 1 IKEv2 PSK
    client, the unconnected ``site-b``, and a self-signed certificate on the server."""
    return make_module_lab(["nycmesh"] * 3 + ["ikev2-psk"], with_cert=True)


# -- exporter subprocess -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Scrape:
    """One /metrics answer: the text and its parsed families."""

    text: str
    families: dict[str, Metric] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}

    def samples(self, name: str, **labels: str) -> list[Sample]:
        """Samples whose name is ``name`` and whose labels include ``labels``."""
        return [
            s
            for fam in self.families.values()
            for s in fam.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample's value; None when absent; error when several match."""
        found = self.samples(name, **labels)
        if not found:
            return None
        assert len(found) == 1, f"{name}{labels} matches {len(found)} samples: {found}"
        return float(found[0].value)

    def required_value(self, name: str, **labels: str) -> float:
        """The one sample's value; error when absent or when several match."""
        found = self.value(name, **labels)
        assert found is not None, f"{name}{labels} is not in the scrape"
        return found


@dataclass
class ExporterProcess:
    """``python -m exporter`` running as a real process on a loopback port."""

    proc: subprocess.Popen[bytes]
    url: str
    stderr_path: Path
    args: list[str]

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                body = resp.read()
                if resp.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                return resp.status, body.decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def scrape(self, path: str = "/metrics") -> Scrape:
        status, text = self.get(path)
        assert status == 200, f"GET {path}: {status}\n{text}"
        return Scrape(text)

    def wait_for(
        self, check: Callable[[Scrape], bool], timeout: float = 20.0, interval: float = 0.3
    ) -> Scrape:
        """Scrape until ``check`` holds (wall-clock deadline); return that scrape."""
        deadline = time.monotonic() + timeout
        last: Scrape | None = None
        while time.monotonic() < deadline:
            last = self.scrape()
            if check(last):
                return last
            time.sleep(interval)
        raise AssertionError(
            f"condition not met within {timeout}s; last scrape:\n{last.text if last else ''}"
        )

    def stop(self) -> None:
        process.stop(self.proc)


def exporter_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "exporter", *args]


def exporter_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _wait_ready(exp: ExporterProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exp.proc.poll() is not None:
            raise AssertionError(
                f"exporter exited with {exp.proc.returncode}: {exp.args}\n{exp.stderr_text()}"
            )
        try:
            status, _ = exp.get("/-/ready")
            # Ready may say 503 while charon is away; the port answering is enough.
            if status in (200, 503):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"exporter not answering after {timeout}s\n{exp.stderr_text()}")


StartExporter = Callable[..., ExporterProcess]


@pytest.fixture
def start_exporter(tmp_path: Path) -> Iterator[StartExporter]:
    """``start_exporter(vici_uri, *extra_flags)`` -> a running ExporterProcess on a free
    loopback port, once it answers HTTP; stopped after the test."""
    started: list[ExporterProcess] = []

    def start(vici_uri: str, *extra: str, timeout: float = 20.0) -> ExporterProcess:
        port = free_port()
        args = exporter_argv(
            "--web.listen-address", f"127.0.0.1:{port}", "--vici.socket", vici_uri, *extra
        )
        err = tmp_path / f"exporter-{port}.stderr"
        with open(err, "wb") as fh:
            proc = subprocess.Popen(
                args, cwd=REPO, env=exporter_env(), stdin=subprocess.DEVNULL,
                stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip
        exp = ExporterProcess(proc, f"http://127.0.0.1:{port}", err, args)
        started.append(exp)
        _LIVE_EXPORTERS.append(exp)
        _wait_ready(exp, timeout)
        return exp

    try:
        yield start
    finally:
        for exp in started:
            exp.stop()
            _LIVE_EXPORTERS.remove(exp)
