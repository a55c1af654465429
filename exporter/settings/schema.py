"""The one declaration of every setting: its flag, its YAML key, type, default, help, an
example value and whether a reload applies it live.

A setting is a field of a frozen options dataclass (`Settings` and the option groups it
holds: one per collector, declared next to it) made with `setting(...)`. Everything else
comes from walking those dataclasses (`entries`): the command-line flags and `--help`, the
YAML reader of `--config.file`, validation of settings built in code, the reload diff and
the README's flag table. Adding a setting is adding one field (and its test, which the
parametrised schema test writes itself from `example`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from exporter.settings import yaml_file
from exporter.settings.durations import MAX_DURATION, format_duration, parse_duration
from exporter.settings.errors import SettingsError

T = TypeVar("T")
Reload = Literal["live", "restart"]
#: Field names from `Settings` down to the setting, e.g. ("strongswan", "max_sas").
FieldPath = tuple[str, ...]

_SPEC = "l2tp_ipsec_exporter.setting"


@dataclass(frozen=True)
class Kind(Generic[T]):
    """How a setting's value is read from a flag and from YAML, checked and shown."""

    #: What a flag's value looks like in --help and the README (DURATION, N, PATH, …);
    #: empty for on/off switches, which get --x/--no-x.
    metavar: str
    #: The flag's text → value; ValueError says what is wrong.
    from_text: Callable[[str], T]
    #: The parsed YAML value → value; ValueError/TypeError says what is wrong.
    from_yaml: Callable[[Any], T]
    #: Value → the text a flag takes (help and README defaults).
    to_text: Callable[[T], str] = str
    #: Bounds of a value however it was made (also settings built in code).
    check: Callable[[T], None] = lambda value: None

    @property
    def switch(self) -> bool:
        return not self.metavar


@dataclass(frozen=True)
class Spec:
    """Where a setting is set and how a reload treats it (see `setting`)."""

    #: The command-line flag (`--collector.strongswan.max-sas`); None: YAML only.
    flag: str | None
    #: The key path in the configuration file.
    yaml: tuple[str, ...]
    help: str
    kind: Kind[Any]
    reload: Reload
    #: A valid value other than the default, as a flag takes it (tests, docs).
    example: str
    #: For `reload="live"`: a change this function calls True needs a restart anyway.
    restart_when: Callable[[Any, Any], bool] | None = None

    @property
    def name(self) -> str:
        """How errors and logs name it: the flag, else the YAML key."""
        return self.flag or ".".join(self.yaml)

    @property
    def key(self) -> str:
        return ".".join(self.yaml)


@dataclass(frozen=True)
class Entry:
    """One setting in the schema: the spec, where it lives in `Settings`, its default."""

    path: FieldPath
    spec: Spec
    default: Any

    def get(self, settings: Any) -> Any:
        value = settings
        for name in self.path:
            value = getattr(value, name)
        return value


def setting(
    default: Any = dataclasses.MISSING,
    *,
    flag: str | None,
    yaml: str,
    help: str,
    kind: Kind[Any],
    example: str,
    reload: Reload = "live",
    restart_when: Callable[[Any, Any], bool] | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that is a setting. `yaml` is the dotted key path."""
    spec = Spec(flag, tuple(yaml.split(".")), help, kind, reload, example, restart_when)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={_SPEC: spec})
    return dataclasses.field(default=default, metadata={_SPEC: spec})


def entries(settings_type: type[Any]) -> tuple[Entry, ...]:
    """Every setting of `settings_type` and of the option groups it holds, in
    declaration order."""
    return tuple(_walk(settings_type(), ()))


def _walk(instance: Any, path: FieldPath) -> Iterator[Entry]:
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        spec = f.metadata.get(_SPEC)
        if spec is not None:
            yield Entry((*path, f.name), spec, value)
        elif dataclasses.is_dataclass(value) and f.metadata.get("group", False):
            yield from _walk(value, (*path, f.name))


def group(factory: Callable[[], Any]) -> Any:
    """A field holding an option group (a dataclass of settings)."""
    return dataclasses.field(default_factory=factory, metadata={"group": True})


def replace_path(settings: T, path: FieldPath, value: Any) -> T:
    """`settings` with the field at `path` set to `value` (frozen dataclasses, nested)."""
    if len(path) == 1:
        return dataclasses.replace(settings, **{path[0]: value})  # type: ignore[type-var]
    inner = getattr(settings, path[0])
    return dataclasses.replace(  # type: ignore[type-var]
        settings, **{path[0]: replace_path(inner, path[1:], value)}
    )


def check(settings: Any, settings_entries: tuple[Entry, ...]) -> None:
    """Every setting's bounds; SettingsError naming the first bad one by its flag."""
    for entry in settings_entries:
        value = entry.get(settings)
        try:
            entry.spec.kind.check(value)
        except ValueError as err:
            shown = entry.spec.kind.to_text(value)
            raise SettingsError(f"{entry.spec.name} {shown}: {err}") from None


@dataclass(frozen=True)
class Diff:
    """What a reload changes: settings applied live, and settings that keep their running
    value until a restart."""

    live: tuple[Entry, ...]
    restart: tuple[Entry, ...]


def diff(old: Any, new: Any, settings_entries: tuple[Entry, ...]) -> Diff:
    live: list[Entry] = []
    restart: list[Entry] = []
    for entry in settings_entries:
        before, after = entry.get(old), entry.get(new)
        if before == after:
            continue
        spec = entry.spec
        if spec.reload == "restart" or (
            spec.restart_when is not None and spec.restart_when(before, after)
        ):
            restart.append(entry)
        else:
            live.append(entry)
    return Diff(tuple(live), tuple(restart))


def keep_running(new: T, old: Any, restart: tuple[Entry, ...]) -> T:
    """`new` with every setting in `restart` set back to its running value in `old`."""
    for entry in restart:
        new = replace_path(new, entry.path, entry.get(old))
    return new


# -- kinds -----------------------------------------------------------------------------------


def _bool_text(text: str) -> bool:
    raise ValueError("an on/off switch takes no value")  # argparse never calls it


SWITCH: Kind[bool] = Kind("", _bool_text, yaml_file.boolean, lambda v: "on" if v else "off")


def duration(*, zero_ok: bool) -> Kind[float]:
    """Seconds, in the one duration grammar; 0 allowed only where it means something."""

    def check(seconds: float) -> None:
        low_ok = seconds >= 0 if zero_ok else seconds > 0
        if not (low_ok and seconds <= MAX_DURATION):  # also False for nan
            raise ValueError(f"must be {'0 or more' if zero_ok else 'above 0'} seconds and finite")

    def read(value: Any) -> float:
        seconds = parse_duration(value)
        check(seconds)
        return seconds

    return Kind("DURATION", read, read, format_duration, check)


def duration_or_auto() -> Kind[float | None]:
    """Seconds above 0, or `auto` (None): the code picks the value as it runs."""
    fixed = duration(zero_ok=False)

    def read(value: Any) -> float | None:
        if value == "auto":
            return None
        try:
            return fixed.from_yaml(value)
        except ValueError as err:
            raise ValueError(f"{err} (or auto)") from None

    def check(value: float | None) -> None:
        if value is not None:
            fixed.check(value)

    def show(value: float | None) -> str:
        return "auto" if value is None else format_duration(value)

    return Kind("{auto,DURATION}", read, read, show, check)


def count(*, minimum: int) -> Kind[int]:
    """A whole number of at least `minimum`."""
    what = f"a whole number >= {minimum}"

    def check(value: int) -> None:
        if value < minimum:
            raise ValueError(f"must be {what}")

    def from_text(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) < minimum:
            raise ValueError(f"{text!r} is not {what}")
        return int(text)

    def from_yaml(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected {what}, got {value!r}")
        return value

    return Kind("N", from_text, from_yaml, str, check)


def text(metavar: str, parse: Callable[[str], T], show: Callable[[T], str] = str) -> Kind[T]:
    """A value written as text (flag and YAML string alike), read by `parse`."""

    def from_yaml(value: Any) -> T:
        return parse(yaml_file.text(value))

    def check(value: T) -> None:
        parse(show(value))  # a value built in code holds what its text would

    return Kind(metavar, parse, from_yaml, show, check)


def _none_if_empty(text: str) -> str | None:
    return text or None


def _empty_if_none(value: str | None) -> str:
    return value or ""


#: Text where the empty string means "not set" (None).
OPTIONAL_TEXT: Kind[str | None] = Kind(
    "", _none_if_empty, lambda v: _none_if_empty(yaml_file.text(v)), _empty_if_none
)


def optional_text(metavar: str) -> Kind[str | None]:
    """Text where the empty string (or no value) means "not set" (None)."""
    return dataclasses.replace(OPTIONAL_TEXT, metavar=metavar)


def choice(*choices: str) -> Kind[str]:
    parse = yaml_file.choice(*choices)

    def check(value: str) -> None:
        parse(value)

    return Kind(
        "{" + ",".join(choices) + "}", parse, lambda v: parse(yaml_file.text(v)), str, check
    )


def _auto_switch_text(text: str) -> str:
    if text not in ("auto", "on", "off"):
        raise ValueError(f"expected auto, on or off, got {text!r}")
    return text


def _auto_switch_yaml(value: Any) -> str:
    # YAML 1.1 reads on/off/true/false as booleans; "auto" stays text.
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "auto":
        return "auto"
    raise ValueError(f"expected auto, true or false, got {value!r}")


def _auto_switch_check(value: str) -> None:
    _auto_switch_text(value)


#: A collector that can be forced on or off, or left to decide at start ("auto").
AUTO_SWITCH: Kind[str] = Kind(
    "{auto,on,off}", _auto_switch_text, _auto_switch_yaml, str, _auto_switch_check
)
