"""The settings schema: every setting reaches the daemon through its flag and through its
YAML key, the flags and keys are exactly the schema's, README's table is the schema's.

Parametrised over `exporter.config.SETTINGS`: a setting added to the schema is covered
here without a line of test, and one whose flag or key is not wired (the command line or
the file reader drops it) fails. The value used is the setting's own `example`, which must
differ from its default.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import cli
from exporter.cli import build_parser, example_config_file, parse_command_line, readme_flag_table
from exporter.config import SETTINGS, Settings
from exporter.config_file import read_document, settings_from_document
from exporter.settings import schema
from exporter.settings.schema import Entry
from exporter.settings.table import BEGIN, END

REPO = Path(__file__).resolve().parents[2]
IDS = [".".join(entry.path) for entry in SETTINGS]
#: Flags that configure the configuration, not a setting.
NOT_SETTINGS = {"--help", "--config.file", "--config.check", "--version"}


@pytest.fixture(autouse=True)
def _anything_named_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    # The examples name a network namespace and a web config file that do not exist here;
    # their own tests check that a missing one is refused.
    monkeypatch.setattr(cli, "netns_problem", lambda name: None)
    monkeypatch.setattr(cli, "load_web_config", lambda path: None)


def expected(entry: Entry) -> Any:
    if entry.spec.kind.switch:
        return entry.spec.example == "true"
    return entry.spec.kind.from_text(entry.spec.example)


def flag_argv(entry: Entry) -> list[str]:
    spec = entry.spec
    assert spec.flag is not None
    if spec.kind.switch:
        return [spec.flag if expected(entry) else "--no-" + spec.flag.removeprefix("--")]
    return [spec.flag, spec.example]


def yaml_text(entry: Entry) -> str:
    """The setting's key with its example written as an operator would (unquoted)."""
    lines = []
    for depth, name in enumerate(entry.spec.yaml[:-1]):
        lines.append(f"{'  ' * depth}{name}:")
    value = entry.spec.example
    if entry.spec.kind.metavar in ("[HOST]:PORT", "GLOB"):
        value = f'"{value}"'  # YAML would read `a:b` and `x*` otherwise
    lines.append(f"{'  ' * (len(entry.spec.yaml) - 1)}{entry.spec.yaml[-1]}: {value}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("entry", SETTINGS, ids=IDS)
def test_the_example_is_not_the_default(entry: Entry) -> None:
    assert expected(entry) != entry.default, "the example must change something"
    entry.spec.kind.check(expected(entry))


@pytest.mark.parametrize("entry", SETTINGS, ids=IDS)
def test_set_through_its_flag(entry: Entry) -> None:
    if entry.spec.flag is None:
        pytest.skip("a setting of the file only")
    command_line = parse_command_line(flag_argv(entry))
    assert entry.get(command_line.settings) == expected(entry)
    # A reload reads the file again and puts the given flags back on top.
    assert entry.get(command_line.reload_settings()) == expected(entry)
    others = [e for e in SETTINGS if e is not entry]
    assert all(e.get(command_line.settings) == e.default for e in others)


@pytest.mark.parametrize("entry", SETTINGS, ids=IDS)
def test_set_through_its_yaml_key(entry: Entry, tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(yaml_text(entry))
    settings = settings_from_document(read_document(path))
    assert entry.get(settings) == expected(entry), path.read_text()
    command_line = parse_command_line(["--config.file", str(path)])
    assert entry.get(command_line.settings) == expected(entry)
    assert entry.get(command_line.reload_settings()) == expected(entry)


@pytest.mark.parametrize("entry", SETTINGS, ids=IDS)
def test_the_flag_wins_over_the_file(entry: Entry, tmp_path: Path) -> None:
    if entry.spec.flag is None:
        pytest.skip("a setting of the file only")
    path = tmp_path / "config.yml"
    path.write_text(yaml_text(entry))
    default_argv: list[str]
    if entry.spec.kind.switch:
        on = bool(entry.default)
        default_argv = [entry.spec.flag if on else "--no-" + entry.spec.flag.removeprefix("--")]
    else:
        default_argv = [entry.spec.flag, entry.spec.kind.to_text(entry.default)]
    settings = parse_command_line(["--config.file", str(path), *default_argv]).settings
    assert entry.get(settings) == entry.default


def test_the_flags_are_the_schemas() -> None:
    """No flag outside the schema (one that would skip it), none of the schema missing."""
    flags = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and not option.startswith("--no-")
    }
    schema_flags = {e.spec.flag for e in SETTINGS if e.spec.flag}
    assert flags - NOT_SETTINGS == schema_flags


def test_the_file_knows_exactly_the_schemas_keys(tmp_path: Path) -> None:
    """A document with every key of the schema at once is read, each value arriving; one
    key more is refused."""
    document: dict[str, Any] = {}
    for entry in SETTINGS:
        _merge(document, yaml.safe_load(yaml_text(entry)))
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(document))
    settings = parse_command_line(["--config.file", str(path)]).settings
    assert [entry.get(settings) for entry in SETTINGS] == [expected(e) for e in SETTINGS]
    path.write_text("collectors:\n  strongswan:\n    max_sa: 5\n")
    with pytest.raises(ValueError, match=r"config.yml:3: collectors.strongswan.max_sa: unknown"):
        settings_from_document(read_document(path))


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict):
            _merge(into.setdefault(key, {}), value)
        else:
            into[key] = value


def test_settings_built_in_code_are_checked_like_the_flags() -> None:
    for entry in SETTINGS:
        if entry.spec.kind.metavar != "DURATION":
            continue
        with pytest.raises(ValueError, match=entry.spec.name):
            schema.replace_path(Settings(), entry.path, -1.0)


def test_readme_table_is_the_schemas() -> None:
    readme = (REPO / "README.md").read_text()
    assert BEGIN in readme and END in readme
    table = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == readme_flag_table(), "README is stale: run scripts/flag-table"


def test_help_shows_every_default() -> None:
    text = build_parser().format_help()
    for entry in SETTINGS:
        shown = entry.spec.kind.to_text(entry.default)
        if shown:
            assert f"(default {shown})" in " ".join(text.split()), entry.spec.name


def test_switch_flags_accept_no_value() -> None:
    with pytest.raises(SystemExit):
        parse_command_line(["--collector.strongswan.events=yes"])
    assert isinstance(build_parser(), argparse.ArgumentParser)


def test_the_example_file_is_the_schemas_and_holds_the_defaults() -> None:
    path = REPO / "examples" / "config.yml"
    assert path.read_text() == example_config_file(), "stale: run scripts/flag-table"
    settings = settings_from_document(read_document(path))
    assert [e.get(settings) for e in SETTINGS] == [e.default for e in SETTINGS]
