"""The three probers against real daemons in the netns lab.

One lab per module: a server charon (kernel-libipsec) on 10.99.0.1 answering IKEv1 and
IKEv2, xl2tpd on the server's namespace, and a probe namespace (10.99.0.100) with its own
charon for the login prober. /probe is served from inside the probe namespace over a UNIX
socket, so every request goes through the real handler.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.demo.lab.charon import Charon
from exporter.demo.lab.configs import PSK, SECRETS, TUNNEL_TARGET, XAUTH_PASSWORD, XAUTH_USER

from .helpers import ProbeServer, probe_namespace, probe_server
from .xl2tpd import LNS_HOST_NAME, Xl2tpd, running_xl2tpd

pytestmark = pytest.mark.lab

SERVER = "10.99.0.1"
NOBODY = "10.99.0.250"  # on the lab subnet, but no host answers there


def ike(version: int, timeout: str = "3s", **opts: Any) -> dict[str, Any]:
    return {"prober": "ike", "timeout": timeout, "ike": {"version": version, **opts}}


LOGIN = {
    "ike_version": 1,
    "psk": PSK,
    "xauth": {"username": XAUTH_USER, "password": XAUTH_PASSWORD},
    "ike_proposals": ["aes256-sha256-modp2048"],
    "esp_proposals": ["aes256-sha256"],
    # kernel-libipsec only does tunnel mode: ask for a virtual IP and send L2TP to the
    # server's tunnel address, restricted to UDP/1701 as in transport mode.
    "mode": "tunnel",
    "remote_ts": [f"{TUNNEL_TARGET}/32[17/1701]"],
    "l2tp_server": TUNNEL_TARGET,
    "username": "nycmesh",
    "password": "ppp-password-7f1e",
    "auth": ["mschapv2"],
}


def login(timeout: str = "10s", **overrides: Any) -> dict[str, Any]:
    return {"prober": "login", "timeout": timeout, "login": {**LOGIN, **overrides}}


MODULES: dict[str, Any] = {
    "ike_v1": ike(1),
    "ike_v2": ike(2),
    "ike_v1_natt": ike(1, nat_t=True),
    "ike_v2_natt": ike(2, nat_t=True),
    "ike_v1_refused": ike(1, proposals=["3des-md5-modp1024"]),
    "ike_v2_refused": ike(2, proposals=["3des-md5-modp1024"]),
    "ike_v2_wrong_group": ike(2, proposals=["aes256-sha256-modp1024-modp2048"]),
    "ike_v2_wrong_group_strict": ike(
        2, proposals=["aes256-sha256-modp1024-modp2048"], follow_notify=False
    ),
    "ike_slow": ike(2, timeout="10s"),
    "ike_silent": ike(2, timeout="1s"),
    "l2tp": {"prober": "l2tp", "timeout": "3s"},
    # The target names the port (a closed one): only with allow_target_port.
    "ike_v2_any_port": {**ike(2), "allow_target_port": True},
    "l2tp_any_port": {"prober": "l2tp", "timeout": "3s", "allow_target_port": True},
    "login": login(),
    "login_wrong_psk": login(psk="not-the-psk-3c1d"),
    "login_wrong_xauth": login(xauth={"username": XAUTH_USER, "password": "wrong-xauth-9a2b"}),
    "login_no_lns": login(timeout="3s", l2tp_port=1702),
}
ALL_SECRETS = (*SECRETS, "ppp-password-7f1e", "not-the-psk-3c1d", "wrong-xauth-9a2b")
#: Login modules need it; the lab's subnet holds the server and NOBODY.
PROBE = {"allowed_targets": ["10.99.0.0/24"]}


class Stack:
    def __init__(self, server: ProbeServer, charon: Charon, lns: Xl2tpd) -> None:
        self.server = server
        self.charon = charon
        self.lns = lns


@pytest.fixture(scope="module")
def stack(make_module_lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    lab = make_module_lab([])
    work = tmp_path_factory.mktemp("probes")
    with probe_namespace(lab) as (ns, _address):
        charon = Charon("probe", ns, work / "charon", kernel="kernel-libipsec", server=False)
        try:
            charon.start()
            modules = {
                name: {**m, "login": {**m["login"], "vici_socket": charon.uri}}
                if m["prober"] == "login"
                else m
                for name, m in MODULES.items()
            }
            with (
                running_xl2tpd(lab.server_ns, work / "lns") as lns,
                probe_server(ns, modules, work, PROBE) as server,
            ):
                yield Stack(server, charon, lns)
        finally:
            charon.kill()


def assert_charon_clean(charon: Charon) -> None:
    """No probe connection, SA or secret is left in the probe's charon."""
    assert charon.streamed("list-conns", "list-conn") == []
    assert charon.list_sas() == []
    keys = charon.call("get-shared").get("keys", [])
    assert [k for k in keys if k.startswith("probe-")] == []


# -- ike ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["ike_v1", "ike_v2", "ike_v1_natt", "ike_v2_natt"])
def test_ike_proposal_accepted(stack: Stack, module: str) -> None:
    answer = stack.server.probe(module, SERVER)
    assert answer.value("probe_success") == 1, answer.text
    assert answer.value("probe_ike_answer_info", answer="proposal_accepted") == 1
    accepted = answer.labels("probe_ike_accepted_proposal_info")
    # The lab server's first proposal: aes256-sha256-modp2048.
    assert accepted["encryption"] == "aes256"
    assert accepted["integrity"] == "sha256"
    assert accepted["dh_group"] == "modp2048"
    assert accepted["auth_method"] == ("psk" if "v1" in module else "")
    assert answer.value("probe_ike_reached") == 1
    rtt = answer.value("probe_ike_rtt_seconds")
    assert rtt is not None and 0 < rtt < 1
    assert answer.failed_phase() is None


@pytest.mark.parametrize("module", ["ike_v1_refused", "ike_v2_refused"])
def test_ike_refused_proposal_is_a_notify(stack: Stack, module: str) -> None:
    answer = stack.server.probe(module, SERVER)
    assert answer.value("probe_success") == 0
    assert answer.value("probe_ike_reached") == 1
    assert answer.value("probe_ike_answer_info", notify="NO_PROPOSAL_CHOSEN") == 1
    assert answer.value("probe_ike_notify_type") == 14
    assert answer.failed_phase() == "ike"


def test_ike_invalid_ke_is_followed_like_a_client(stack: Stack) -> None:
    answer = stack.server.probe("ike_v2_wrong_group", SERVER)
    assert answer.value("probe_success") == 1, answer.text
    assert answer.value("probe_ike_exchanges") == 2
    assert answer.labels("probe_ike_accepted_proposal_info")["dh_group"] == "modp2048"


def test_ike_invalid_ke_reported_when_not_followed(stack: Stack) -> None:
    answer = stack.server.probe("ike_v2_wrong_group_strict", SERVER)
    assert answer.value("probe_success") == 0
    assert answer.value("probe_ike_answer_info", answer="notify", notify="INVALID_KE_PAYLOAD") == 1
    assert answer.failed_phase() == "ike"


def test_ike_closed_port_fails_at_ike(stack: Stack) -> None:
    answer = stack.server.probe("ike_v2_any_port", f"{SERVER}:4501")
    assert answer.value("probe_success") == 0
    assert answer.value("probe_ike_answer_info", answer="unreachable") == 1
    assert answer.value("probe_failed_phase", phase="resolve") == 0
    assert answer.failed_phase() == "ike"


def test_ike_silence_is_a_timeout_within_the_module_timeout(stack: Stack) -> None:
    start = time.monotonic()
    answer = stack.server.probe("ike_silent", NOBODY)
    elapsed = time.monotonic() - start
    assert answer.value("probe_success") == 0
    assert answer.value("probe_ike_reached") == 0
    assert answer.value("probe_ike_answer_info", answer="timeout") == 1
    assert answer.value("probe_ike_packets_sent") == 3
    assert answer.failed_phase() == "ike"
    assert elapsed < 3


def test_scrape_timeout_header_shortens_the_probe(stack: Stack) -> None:
    start = time.monotonic()
    answer = stack.server.probe(
        "ike_slow", NOBODY, headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"}
    )
    elapsed = time.monotonic() - start
    assert answer.value("probe_success") == 0
    assert elapsed < 2.5, "the 10 s module timeout was not cut to the scrape timeout"


# -- l2tp ---------------------------------------------------------------------------------------


def test_l2tp_control_connection(stack: Stack) -> None:
    answer = stack.server.probe("l2tp", SERVER)
    assert answer.value("probe_success") == 1, answer.text
    peer = answer.labels("probe_l2tp_peer_info")
    assert peer["host_name"] == LNS_HOST_NAME
    assert peer["vendor"] == "xelerance.com"
    assert peer["protocol_version"] == "1.0"
    assert answer.value("probe_l2tp_close_acknowledged") == 1
    time.sleep(0.3)
    log = stack.lns.log_text()
    assert "Connection established to 10.99.0.100" in log
    assert "control_finish: Connection closed to 10.99.0.100" in log


def test_l2tp_closed_port_fails_at_connect(stack: Stack) -> None:
    answer = stack.server.probe("l2tp_any_port", f"{SERVER}:1702")
    assert answer.value("probe_success") == 0
    assert answer.failed_phase() == "connect"


# -- login --------------------------------------------------------------------------------------


def test_login_reaches_ppp_through_the_tunnel(stack: Stack) -> None:
    """IKE, CHILD, L2TP tunnel and session succeed through kernel-libipsec; pppd cannot
    run on this kernel, so the LNS hangs up and the probe says PPP (LCP) failed."""
    answer = stack.server.probe("login", SERVER)
    assert answer.value("probe_success") == 0
    for phase in ("load", "ike", "child", "l2tp_tunnel", "l2tp_session"):
        assert answer.value("probe_failed_phase", phase=phase) == 0
        assert answer.value("probe_phase_duration_seconds", phase=phase) is not None
    assert answer.failed_phase() == "ppp_lcp"
    assert answer.labels("probe_login_virtual_ip_info")["address"].startswith("10.99.100.")
    child = answer.labels("probe_login_child_sa_info")
    assert child["mode"] == "TUNNEL" and child["protocol"] == "ESP"
    assert answer.labels("probe_login_l2tp_peer_info")["host_name"] == LNS_HOST_NAME
    assert answer.value("probe_login_teardown_clean") == 1
    assert_charon_clean(stack.charon)
    # The L2TP packets really went through the tunnel: xl2tpd saw the virtual IP.
    assert "Connection established to 10.99.100." in stack.lns.log_text()


@pytest.mark.parametrize("module", ["login_wrong_psk", "login_wrong_xauth"])
def test_login_wrong_ipsec_credentials_fail_at_ike(stack: Stack, module: str) -> None:
    answer = stack.server.probe(module, SERVER)
    assert answer.value("probe_success") == 0
    assert answer.failed_phase() == "ike"
    assert answer.value("probe_login_teardown_clean") == 1
    assert_charon_clean(stack.charon)


def test_login_without_lns_fails_at_l2tp(stack: Stack) -> None:
    answer = stack.server.probe("login_no_lns", SERVER)
    assert answer.value("probe_success") == 0
    assert answer.failed_phase() == "l2tp_tunnel"
    assert answer.value("probe_failed_phase", phase="child") == 0
    assert_charon_clean(stack.charon)


def test_login_timeout_still_tears_down(stack: Stack) -> None:
    """A scrape timeout shorter than IKE itself: the probe ends, charon is left clean."""
    answer = stack.server.probe(
        "login_wrong_psk", SERVER, headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"}
    )
    assert answer.value("probe_success") == 0
    assert answer.failed_phase() == "ike"
    assert_charon_clean(stack.charon)


def test_no_secret_in_answers_or_logs(stack: Stack) -> None:
    texts = [stack.server.get(f"/probe?module={m}&target={SERVER}&debug=true").text
             for m in ("login", "ike_v1", "l2tp")]  # fmt: skip
    texts.append(stack.server.log_text())
    for text in texts:
        for secret in ALL_SECRETS:
            assert secret not in text


def test_concurrent_probes(stack: Stack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda m: stack.server.probe(m, SERVER),
                                ["ike_v1", "ike_v2", "l2tp", "ike_v2_natt"]))  # fmt: skip
    assert [a.value("probe_success") for a in answers] == [1, 1, 1, 1]


def test_bad_requests(stack: Stack, tmp_path: Path) -> None:
    assert stack.server.get("/probe?module=ike_v1").status == 400
    assert stack.server.get(f"/probe?module=nope&target={SERVER}").status == 400
    assert stack.server.get("/probe?module=ike_v1&target=a/b").status == 400
    assert stack.server.get(f"/probe?module=ike_v2&target={SERVER}:4501").status == 400
    assert stack.server.get(f"/probe?module=login&target={SERVER}:4500").status == 400
    assert stack.server.get("/probe?module=login&target=192.0.2.1").status == 400
