"""The YAML configuration file: values, precedence of flags, errors naming key and line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import config_file
from exporter.cli import load_settings, parse_command_line
from exporter.config import Settings, ViciAddress
from exporter.config_file import ConfigFileError, read_document, settings_from_document

REPO = Path(__file__).resolve().parents[2]

FULL = """\
web:
  listen_address: "127.0.0.1:9999"
  telemetry_path: /m
vici:
  socket: tcp://127.0.0.1:4502
  timeout: 1500ms
log: {level: debug, format: json}
collectors:
  strongswan:
    sa_details: true
    series_limit: 5
    reauth_grace: 30s
    user_idle_timeout: 2h
privacy:
  users: hash
  addresses: drop
  hash_key_file: key
  families:
    strongswan_user_sessions: {users: keep}
"""


def write(tmp_path: Path, text: str | bytes, key: bytes = b"0123456789abcdef0123") -> Path:
    (tmp_path / "key").write_bytes(key)
    path = tmp_path / "config.yml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


#: Every key of the file, with a value unlike its default (and unlike what a neighbouring
#: key would give), and where that value must arrive in `Settings`.
EVERY_KEY: dict[str, tuple[Any, Callable[[Settings], Any], Any]] = {
    "web.listen_address": ("127.0.0.1:9999", lambda s: str(s.listen_address), "127.0.0.1:9999"),
    "web.telemetry_path": ("/m", lambda s: s.telemetry_path, "/m"),
    "web.config_file": ("web.yml", lambda s: s.web_config_file, "web.yml"),
    "web.enable_lifecycle": (True, lambda s: s.enable_lifecycle, True),
    "web.header_timeout": ("7s", lambda s: s.web_limits.header_timeout, 7.0),
    "web.idle_timeout": ("2m", lambda s: s.web_limits.idle_timeout, 120.0),
    "web.max_connections": (64, lambda s: s.web_limits.max_connections, 64),
    "vici.socket": (
        "tcp://127.0.0.1:4502",
        lambda s: s.vici_socket,
        ViciAddress("tcp", host="127.0.0.1", port=4502),
    ),
    "vici.timeout": ("1500ms", lambda s: s.vici_timeout, 1.5),
    "log.level": ("debug", lambda s: s.log_level, "debug"),
    "log.format": ("json", lambda s: s.log_format, "json"),
    "collectors.strongswan.sa_details": (True, lambda s: s.strongswan.sa_details, True),
    "collectors.strongswan.user_metrics": (False, lambda s: s.strongswan.user_metrics, False),
    "collectors.strongswan.series_limit": (
        5,
        lambda s: (s.strongswan.series_limit, s.kernel.series_limit),
        (5, 5),
    ),
    "collectors.strongswan.events": (False, lambda s: s.strongswan.events, False),
    "collectors.strongswan.reauth_grace": ("30s", lambda s: s.strongswan.reauth_grace, 30.0),
    "collectors.strongswan.user_idle_timeout": (
        "2h",
        lambda s: s.strongswan.user_idle_seconds,
        7200.0,
    ),
    "collectors.strongswan.refresh_interval": (3, lambda s: s.strongswan.refresh_interval, 3.0),
    "collectors.strongswan.sa_refresh_interval": (
        "5m",
        lambda s: s.strongswan.sa_refresh_interval,
        300.0,
    ),
    "collectors.strongswan.max_sas": (42, lambda s: s.strongswan.max_sas, 42),
    "collectors.ppp.enabled": (False, lambda s: s.kernel.ppp, False),
    "collectors.ppp.interfaces": ("l2tp*", lambda s: s.kernel.ppp_interfaces, "l2tp*"),
    "collectors.l2tp.enabled": (False, lambda s: s.kernel.l2tp, False),
    "collectors.xfrm.enabled": (False, lambda s: s.kernel.xfrm, False),
    "collectors.sessions.enabled": (False, lambda s: s.kernel.sessions, False),
    "collectors.sessions.state_dir": (
        "/run/elsewhere",
        lambda s: s.kernel.state_dir,
        Path("/run/elsewhere"),
    ),
    "collectors.kernel.netns": ("vpn", lambda s: s.kernel.netns, "vpn"),
    "privacy.users": ("hash", lambda s: s.privacy.treatment("any_family", "users"), "hash"),
    "privacy.addresses": ("drop", lambda s: s.privacy.treatment("any_family", "addresses"), "drop"),
    "privacy.hash_key_file": ("key", lambda s: s.privacy.hash_key, b"0123456789abcdef0123"),
    # Unlike both the built-in default (keep) and the file's own defaults above.
    "privacy.families.strongswan_user_sessions.users": (
        "drop",
        lambda s: s.privacy.treatment("strongswan_user_sessions", "users"),
        "drop",
    ),
    "privacy.families.strongswan_user_sessions.addresses": (
        "hash",
        lambda s: s.privacy.treatment("strongswan_user_sessions", "addresses"),
        "hash",
    ),
}


def every_key_document() -> str:
    document: dict[str, Any] = {}
    for dotted, (value, _, _) in EVERY_KEY.items():
        *sections, leaf = dotted.split(".")
        node = document
        for name in sections:
            node = node.setdefault(name, {})
        node[leaf] = value
    return yaml.safe_dump(document, sort_keys=False)


def test_every_key_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The keys come from the reader itself: each key it reads is recorded, so a key added
    to the reader without an entry in EVERY_KEY fails here. Each value must arrive in the
    settings and differ from the default there, so a key read but not used fails too."""
    read: list[str] = []
    plain_value = config_file._Reader.value

    def recording(self: Any, name: str, default: Any, convert: Callable[[Any], Any]) -> Any:
        read.append(".".join((*self.path, name)))
        return plain_value(self, name, default, convert)

    monkeypatch.setattr(config_file._Reader, "value", recording)
    settings = settings_from_document(read_document(write(tmp_path, every_key_document())))
    assert len(read) == len(set(read)), "a key was read twice"
    uncovered = sorted(set(read) - set(EVERY_KEY))
    assert not uncovered, f"keys the reader knows but EVERY_KEY lacks: {uncovered}"
    assert set(read) == set(EVERY_KEY)
    defaults = Settings()
    for key, (_, where, expected) in EVERY_KEY.items():
        assert where(settings) == expected, key
        assert where(defaults) != expected, f"{key}: the test value is the default"


def test_flags_given_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    cli = parse_command_line(["--config.file", str(path), "--vici.timeout", "3"])
    assert cli.settings.vici_timeout == 3
    assert cli.settings.telemetry_path == "/m"  # not given: the file's value
    assert load_settings(str(path), cli.flags).vici_timeout == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web:\n  listen_adress: ':1'\n", r"config.yml:2: web.listen_adress: unknown key"),
        ("vici:\n  timeout: soon\n", r"config.yml:2: vici.timeout: expected a duration"),
        ("vici:\n  socket: ftp://x\n", r"config.yml:2: vici.socket: .*unix://"),
        (
            "collectors:\n  strongswan:\n    series_limit: -1\n",
            r"config.yml:3: collectors.strongswan.series_limit: expected a whole number",
        ),
        ("log:\n  level: loud\n", r"config.yml:2: log.level: expected one of"),
        ("privacy:\n  users: hash\n", r"privacy.hash_key_file: `hash` needs a secret key"),
        ("web: [1, 2\n", r"config.yml:2: not valid YAML"),
        ("- a\n- b\n", r"config.yml: \(top level\): expected a mapping"),
        ("vici:\n  timeout: .inf\n", r"config.yml:2: vici.timeout: .*longer than any timeout"),
        ("vici:\n  timeout: 5sss\n", r"config.yml:2: vici.timeout: expected a duration"),
        ("vici: {timeout: 1s, timeout: 2s}\n", r"config.yml:1: vici.timeout: duplicate key"),
        ("web:\n  telemetry_path: /probe\n", r"config.yml:2: web.telemetry_path: .*shadow"),
        (b"log: {}\n# \xff\n", r"config.yml:2: not UTF-8: byte 0xff"),
    ],
)
def test_errors_name_the_key_and_line(tmp_path: Path, text: str | bytes, expected: str) -> None:
    with pytest.raises(ConfigFileError, match=expected):
        settings_from_document(read_document(write(tmp_path, text)))


def test_short_hash_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "privacy:\n  users: hash\n  hash_key_file: key\n", key=b"short")
    with pytest.raises(ConfigFileError, match="at least 16 bytes"):
        settings_from_document(read_document(path))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], cwd=REPO, capture_output=True, text=True
    )


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    result = run_cli("--config.file", str(write(tmp_path, FULL)), "--config.check")
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_config_check_rejects_a_bad_file_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "vici:\n  timeout: soon\n")
    result = run_cli("--config.file", str(path), "--config.check")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"{path}:2: vici.timeout" in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_cli("--config.file", str(tmp_path / "nope.yml"), "--config.check")
    assert result.returncode == 2
    assert "cannot read" in result.stderr
