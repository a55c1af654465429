"""An operator's typo or a hostile file on every configuration input (issue 14, items 10
and 12): flags, `--config.file` (settings and probe modules) and `--web.config.file`.

Contract: what cannot be honoured is refused with one line naming the flag, key or file;
on the command line that is exit code 2, at a reload the running configuration stays and
`POST /-/reload` answers 400 with the reason. Nothing crashes, nothing runs for long.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from exporter.cli import parse_command_line
from exporter.config import SettingsError
from exporter.config_file import ConfigFileError, read_document, settings_from_document
from exporter.probe_config import probe_settings_for
from exporter.web_config import WebConfigError, load_web_config

from ..conftest import REPO, StartExporter
from .helpers import no_hang

#: Every flag that takes a duration, and the config file key that sets the same thing.
DURATION_SETTINGS = {
    "--vici.timeout": "vici:\n  timeout: {}\n",
    "--collector.strongswan.reauth-grace": "collectors:\n  strongswan:\n    reauth_grace: {}\n",
    "--collector.strongswan.user-idle-timeout": (
        "collectors:\n  strongswan:\n    user_idle_timeout: {}\n"
    ),
    "--collector.strongswan.refresh-interval": (
        "collectors:\n  strongswan:\n    refresh_interval: {}\n"
    ),
    "--collector.strongswan.sa-refresh-interval": (
        "collectors:\n  strongswan:\n    sa_refresh_interval: {}\n"
    ),
    "--web.header-timeout": "web:\n  header_timeout: {}\n",
    "--web.idle-timeout": "web:\n  idle_timeout: {}\n",
}
#: Not a duration on the command line (`nan` used to switch refresh-interval to asking
#: charon at every scrape, `5sss` passed as 5 s).
BAD_DURATION_FLAGS = ["inf", "nan", "1.0e+400", "5sss", "-inf", "Infinity", "1e3", "s", "9" * 400]
#: YAML: `.inf`, `.nan` and `1.0e+400` are floats (the last one infinite).
BAD_DURATION_YAML = [".inf", "-.inf", ".nan", "1.0e+400", "'5sss'", "inf", "nan", "9" * 400]

RESERVED_PATHS = ["/-/ready", "/-/reload", "/-/healthy", "/-/quit", "/probe", "/", "/{x:.*}"]


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one line `parse_command_line` exits 2 with."""
    with pytest.raises(SystemExit) as info:
        parse_command_line(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def write(tmp_path: Path, text: str | bytes, name: str = "config.yml") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def load(path: Path) -> None:
    """Everything the daemon reads from a config file: settings and probe modules."""
    settings = settings_from_document(read_document(path))
    probe_settings_for(settings)


# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", BAD_DURATION_FLAGS)
@pytest.mark.parametrize("flag", list(DURATION_SETTINGS))
def test_bad_duration_flag_is_refused(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    err = refused(capsys, [flag, value, "--config.check"])
    assert flag in err, err


@pytest.mark.parametrize("value", BAD_DURATION_YAML)
@pytest.mark.parametrize("flag", list(DURATION_SETTINGS))
def test_bad_duration_in_the_config_file_is_refused(tmp_path: Path, flag: str, value: str) -> None:
    text = DURATION_SETTINGS[flag].format(value)
    key = text.split(":")[-2].split()[-1]
    with pytest.raises(ConfigFileError) as info:
        load(write(tmp_path, text))
    assert key in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("flag_value", "yaml_value", "seconds"),
    [("5", "5", 5.0), ("5s", "5s", 5.0), ("1500ms", "1500ms", 1.5), ("2m", "2m", 120.0),
     ("1h", "1h", 3600.0), ("0.5", "0.5", 0.5), ("2.5s", "2.5s", 2.5)],
)  # fmt: skip
def test_flags_and_the_file_read_durations_alike(
    tmp_path: Path, flag_value: str, yaml_value: str, seconds: float
) -> None:
    from_flag = parse_command_line(["--vici.timeout", flag_value]).settings.vici_timeout
    path = write(tmp_path, f"vici:\n  timeout: {yaml_value}\n")
    from_file = settings_from_document(read_document(path)).vici_timeout
    assert from_flag == from_file == seconds


def test_nan_refresh_interval_does_not_switch_to_asking_at_every_scrape(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    refused(capsys, ["--collector.strongswan.refresh-interval", "nan"])
    path = write(tmp_path, "collectors:\n  strongswan:\n    refresh_interval: .nan\n")
    err = refused(capsys, ["--config.file", str(path)])
    assert f"{path}:3: collectors.strongswan.refresh_interval" in err


# -- telemetry path ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", RESERVED_PATHS)
def test_telemetry_path_cannot_shadow_another_endpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, path: str
) -> None:
    err = refused(capsys, ["--web.telemetry-path", path])
    assert "--web.telemetry-path" in err
    config = write(tmp_path, f"web:\n  telemetry_path: '{path}'\n")
    err = refused(capsys, ["--config.file", str(config)])
    assert "telemetry_path" in err or "telemetry-path" in err, err


@pytest.mark.parametrize("path", ["/metrics", "/m", "/exporter/metrics", "/-metrics", "/probes"])
def test_ordinary_telemetry_paths_are_accepted(path: str) -> None:
    assert parse_command_line(["--web.telemetry-path", path]).settings.telemetry_path == path


# -- files that are not UTF-8 ------------------------------------------------------------------

NOT_UTF8 = b"vici:\n  timeout: 5s\n# caf\xe9 latin-1\n"


def test_non_utf8_config_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, NOT_UTF8)
    err = refused(capsys, ["--config.file", str(path)])
    assert f"{path}:3: not UTF-8" in err, err
    err = refused(capsys, ["--config.file", str(path), "--config.check"])
    assert "not UTF-8" in err


def test_non_utf8_config_check_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, NOT_UTF8)
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(path), "--config.check"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "not UTF-8" in result.stderr


def test_non_utf8_web_config_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"basic_auth_users:\n  caf\xe9: x\n", "web.yml")
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    assert str(info.value) == f"{path}:2: not UTF-8: byte 0xe9; save the file as UTF-8"


def post(url: str) -> tuple[int, str]:
    req = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def test_reload_of_a_non_utf8_file_is_rejected_with_400(
    tmp_path: Path, start_exporter: StartExporter
) -> None:
    path = write(tmp_path, "vici:\n  timeout: 5s\n")
    exp = start_exporter(
        f"unix://{tmp_path}/no-charon.vici", "--config.file", str(path), "--web.enable-lifecycle"
    )
    write(tmp_path, NOT_UTF8)
    status, body = post(exp.url + "/-/reload")
    assert status == 400, body
    assert "not UTF-8" in body, body
    exp.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while exp.stderr_text().count("reload rejected") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = exp.stderr_text()
    assert log.count("reload rejected") == 2, log
    assert "Traceback" not in log and "never retrieved" not in log, log
    assert exp.proc.poll() is None
    assert exp.get("/-/healthy")[0] == 200


# -- duplicate keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vici:\n  timeout: 5s\n  timeout: 1s\n", "config.yml:3: vici.timeout: duplicate key"),
        ("vici: {}\nlog: {}\nvici: {timeout: 1s}\n", "config.yml:3: vici: duplicate key"),
        (
            "modules:\n  a:\n    prober: ike\n    prober: l2tp\n",
            "config.yml:4: modules.a.prober: duplicate key (first on line 3)",
        ),
        ("modules:\n  a: {prober: ike}\n  a: {prober: ike}\n", "config.yml:3: modules.a: dupl"),
    ],
)
def test_duplicate_keys_in_the_config_file_are_refused(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigFileError) as info:
        load(write(tmp_path, text))
    assert expected in str(info.value)


def test_a_merge_key_is_not_a_duplicate(tmp_path: Path) -> None:
    path = write(tmp_path, "vici:\n  <<: {timeout: 2s}\n  timeout: 3s\n")
    assert settings_from_document(read_document(path)).vici_timeout == 3


def test_duplicate_keys_in_the_web_config_are_refused(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    path = write(tmp_path, f"basic_auth_users:\n  alice: {hashed}\n  alice: {hashed}\n", "web.yml")
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    assert str(info.value) == f"{path}:3: basic_auth_users.alice: duplicate key (first on line 2)"


# -- bcrypt cost -------------------------------------------------------------------------------


def hash_with_cost(cost: int) -> str:
    """A well-formed bcrypt hash claiming `cost` (made at 4, the cost field rewritten:
    making a real cost-31 hash would itself take a day)."""
    real = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    return f"{real[:4]}{cost:02d}{real[6:]}"


@pytest.mark.parametrize("cost", [15, 18, 31, 99, 3, 0])
def test_bcrypt_cost_out_of_bounds_is_refused(tmp_path: Path, cost: int) -> None:
    path = write(tmp_path, f"basic_auth_users:\n  alice: {hash_with_cost(cost)}\n", "web.yml")
    started = time.monotonic()
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    assert time.monotonic() - started < 1
    assert f"{path}:2: basic_auth_users.alice: bcrypt cost {cost}" in str(info.value)


@pytest.mark.parametrize("cost", [4, 10, 14])
def test_bcrypt_cost_within_bounds_is_accepted(tmp_path: Path, cost: int) -> None:
    path = write(tmp_path, f"basic_auth_users:\n  alice: {hash_with_cost(cost)}\n", "web.yml")
    assert list(load_web_config(path).users) == ["alice"]


# -- YAML alias bombs, recursion, depth --------------------------------------------------------


def billion_laughs(levels: int = 7, width: int = 9) -> str:
    """9**7 = 4.8 million list items from 700 bytes (14 s to walk before the fix)."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


BOMBS = {
    "billion-laughs-top": billion_laughs(),
    "billion-laughs-in-modules": "modules:\n  "
    + billion_laughs().replace("\n", "\n  ").rstrip()
    + "\n",
    "recursive-alias": "modules: &m\n  a: *m\n",
    "deep-nesting": "modules: " + "[" * 5000 + "]" * 5000 + "\n",
    "many-values": "modules:\n" + "".join(f"  m{i}: {{}}\n" for i in range(60_000)),
    "huge-file": "# " + "x" * (1 << 21) + "\nvici: {}\n",
}


@pytest.mark.parametrize("text", BOMBS.values(), ids=BOMBS.keys())
def test_yaml_bombs_in_the_config_file_are_refused_fast(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    started = time.monotonic()
    with no_hang(3), pytest.raises(ConfigFileError) as info:
        load(path)
    assert time.monotonic() - started < 2
    assert str(info.value).startswith(f"{path}"), info.value
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", BOMBS.values(), ids=BOMBS.keys())
def test_yaml_bombs_in_the_web_config_are_refused_fast(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text, "web.yml")
    started = time.monotonic()
    with no_hang(3), pytest.raises(WebConfigError) as info:
        load_web_config(path)
    assert time.monotonic() - started < 2
    assert "\n" not in str(info.value)


def test_a_few_aliases_still_work(tmp_path: Path) -> None:
    path = write(tmp_path, "x: &t 3s\nvici:\n  timeout: *t\nweb:\n  idle_timeout: *t\n")
    with pytest.raises(ConfigFileError, match="x: unknown key"):
        settings_from_document(read_document(path))  # aliases parse; `x` is unknown
    path = write(tmp_path, "vici: &v {timeout: 3s}\n")
    assert settings_from_document(read_document(path)).vici_timeout == 3


def test_reload_of_a_bomb_does_not_block_the_loop(tmp_path: Path) -> None:
    """The daemon's reload path (load_settings + probes + web config) on a bomb."""
    from exporter.daemon import Runtime

    path = write(tmp_path, "vici:\n  timeout: 5s\n")
    command_line = parse_command_line(
        ["--config.file", str(path), "--vici.socket", f"unix://{tmp_path}/x.vici"]
    )

    async def main() -> float:
        runtime = Runtime(command_line.settings, command_line.reload_settings)
        write(tmp_path, BOMBS["billion-laughs-in-modules"])
        started = time.monotonic()
        with no_hang(3), pytest.raises(SettingsError):
            await runtime.reload()
        elapsed = time.monotonic() - started
        await runtime.close()
        return elapsed

    assert asyncio.run(main()) < 1
