"""A walk over the parsed YAML of the web configuration whose errors name the file, the
key and its line: `FILE: KEY (line N): message`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from exporter.web_config.errors import WebConfigError

#: A key path from the top of the file, e.g. ("tls_server_config", "cert_file").
At = tuple[str, ...]


class Reader:
    """Typed reads of parsed values; each error names where in the file it is."""

    def __init__(
        self, path: Path, node: yaml.Node | None, hints: Mapping[str, str] | None = None
    ) -> None:
        self.path = path
        #: unknown key → the message that says why it is not supported
        self.hints = dict(hints or {})
        self.lines: dict[At, int] = {}
        if node is not None:
            self._index(node, ())

    def _index(self, node: yaml.Node, at: At) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    here = (*at, str(key.value))
                    self.lines[here] = key.start_mark.line + 1
                    self._index(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                here = (*at, str(i))
                self.lines[here] = item.start_mark.line + 1
                self._index(item, here)

    def error(self, at: At, message: str) -> WebConfigError:
        where = ".".join(at)
        line = self.lines.get(at)
        suffix = f" (line {line})" if line else ""
        return WebConfigError(f"{self.path}: {where}{suffix}: {message}")

    def mapping(self, value: Any, at: At, known: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(at, f"must be a mapping, not {kind(value)}")
        for key in value:
            if not isinstance(key, str) or key not in known:
                hint = self.hints.get(key) if isinstance(key, str) else None
                raise self.error(
                    (*at, str(key)), hint or f"unknown key (known: {', '.join(known)})"
                )
        return value

    def text(self, value: Any, at: At) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(at, f"must be a non-empty string, not {kind(value)}")
        return value

    def strings(self, value: Any, at: At) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(at, f"must be a list, not {kind(value)}")
        return tuple(self.text(v, (*at, str(i))) for i, v in enumerate(value))

    def file(self, value: Any, at: At) -> Path:
        """A path to a readable file; a relative one is relative to the file read."""
        path = Path(self.text(value, at))
        if not path.is_absolute():
            path = self.path.parent / path
        if not path.is_file():
            raise self.error(at, f"{path} is not a readable file")
        return path

    def choice(self, value: Any, at: At, choices: Mapping[str, Any]) -> str:
        if value not in choices:
            raise self.error(at, f"{value!r} is not one of {', '.join(choices)}")
        return str(value)


def kind(value: Any) -> str:
    """The type of a parsed value, as an error message names it."""
    return "nothing" if value is None else type(value).__name__
