"""The one line-aware YAML reader of the configuration file, the probe modules and the web
configuration: `strict_yaml` underneath, every key's line remembered, every error
`FILE:LINE: KEY: message`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from exporter import strict_yaml
from exporter.settings.durations import parse_duration
from exporter.settings.errors import ConfigFileError, SettingsError

T = TypeVar("T")
#: A key path from the top of the file, e.g. ("collectors", "ppp", "interfaces"); list
#: items are their index as text.
KeyPath = tuple[str, ...]
ErrorType = type[SettingsError]


@dataclass
class YamlFile:
    """A parsed YAML file and the line (1-based) of every key and list item in it."""

    path: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    #: The class of the errors `error` makes (each file kind has its own subclass).
    error_type: ErrorType = ConfigFileError

    def line(self, at: KeyPath) -> int | None:
        """The line of `at`, or of its nearest ancestor that is in the file."""
        while at:
            if at in self.lines:
                return self.lines[at]
            at = at[:-1]
        return None

    def error(self, at: KeyPath, message: str) -> SettingsError:
        """`FILE:LINE: KEY: message` (without LINE when not even the section is in the
        file)."""
        line = self.line(at)
        where = f"{self.path}:{line}" if line else self.path
        key = ".".join(at) if at else "(top level)"
        return self.error_type(f"{where}: {key}: {message}")

    def top(self) -> Section:
        """A reader of the top-level mapping."""
        return Section(self, (), self.data)


def read_yaml(path: str | Path, error_type: ErrorType = ConfigFileError) -> YamlFile:
    """Read and check a YAML file (see `strict_yaml`); an empty file is an empty mapping."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise error_type(f"{path}: cannot read: {err.strerror or err}") from None
    return parse_yaml(data, path, error_type)


def parse_yaml(data: bytes, path: str | Path, error_type: ErrorType = ConfigFileError) -> YamlFile:
    try:
        node, value = strict_yaml.load(data)
    except strict_yaml.YamlProblem as problem:
        where = f"{path}:{problem.line}" if problem.line else str(path)
        key = f" {'.'.join(problem.path)}:" if problem.path else ""
        raise error_type(f"{where}:{key} {problem}") from None
    doc = YamlFile(str(path), value if value is not None else {}, error_type=error_type)
    if node is not None:
        _index_lines(node, (), doc.lines)
    return doc


def _index_lines(node: yaml.Node, at: KeyPath, lines: dict[KeyPath, int]) -> None:
    # Iterative: strict_yaml bounds the depth, but a walk should not lean on that.
    stack = [(node, at)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    here = (*at, str(key_node.value))
                    lines.setdefault(here, key_node.start_mark.line + 1)
                    stack.append((value_node, here))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                here = (*at, str(i))
                lines.setdefault(here, item.start_mark.line + 1)
                stack.append((item, here))


class Section:
    """Typed reads from one mapping of a file; a key nobody read is an error at `finish`."""

    def __init__(self, doc: YamlFile, at: KeyPath, data: Any) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise doc.error(at, f"expected a mapping, got {kind(data)}")
        self.doc = doc
        self.at = at
        self.data: dict[str, Any] = {str(k): v for k, v in data.items()}
        self.known: set[str] = set()

    def error(self, name: str, message: str) -> SettingsError:
        """The error of key `name` of this section."""
        return self.doc.error((*self.at, name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def section(self, name: str) -> Section:
        self.known.add(name)
        return Section(self.doc, (*self.at, name), self.data.get(name))

    def raw(self, name: str, default: Any = None) -> Any:
        """The value as parsed, unchecked (for a reader that checks it itself)."""
        self.known.add(name)
        return self.data.get(name, default)

    def value(self, name: str, default: T, convert: Callable[[Any], T]) -> T:
        """`convert(value)`, or `default` if absent; ValueError/TypeError from `convert`
        becomes this file's error at this key."""
        self.known.add(name)
        if name not in self.data:
            return default
        try:
            return convert(self.data[name])
        except (ValueError, TypeError) as err:
            raise self.error(name, str(err)) from None

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A list of non-empty strings, or `default` if absent; a bad item is an error at
        its own line (key `NAME.INDEX`)."""
        self.known.add(name)
        if name not in self.data:
            return default
        items = self.data[name]
        if not isinstance(items, list):
            raise self.error(name, f"expected a list of strings, got {kind(items)}")
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item:
                at = (*self.at, name, str(i))
                got = repr(item) if isinstance(item, str) else kind(item)
                raise self.doc.error(at, f"expected a non-empty string, got {got}")
        return tuple(items)

    def finish(self, hints: dict[str, str] | None = None) -> None:
        """Refuse the first key not read; `hints` says why a known-unsupported key is."""
        unknown = sorted(set(self.data) - self.known)
        if unknown:
            hint = (hints or {}).get(unknown[0])
            known = ", ".join(sorted(self.known)) or "none"
            raise self.error(unknown[0], hint or f"unknown key (known here: {known})")


# -- conversions for `Section.value` -------------------------------------------------------


def kind(value: Any) -> str:
    """The type of a parsed value, as an error message names it."""
    return "nothing" if value is None else type(value).__name__


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r}")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return convert


duration = parse_duration
