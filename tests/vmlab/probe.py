"""The login prober in a guest client namespace, for the matrix and NAT tests.

As tests/probes/test_login_vmlab.py does on the default guest: a charon of the probe's
own (private /run, its own VICI socket) in a client namespace no other test connects,
and ``tests/probes/run_probe.py`` running the production prober (the function the
exporter's ``/probe`` handler calls) against the server. The charon's crypto plugins
follow the release (Debian 13's strongSwan 6 has only ``openssl`` for them).
"""

from __future__ import annotations

import base64
import sys
import time
from typing import Any

import yaml

from tests.probes.helpers import ProbeAnswer

from .guest import Guest

SERVER = "192.168.77.1"
PROBE_DIR = "/tmp/probe"
VICI = f"unix://{PROBE_DIR}/charon.vici"
PYTHONPATH = f"/mnt/src:/mnt/pydeps:{PROBE_DIR}/deps"
NATIVE = "aes sha1 sha2 md5 des hmac gmp curve25519 kdf"
REST = "pem pkcs1 pubkey x509 kernel-netlink socket-default vici updown attr"

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
MODULES = {"login": {"prober": "login", "timeout": "60s", "login": LOGIN}}


def _strongswan_conf(crypto: str) -> str:
    return f"""\
charon {{
  load_modular = no
  load = random nonce {crypto} {REST}
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


def put(guest: Guest, path: str, data: bytes) -> None:
    guest.post(
        "/run",
        {"sh": f"cat > {path}", "stdin_b64": base64.b64encode(data).decode(), "timeout": 60},
        timeout=120,
    )


class Prober:
    """The prober's charon running in ``netns``; ``probe(module)`` runs one probe."""

    def __init__(self, guest: Guest, netns: str) -> None:
        self.guest = guest
        self.netns = netns
        native = guest.run("test -e /usr/lib/ipsec/plugins/libstrongswan-aes.so", check=False)
        crypto = NATIVE if native["rc"] == 0 else "openssl"
        guest.run(f"mkdir -p {PROBE_DIR}/run {PROBE_DIR}/deps")
        put(guest, f"{PROBE_DIR}/strongswan.conf", _strongswan_conf(crypto).encode())
        config = {"probe": {"allowed_targets": [f"{SERVER}/32"]}, "modules": MODULES}
        put(guest, f"{PROBE_DIR}/probes.yml", yaml.safe_dump(config).encode())
        guest.run(
            f"(setsid sh -c 'mount --bind {PROBE_DIR}/run /run && "
            f"exec env STRONGSWAN_CONF={PROBE_DIR}/strongswan.conf /usr/lib/ipsec/charon' "
            f"> {PROBE_DIR}/charon.out 2>&1 &)",
            netns=netns,
        )
        deadline = time.monotonic() + 60
        while guest.run(f"test -S {PROBE_DIR}/charon.vici", check=False)["rc"] != 0:
            if time.monotonic() > deadline:
                raise AssertionError(guest.sh(f"cat {PROBE_DIR}/charon.out"))
            time.sleep(0.5)

    def probe(
        self, module: str, timeout: float = 300, lifetimes: bool = False
    ) -> tuple[ProbeAnswer, str]:
        """One probe; ``lifetimes``: through guest/probe_lifetimes.py, the prober with
        IKEv1 lifetimes in its proposals (what Libreswan needs, see there). The
        process imports the exporter over 9p first: tens of seconds on a busy host."""
        script = "vmlab/guest/probe_lifetimes.py" if lifetimes else "probes/run_probe.py"
        argv = [
            "env",
            f"PYTHONPATH={PYTHONPATH}",
            "python3",
            f"/mnt/src/tests/{script}",
            f"{PROBE_DIR}/probes.yml",
            module,
            SERVER,
        ]
        t0 = time.monotonic()
        r = self.guest.run(argv, netns=self.netns, timeout=timeout, check=False)
        self.seconds = round(time.monotonic() - t0, 1)
        return ProbeAnswer(200, r["stdout"]), r["stderr"]

    def charon_state(self) -> str:
        return self.guest.sh(f"swanctl --list-sas --uri {VICI}")


def explain(answer: ProbeAnswer, log: str) -> str:
    return f"{answer.text}\n--- probe log ---\n{log[-4000:]}"


def assert_full_login(prober: Prober, answer: ProbeAnswer, log: str) -> dict[str, Any]:
    """Every phase passed, in transport mode, MS-CHAPv2; nothing left in the charon."""
    assert answer.value("probe_success") == 1, explain(answer, log)
    assert answer.failed_phase() is None
    child = answer.labels("probe_login_child_sa_info")
    assert child["mode"] == "TRANSPORT" and child["protocol"] == "ESP", child
    ppp = answer.labels("probe_login_ppp_address_info")
    assert ppp["local"].startswith("192.168.42.") and ppp["peer"] == "192.168.42.1", ppp
    assert answer.labels("probe_login_ppp_auth_info")["method"] == "mschapv2"
    assert answer.value("probe_login_teardown_clean") == 1
    for phase in ("ike", "child", "l2tp_tunnel", "l2tp_session", "ppp_lcp", "ppp_auth"):
        assert answer.value("probe_phase_duration_seconds", phase=phase) is not None, phase
    assert "probe-login-" not in prober.charon_state()
    return child


#: What pluto logs when it deletes an ISAKMP SA proposed without a lifetime.
NO_LIFETIME = "IKE SA expired (--dontrekey)"


def login_against(g: Guest, prober: Prober, what: str) -> tuple[ProbeAnswer, str, bool]:
    """A full login with the production prober; on the Libreswan flavour, where it
    fails because its IKEv1 proposal has no lifetime, again with lifetimes. Returns the
    answer that must be a full login, its log, and whether the production prober
    failed that way (an exporter bug the caller reports)."""
    answer, log = prober.probe("login")
    if answer.value("probe_success") == 1 or g.flavour != "libreswan":
        return answer, log, False
    pluto = g.log("server/pluto.log")
    assert NO_LIFETIME in pluto, explain(answer, log)
    sys.stderr.write(
        f"\nvmlab {what}: the production login prober failed at "
        f"{answer.failed_phase()!r}: pluto deleted its lifetime-less ISAKMP SA "
        f"({NO_LIFETIME}); again with IKEv1 lifetimes\n"
    )
    answer, log = prober.probe("login", lifetimes=True)
    return answer, log, True
