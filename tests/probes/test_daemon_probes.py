"""/probe through the real daemon (`python -m exporter --config.file`), run inside a lab
namespace: the module file is the daemon's own configuration file."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from exporter.demo.lab import netns, process

from .helpers import REPO, ProbeAnswer, probe_namespace

pytestmark = pytest.mark.lab

PORT = 9945
# Fetched from inside the namespace: the daemon listens on that namespace's loopback.
FETCH = """
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
        print(r.status); sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); sys.stdout.write(e.read().decode())
"""


class Daemon:
    def __init__(self, ns: str) -> None:
        self.ns = ns

    def get(self, query: str) -> ProbeAnswer:
        out = netns.run_in(
            self.ns, [sys.executable, "-c", FETCH, f"http://127.0.0.1:{PORT}{query}"]
        )
        status, _, text = out.partition("\n")
        return ProbeAnswer(int(status), text)


@pytest.fixture(scope="module")
def daemon(make_module_lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    lab = make_module_lab([])
    work = tmp_path_factory.mktemp("daemon")
    config = work / "exporter.yml"
    config.write_text(yaml.safe_dump({
        "web": {"listen_address": f"127.0.0.1:{PORT}"},
        "vici": {"socket": lab.server_uri},
        "log": {"level": "debug"},
        "probe": {"max_concurrent": 2, "allowed_targets": ["10.99.0.0/24"]},
        "modules": {
            "ikev1": {"prober": "ike", "timeout": "3s", "ike": {"version": 1}},
            "ikev2": {"prober": "ike", "timeout": "3s", "ike": {"version": 2}},
        },
    }))  # fmt: skip
    config.chmod(0o600)
    log = work / "daemon.log"
    with probe_namespace(lab) as (ns, _):
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                netns.exec_argv(ns, [sys.executable, "-m", "exporter", "--config.file",
                                     str(config)]),
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            d = Daemon(ns)
            deadline = time.monotonic() + 20
            while True:
                try:
                    if d.get("/-/healthy").status == 200:
                        break
                except Exception:
                    pass
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            yield d
        finally:
            process.stop(proc)


@pytest.mark.parametrize("module", ["ikev1", "ikev2"])
def test_daemon_probes_ike(daemon: Daemon, module: str) -> None:
    answer = daemon.get(f"/probe?module={module}&target=10.99.0.1")
    assert answer.status == 200, answer.text
    assert answer.value("probe_success") == 1, answer.text
    assert answer.value("probe_ike_answer_info", answer="proposal_accepted") == 1


def test_daemon_refuses_targets_outside_the_allow_list(daemon: Daemon) -> None:
    answer = daemon.get("/probe?module=ikev1&target=192.0.2.1")
    assert answer.status == 400
    assert "allowed_targets" in answer.text
