"""The YAML configuration file: values, precedence of flags, errors naming key and line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import load_settings, parse_command_line
from exporter.config import Settings
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


#: The keys of the file that are not settings of the schema (the privacy section; the
#: schema's own are covered by tests/settings/test_schema.py), with a value unlike
#: its default, and where that value must arrive in `Settings`.
EVERY_KEY: dict[str, tuple[Any, Callable[[Settings], Any], Any]] = {
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


def test_every_privacy_key_is_read(tmp_path: Path) -> None:
    """Each value must arrive in the settings and differ from the default there."""
    settings = settings_from_document(read_document(write(tmp_path, every_key_document())))
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
