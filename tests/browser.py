"""A real browser for tests: Debian's chromium, headless, on loopback URLs only.

    from tests import browser
    if reason := browser.missing():
        pytest.skip(reason)
    html = browser.dump_dom(url, auth=("user", "pass"))  # the DOM after load
    browser.screenshot(url, tmp_path / "page.png")       # a PNG, 1400x900 by default

Each call starts one chromium with a fresh profile in a temporary directory (removed
afterwards), no network beyond what the page asks for (no sync, no component updates,
no QUIC, no background requests) and a timeout; on timeout its whole process group is
killed. Basic auth goes into the URL as user:pass@ (chromium sends it for a top-level
navigation). Only http(s) URLs on 127.0.0.1, ::1 or localhost are accepted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 60.0
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


class BrowserError(RuntimeError):
    """chromium failed, timed out or produced nothing."""


def missing() -> str | None:
    """Why no browser test can run here (a skip reason), or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not installed (Debian package chromium; scripts/install-test-deps)"
    return None


def with_auth(url: str, auth: tuple[str, str] | None) -> str:
    """The URL, checked to be loopback, with user:pass@ when `auth` is given."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK:
        raise ValueError(f"only http(s) URLs on loopback, not {url!r}")
    if auth is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user, password = (quote(part, safe="") for part in auth)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def run(args: list[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """chromium with the fixed flags, `args` and a throw-away profile; raises
    BrowserError on a non-zero exit or a timeout."""
    reason = missing()
    if reason is not None:
        raise BrowserError(reason)
    home = Path(tempfile.mkdtemp(prefix="chromium-test-"))
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
    }
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={home / 'profile'}", *args]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own process group: killed whole on timeout
    )
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise BrowserError(
                f"chromium timed out after {timeout:.0f} s: {err.decode(errors='replace')[-2000:]}"
            ) from None
        finally:
            # Helpers (zygote, renderer) that outlived the browser process.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode != 0:
            raise BrowserError(
                f"chromium exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
            )
        return subprocess.CompletedProcess(command, proc.returncode, out, err)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def dump_dom(url: str, auth: tuple[str, str] | None = None, timeout: float = TIMEOUT) -> str:
    """The page's DOM as chromium serialises it after load."""
    done = run(["--dump-dom", with_auth(url, auth)], timeout)
    dom = done.stdout.decode()
    if "<html" not in dom:
        raise BrowserError(f"no DOM from {url}: {done.stderr.decode(errors='replace')[-2000:]}")
    return dom


def screenshot(
    url: str,
    path: Path | str,
    auth: tuple[str, str] | None = None,
    size: tuple[int, int] = (1400, 900),
    timeout: float = TIMEOUT,
) -> Path:
    """A PNG of the page's viewport at `size`, written to `path` (returned)."""
    path = Path(path).resolve()
    path.unlink(missing_ok=True)
    done = run(
        [f"--screenshot={path}", f"--window-size={size[0]},{size[1]}", with_auth(url, auth)],
        timeout,
    )
    if not path.is_file() or path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise BrowserError(f"no PNG from {url}: {done.stderr.decode(errors='replace')[-2000:]}")
    return path
