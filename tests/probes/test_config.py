"""The module file: the shipped example loads; mistakes name the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter.config import Settings
from exporter.probe_config import probe_settings_for
from exporter.probes.base import TargetError, parse_target
from exporter.probes.config import (
    AllowedTargets,
    ProbeConfigError,
    Secret,
    load_modules,
    load_probe_settings,
    parse_probe_settings,
)
from exporter.settings.errors import ConfigFileError

REPO = Path(__file__).resolve().parents[2]


def test_example_module_file_loads() -> None:
    settings = load_probe_settings(REPO / "examples" / "probes.yml")
    assert settings.max_concurrent == 4
    assert set(settings.modules) == {
        "nycmesh_ikev1", "nycmesh_ikev1_natt", "nycmesh_ikev2", "nycmesh_login",
    }  # fmt: skip
    login = settings.modules["nycmesh_login"]
    assert login.prober == "login" and login.timeout == 30
    assert login.login.psk == Secret("nycmeshnet")
    assert login.login.mode == "transport" and login.login.auth == ("mschapv2",)
    natt = settings.modules["nycmesh_ikev1_natt"].ike
    assert natt.effective_port == 4500
    assert settings.allowed_targets.allows_name("l2tpvpn.sn1.mesh.nycmesh.net")
    assert not settings.allowed_targets.allows_name("example.org")
    assert load_modules(REPO / "examples" / "probes.yml").keys() == settings.modules.keys()


def test_secrets_never_print() -> None:
    settings = load_probe_settings(REPO / "examples" / "probes.yml")
    text = repr(settings) + str(settings.modules["nycmesh_login"])
    assert "nycmeshnet" not in text
    assert "Secret(<hidden>)" in text


def _modules(**module: Any) -> dict[str, Any]:
    return {"modules": {"m": module}}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "modules: expected a mapping"),
        (_modules(prober="http"), "modules.m.prober: 'http' is not one of"),
        (_modules(prober="ike", timeout="soon"), "modules.m.timeout: expected a duration"),
        (_modules(prober="ike", ike={"verison": 2}), "modules.m.ike.verison: unknown key"),
        (_modules(prober="ike", ike={"proposals": ["aes-sha"]}), "modules.m.ike.proposals:"),
        (_modules(prober="ike", ike={"port": 70000}), "modules.m.ike.port: expected an integer"),
        (_modules(prober="ike", l2tp={"port": 1}), "modules.m.l2tp: set, but the module's"),
        (_modules(prober="login", login={"username": "u", "password": "p"}), "login.psk"),
        (
            _modules(prober="login", login={"psk": "k", "username": "u"}),
            "modules.m.login.username: the login prober needs username and password",
        ),
        (
            _modules(
                prober="login",
                login={"psk": "k", "username": "u", "password": "p", "vici_socket": "http://x"},
            ),
            "modules.m.login.vici_socket:",
        ),
        (_modules(prober="login", login={"auth": ["eap"]}), "modules.m.login.auth: 'eap'"),
        ({"modules": {"m": {"prober": "ike"}}, "probe": {"max_concurrent": 0}}, "probe.max"),
        ({"modules": {"m": {"prober": "ike"}}, "probe": {"allowed_targets": ["a b"]}}, "probe.al"),
        ({"modules": {"m": {"prober": "ike"}}, "extra": 1}, "extra: unknown key"),
        (
            _modules(prober="login", login={"psk": "k", "username": "u", "password": "p"}),
            "modules.m.prober: a login module needs probe.allowed_targets",
        ),
        (_modules(prober="ike", allow_target_port="yes"), "modules.m.allow_target_port: expec"),
    ],
)
def test_mistakes_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ProbeConfigError) as err:
        parse_probe_settings(doc, "probes.yml")
    assert str(err.value).startswith("probes.yml: ")
    assert message in str(err.value)


def test_secret_values_are_not_echoed_in_errors() -> None:
    doc = _modules(prober="login", login={"psk": "s3cr3t-value", "username": "u"})
    with pytest.raises(ProbeConfigError) as err:
        parse_probe_settings(doc)
    assert "s3cr3t-value" not in str(err.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ProbeConfigError, match="cannot read"):
        load_probe_settings(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("modules: [\n")
    with pytest.raises(ProbeConfigError, match="not valid YAML"):
        load_probe_settings(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("500ms", 0.5), ("1m", 60.0), ("1h", 3600.0), (3, 3.0), ("2.5", 2.5)],
)
def test_durations(text: object, seconds: float) -> None:
    """The one duration grammar of every setting, for `timeout` and `retransmit_interval`."""
    settings = parse_probe_settings(
        {"modules": {"i": {"prober": "ike", "timeout": text},
                     "l": {"prober": "l2tp", "l2tp": {"retransmit_interval": text}}}}
    )  # fmt: skip
    assert settings.modules["i"].timeout == seconds
    assert settings.modules["l"].l2tp.retransmit_interval == seconds


def test_a_module_file_takes_500ms_and_1h_timeouts(tmp_path: Path) -> None:
    path = tmp_path / "probes.yml"
    path.write_text(
        "modules:\n  fast: {prober: ike, timeout: 500ms}\n  slow: {prober: ike, timeout: 1h}\n"
    )
    modules = load_modules(path)
    assert (modules["fast"].timeout, modules["slow"].timeout) == (0.5, 3600.0)


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), "inf", "nan", "1.0e+400", "5sss", "0", 0, "0ms", "-1s"]
)
def test_bad_durations_are_refused(value: object) -> None:
    # The configuration's one grammar: `.nan`, `.inf` and 1.0e+400 once passed as a
    # module's timeout (issue 14, item 12); 0 is no timeout.
    with pytest.raises(ProbeConfigError, match=r"^probes.yml: modules.m.timeout: "):
        parse_probe_settings(_modules(prober="ike", timeout=value), "probes.yml")


DEEP = """\
# probe modules
probe:
  max_concurrent: 4
modules:
  v1:
    prober: ike
    timeout: 5s
  door:
    prober: l2tp
    l2tp:
      port: 1701
      retransmit_interval: soon
"""
DEEP_MESSAGE = (
    ":12: modules.door.l2tp.retransmit_interval: "
    "expected a duration like 10s, 500ms, 5m or 1h, got 'soon'"
)


def test_a_bad_value_deep_in_a_module_file_names_file_line_and_key(tmp_path: Path) -> None:
    """The one error format of every YAML file the exporter reads: `FILE:LINE: KEY: message`."""
    path = tmp_path / "probes.yml"
    path.write_text(DEEP)
    with pytest.raises(ProbeConfigError) as err:
        load_probe_settings(path)
    assert str(err.value) == f"{path}{DEEP_MESSAGE}"
    assert isinstance(err.value, ConfigFileError)


def test_a_bad_module_deep_in_the_config_file_names_file_line_and_key(tmp_path: Path) -> None:
    """Modules in the configuration file: the same reader, the config file's lines."""
    path = tmp_path / "config.yml"
    path.write_text("vici:\n  timeout: 5s\n" + DEEP.removeprefix("# probe modules\n"))
    with pytest.raises(ConfigFileError) as err:
        probe_settings_for(Settings(config_file=str(path)))
    assert str(err.value) == f"{path}:13: {DEEP_MESSAGE.removeprefix(':12: ')}"


def test_config_file_without_modules_has_no_probes(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("vici:\n  timeout: 5s\n")
    assert probe_settings_for(Settings(config_file=str(path))) is None
    assert probe_settings_for(Settings()) is None


def test_module_file_refuses_duplicate_keys(tmp_path: Path) -> None:
    doc = tmp_path / "modules.yml"
    doc.write_text("modules:\n  a: {prober: ike}\n  a: {prober: l2tp}\n")
    with pytest.raises(ProbeConfigError, match=r"modules.yml:3: .*duplicate key"):
        load_probe_settings(doc)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("vpn.example.net", "vpn.example.net", None),
        ("vpn.example.net:4500", "vpn.example.net", 4500),
        ("192.0.2.1", "192.0.2.1", None),
        ("192.0.2.1:500", "192.0.2.1", 500),
        ("2001:db8::1", "2001:db8::1", None),
        ("[2001:db8::1]:500", "2001:db8::1", 500),
        ("[2001:DB8:0::1]", "2001:db8::1", None),  # kept in one (canonical) form
        ("[::ffff:192.0.2.1]:500", "192.0.2.1", 500),  # where the kernel sends it
    ],
)
def test_targets(text: str, host: str, port: int | None) -> None:
    target = parse_target(text)
    assert (target.host, target.port) == (host, port)


@pytest.mark.parametrize(
    "text",
    ["", "http://x", "a b", "host:0", "host:99999", "[::1", "bad_host!", "user@host",
     "127.1", "3221225985", "0xc0.0.2.1", "192.0.2.010", "0.0.0.0", "[::]", "fe80::1%lo"],
)  # fmt: skip
def test_bad_targets(text: str) -> None:
    with pytest.raises(TargetError):
        parse_target(text)


def test_allow_list() -> None:
    allowed = parse_probe_settings(
        {"modules": {"m": {"prober": "ike"}},
         "probe": {"allowed_targets": ["192.0.2.0/24", "VPN.example.net."]}}
    ).allowed_targets  # fmt: skip
    assert allowed.allows_address("192.0.2.7") and not allowed.allows_address("198.51.100.1")
    assert allowed.allows_name("vpn.example.net")
    assert parse_target("vpn.example.net", allowed).host == "vpn.example.net"
    # A name outside the list may still resolve into an allowed network: checked later.
    assert parse_target("other.example.net", allowed).host == "other.example.net"
    names_only = AllowedTargets(hostnames=frozenset({"vpn.example.net"}))
    with pytest.raises(TargetError, match="allowed_targets"):
        parse_target("other.example.net", names_only)
    assert AllowedTargets().allows_address("203.0.113.1")
    assert allowed.allows_address("::ffff:192.0.2.7")


def test_module_ports() -> None:
    modules = parse_probe_settings(
        {"modules": {"v2": {"prober": "ike"}, "natt": {"prober": "ike", "ike": {"nat_t": True}},
                     "ike_port": {"prober": "ike", "ike": {"port": 4501}},
                     "l2tp": {"prober": "l2tp", "allow_target_port": True},
                     "login": {"prober": "login",
                               "login": {"psk": "k", "username": "u", "password": "p"}}},
         "probe": {"allowed_targets": ["192.0.2.0/24"]}}
    ).modules  # fmt: skip
    assert {name: m.port for name, m in modules.items()} == {
        "v2": 500, "natt": 4500, "ike_port": 4501, "l2tp": 1701, "login": 500,
    }  # fmt: skip
    assert [name for name, m in modules.items() if m.allow_target_port] == ["l2tp"]
