"""Ending the processes a lab, a test or a benchmark started."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any


def stop(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL when it has not ended within `grace` seconds; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def start_until_ready(
    argv: list[str], log: Path, ready_url: str, timeout: float, error: type[Exception]
) -> subprocess.Popen[bytes]:
    """Start a server with its output in `log` and wait until `ready_url` answers 200
    (Prometheus' and Alertmanager's `/-/ready`); `error`, with the log's end, when it
    exits or is not ready within `timeout` seconds (the process is then stopped)."""
    with log.open("wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise error(f"{argv[0]} exited: {_tail(log)}")
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as response:
                if response.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise error(f"{argv[0]} not ready in {timeout} s: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""
