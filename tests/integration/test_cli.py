"""Bad command lines: a non-zero exit and one clear message on stderr (no root needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        cwd=REPO, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _assert_one_clear_message(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert err, "no message on stderr"
    assert "Traceback" not in err, err
    # argparse prints a usage line before its one-line error; nothing more.
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(" ")]
    message = [line for line in lines if not line.startswith("usage:")]
    assert len(message) == 1, err
    for word in words:
        assert word in message[0], err


def test_unknown_flag() -> None:
    _assert_one_clear_message(_run("--no-such-flag"), "--no-such-flag")


def test_malformed_vici_socket() -> None:
    _assert_one_clear_message(_run("--vici.socket", "ftp://x"), "ftp://x")


def test_help_and_version_exit_zero() -> None:
    assert _run("--help").returncode == 0
    version = _run("--version")
    assert version.returncode == 0 and version.stdout.strip()
