"""The login prober end to end against the genuine stack in the emulated guest:
IKEv1 PSK, ESP transport mode for UDP/1701, kernel L2TP in xl2tpd, pppd with MS-CHAPv2.

The probe runs inside the guest's client namespace ``c3`` (never connected by these
tests) with a charon of its own, exactly as the exporter would run next to a local charon.
"""

from __future__ import annotations

import base64
import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import ProbeAnswer

pytestmark = pytest.mark.vmlab

NETNS = "c3"
SERVER = "192.168.77.1"
PROBE_DIR = "/tmp/probe"
VICI = f"unix://{PROBE_DIR}/charon.vici"
PYTHONPATH = f"/mnt/src:/mnt/pydeps:{PROBE_DIR}/deps"

PLUGINS = (
    "random nonce aes sha1 sha2 md5 des hmac gmp curve25519 kdf pem pkcs1 pubkey x509 "
    "kernel-netlink socket-default vici updown attr"
)
STRONGSWAN_CONF = f"""\
charon {{
  load_modular = no
  load = {PLUGINS}
  install_routes = no
  retransmit_timeout = 2.0
  retransmit_tries = 2
  plugins {{
    vici {{
      socket = {VICI}
    }}
  }}
  filelog {{
    probe {{
      path = {PROBE_DIR}/charon.log
      time_format = %H:%M:%S
      default = 1
    }}
  }}
}}
"""

LOGIN = {
    "vici_socket": VICI,
    "ike_version": 1,
    "psk": "nycmeshnet",
    "mode": "transport",
    "remote_ts": ["dynamic[17/1701]"],
    "local_port": 1701,
    "username": "nycmesh",
    "password": "nycmeshnet",
    "auth": ["mschapv2"],
    "lcp_echo": True,
}
# Everything is slow under software emulation: a login takes seconds, not milliseconds.
MODULES = {
    "login": {"prober": "login", "timeout": "60s", "login": LOGIN},
    "login_wrong_psk": {"prober": "login", "timeout": "30s",
                        "login": {**LOGIN, "psk": "not-the-psk"}},
    "login_wrong_password": {"prober": "login", "timeout": "60s",
                             "login": {**LOGIN, "password": "not-the-password"}},
    "login_short": {"prober": "login", "timeout": "25s", "login": LOGIN},
    "login_chap_md5_only": {"prober": "login", "timeout": "60s",
                            "login": {**LOGIN, "auth": ["chap_md5"]}},
    "login_pap_only": {"prober": "login", "timeout": "40s", "login": {**LOGIN, "auth": ["pap"]}},
}  # fmt: skip
#: A login module is refused without it.
PROBE = {"allowed_targets": [f"{SERVER}/32"]}


def _put(guest: Any, path: str, data: bytes) -> None:
    guest.post(
        "/run",
        {"sh": f"cat > {path}", "stdin_b64": base64.b64encode(data).decode(), "timeout": 60},
        timeout=120,
    )


def _pycryptodome_tarball() -> bytes:
    """The host's pycryptodome (pure ABI3 wheels), for a guest whose dependency set
    predates it; tests and self-tests left out."""
    import Crypto

    root = Path(Crypto.__file__).parent
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root, arcname="Crypto", filter=lambda t: None if "SelfTest" in t.name else t)
    return buf.getvalue()


class ProbeHost:
    def __init__(self, guest: Any) -> None:
        self.guest = guest

    def probe(self, module: str, timeout: float = 120) -> tuple[ProbeAnswer, str]:
        argv = ["env", f"PYTHONPATH={PYTHONPATH}", "python3", "/mnt/src/tests/probes/run_probe.py",
                f"{PROBE_DIR}/probes.yml", module, SERVER]  # fmt: skip
        r = self.guest.run(argv, netns=NETNS, timeout=timeout, check=False)
        return ProbeAnswer(200, r["stdout"]), r["stderr"]

    def charon_state(self) -> str:
        return str(self.guest.sh(
            f"swanctl --list-conns --uri {VICI}; swanctl --list-sas --uri {VICI}"
        ))  # fmt: skip


@pytest.fixture(scope="module")
def host() -> Iterator[ProbeHost]:
    from tests.vmlab.conftest import vmlab_skip_reason
    from tests.vmlab.guest import Guest

    reason = vmlab_skip_reason()
    if reason:
        pytest.skip(reason)
    with Guest(clients=3) as guest:
        guest.run(f"mkdir -p {PROBE_DIR}/run {PROBE_DIR}/deps")
        _put(guest, f"{PROBE_DIR}/strongswan.conf", STRONGSWAN_CONF.encode())
        config = yaml.safe_dump({"probe": PROBE, "modules": MODULES})
        _put(guest, f"{PROBE_DIR}/probes.yml", config.encode())
        has_crypto = guest.run(
            ["env", f"PYTHONPATH={PYTHONPATH}", "python3", "-c", "import Crypto.Hash.MD4"],
            check=False,
        )
        if has_crypto["rc"] != 0:
            _put(guest, f"{PROBE_DIR}/crypto.tgz", _pycryptodome_tarball())
            guest.run(f"tar xzf {PROBE_DIR}/crypto.tgz -C {PROBE_DIR}/deps")
        guest.run(
            f"(setsid sh -c 'mount --bind {PROBE_DIR}/run /run && "
            f"exec env STRONGSWAN_CONF={PROBE_DIR}/strongswan.conf /usr/lib/ipsec/charon' "
            f"> {PROBE_DIR}/charon.out 2>&1 &)",
            netns=NETNS,
        )
        deadline = time.monotonic() + 60
        while guest.run(f"test -S {PROBE_DIR}/charon.vici", check=False)["rc"] != 0:
            assert time.monotonic() < deadline, guest.sh(f"cat {PROBE_DIR}/charon.out")
            time.sleep(0.5)
        yield ProbeHost(guest)


def _explain(answer: ProbeAnswer, log: str) -> str:
    return f"{answer.text}\n--- probe log ---\n{log[-4000:]}"


def test_login_all_phases_succeed(host: ProbeHost) -> None:
    answer, log = host.probe("login")
    assert answer.value("probe_success") == 1, _explain(answer, log)
    assert answer.failed_phase() is None
    child = answer.labels("probe_login_child_sa_info")
    assert child["mode"] == "TRANSPORT" and child["protocol"] == "ESP"
    ppp = answer.labels("probe_login_ppp_address_info")
    assert ppp["local"].startswith("192.168.42.") and ppp["peer"] == "192.168.42.1"
    assert answer.labels("probe_login_ppp_auth_info")["method"] == "mschapv2"
    rtt = answer.value("probe_login_lcp_echo_rtt_seconds")
    assert rtt is not None and rtt > 0
    assert answer.value("probe_login_teardown_clean") == 1
    for phase in ("ike", "child", "l2tp_tunnel", "l2tp_session", "ppp_lcp", "ppp_auth",
                  "ppp_ipcp", "ppp_echo"):  # fmt: skip
        assert answer.value("probe_phase_duration_seconds", phase=phase) is not None
    assert "probe-login-" not in host.charon_state()
    # The server's pppd and session go away again once the probe said goodbye.
    deadline = time.monotonic() + 30
    while host.guest.status()["server"]["ppp"]:
        assert time.monotonic() < deadline, "the probe's PPP session stayed up on the server"
        time.sleep(1)


def test_wrong_psk_fails_at_ike(host: ProbeHost) -> None:
    answer, log = host.probe("login_wrong_psk")
    assert answer.value("probe_success") == 0
    assert answer.failed_phase() == "ike", _explain(answer, log)
    assert "probe-login-" not in host.charon_state()


def test_wrong_password_fails_at_ppp_auth(host: ProbeHost) -> None:
    answer, log = host.probe("login_wrong_password")
    assert answer.value("probe_success") == 0
    assert answer.failed_phase() == "ppp_auth", _explain(answer, log)
    assert "not-the-password" not in answer.text + log
    assert "probe-login-" not in host.charon_state()


def test_chap_md5_only_fails_at_auth_on_an_mschapv2_server(host: ProbeHost) -> None:
    """The guest's server requires MS-CHAPv2 alone (as NYC Mesh's endpoint is described):
    a module that allows only CHAP-MD5 must fail at authentication, not get in."""
    answer, log = host.probe("login_chap_md5_only")
    assert answer.value("probe_success") == 0, _explain(answer, log)
    assert answer.failed_phase() == "ppp_auth", _explain(answer, log)


def test_auth_method_the_server_refuses_fails_at_auth(host: ProbeHost) -> None:
    """pppd does not do PAP here: after our Nak it opens LCP without authentication and
    would hang up at once; the probe names the method it declined instead."""
    answer, log = host.probe("login_pap_only")
    assert answer.value("probe_success") == 0
    assert answer.failed_phase() == "ppp_auth", _explain(answer, log)
    assert "which the module does not allow" in log
    assert "probe-login-" not in host.charon_state()


def test_xl2tpd_stopped_fails_at_l2tp(host: ProbeHost) -> None:
    host.guest.run("kill $(cat /run/xl2tpd.pid)")
    deadline = time.monotonic() + 20
    while host.guest.status()["server"]["xl2tpd"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    answer, log = host.probe("login_short")
    assert answer.value("probe_success") == 0
    assert answer.failed_phase() == "l2tp_tunnel", _explain(answer, log)
    assert answer.value("probe_failed_phase", phase="child") == 0
    assert "probe-login-" not in host.charon_state()
