"""--web.config.file wired into the real daemon: TLS, basic auth, and a reload that swaps
the users (no charon needed: the daemon serves with the VICI socket missing)."""

from __future__ import annotations

import base64
import http.client
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from tests.conftest import REPO, exporter_env, free_port


def make_cert(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def write_config(path: Path, cert: Path, key: Path, password: bytes) -> None:
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4)).decode()
    path.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  prometheus: {hashed}\n"
    )


def get(url: str, context: ssl.SSLContext, password: bytes | None) -> int:
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(b"prometheus:" + password).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_tls_and_basic_auth_in_the_daemon(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    web = tmp_path / "web.yml"
    write_config(web, cert, key, b"first")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}",
         "--vici.socket", f"unix://{tmp_path}/missing.vici", "--web.config.file", str(web)],
        cwd=REPO, env=exporter_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if get(url, context, None) == 401:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert get(url, context, b"first") == 200
        assert get(url, context, b"wrong") == 401
        assert get(f"https://127.0.0.1:{port}/-/healthy", context, None) == 401
        # Plain HTTP on the TLS port gets no answer.
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)

        write_config(web, cert, key, b"second")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and get(url, context, b"second") != 200:
            time.sleep(0.2)
        assert get(url, context, b"second") == 200
        assert get(url, context, b"first") == 401
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_web_config_stops_the_start_with_one_line(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: /nonexistent.crt\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--web.config.file", str(web), "--config.check"],
        cwd=REPO, env=exporter_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "web.yml" in result.stderr
