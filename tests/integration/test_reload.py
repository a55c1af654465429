"""Reloading the configuration file (SIGHUP, POST /-/reload with --web.enable-lifecycle)
against a real charon: new settings apply, counters survive, a bad file is rejected and
the old one kept."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from exporter.privacy import pseudonym

pytestmark = pytest.mark.lab
KEY = b"reload-test-key-0123456789"


def post(url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_reload_applies_keeps_counters_and_rejects_bad_files(
    make_lab: Any, start_exporter: Any, tmp_path: Path
) -> None:
    lab = make_lab(["nycmesh", "nycmesh"])
    (tmp_path / "hash.key").write_bytes(KEY)
    config = tmp_path / "config.yml"
    config.write_text("collectors:\n  strongswan:\n    reauth_grace: 1s\n")
    exp = start_exporter(lab.server_uri, "--config.file", str(config), "--web.enable-lifecycle")
    exp.wait_for(lambda s: s.value("strongswan_event_stream_up") == 1)
    exp.wait_for(lambda s: s.value("strongswan_connection_established", conn="nycmesh") == 2)

    lab.clients[0].disconnect()
    down = {"conn": "nycmesh", "event": "down"}
    exp.wait_for(lambda s: s.value("strongswan_ike_sa_events_total", **down) == 1)
    assert exp.scrape().value("strongswan_user_sessions", conn="nycmesh", user="nycmesh") == 1

    config.write_text(
        "collectors:\n  strongswan:\n    reauth_grace: 1s\n"
        "privacy:\n  users: hash\n  hash_key_file: hash.key\n"
    )
    exp.proc.send_signal(signal.SIGHUP)
    hashed = pseudonym(KEY, "nycmesh")
    after = exp.wait_for(
        lambda s: s.value("strongswan_user_sessions", conn="nycmesh", user=hashed) == 1
    )
    assert after.value("strongswan_ike_sa_events_total", **down) == 1  # not reset
    assert "nycmesh" not in {
        s.labels.get("user") for s in after.samples("strongswan_user_sessions")
    }

    config.write_text("collectors:\n  strongswan:\n    reauth_grace: later\n")
    status, body = post(exp.url + "/-/reload")
    assert status == 400
    assert f"{config}:3: collectors.strongswan.reauth_grace" in body
    still = exp.scrape()
    assert still.value("strongswan_user_sessions", conn="nycmesh", user=hashed) == 1
    assert "reload rejected" in exp.stderr_text()

    config.write_text("collectors:\n  strongswan:\n    reauth_grace: 1s\n")
    status, body = post(exp.url + "/-/reload")
    assert status == 200, body
    exp.wait_for(lambda s: s.value("strongswan_user_sessions", conn="nycmesh", user="nycmesh") == 1)
