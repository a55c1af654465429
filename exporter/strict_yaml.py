"""YAML for the configuration files: PyYAML's safe loader, minus what an operator's typo
or a hostile file can do with it.

Refused, each with the line it is on: bytes that are not UTF-8, a key given twice in one
mapping (PyYAML keeps the last one silently), more than `MAX_NODES` values once aliases
are expanded (a "billion laughs" document of 700 bytes walks 4.8 million nodes), an
alias to the mapping it sits in (an endless structure), nesting deeper than `MAX_DEPTH`,
and files over `MAX_BYTES`.
"""

from __future__ import annotations

from typing import Any

import yaml

#: Values (nodes) of the document, with every alias expanded. The shipped examples have
#: about 100, a config with a hundred probe modules about 2,000; PyYAML composes 10,000
#: in ~0.25 s, the time a reload holds the daemon.
MAX_NODES = 10_000
#: Bytes of a file: the shipped examples have 3 KB; PyYAML scans 256 KiB in ~0.15 s
#: (a 5 MB line took 1 s, 60,000 short keys 3 s).
MAX_BYTES = 256 << 10
#: Mappings and lists inside each other. The deepest real config is 5; PyYAML's own
#: recursion gives out somewhere above 300.
MAX_DEPTH = 64

_MERGE = "tag:yaml.org,2002:merge"
_TOO_MANY = f"more than {MAX_NODES} values, aliases expanded (a configuration has hundreds)"


class YamlProblem(Exception):
    """What is wrong (`what`, and a `detail`), the line (1-based) and the key path."""

    def __init__(
        self, what: str, detail: str = "", line: int | None = None, path: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{what}: {detail}" if detail else what)
        self.what = what
        self.detail = detail
        self.line = line
        self.path = path


class _Loader(yaml.SafeLoader):
    """The safe loader, stopping at `MAX_DEPTH` while it composes: PyYAML's scanner slows
    down with every open level (5,000 nested `[` take 9 s just to parse)."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH or self._nodes > MAX_NODES:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                if self._depth > MAX_DEPTH:
                    raise YamlProblem(f"nested more than {MAX_DEPTH} levels deep", line=line)
                raise YamlProblem(_TOO_MANY, line=line)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def decode(data: bytes) -> str:
    """The text of a UTF-8 file; `YamlProblem` at the first byte that is not UTF-8, or for
    a file over `MAX_BYTES`."""
    if len(data) > MAX_BYTES:
        raise YamlProblem(f"larger than {MAX_BYTES // 1024} KiB; not a configuration file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        byte = data[err.start : err.start + 1].hex()
        raise YamlProblem("not UTF-8", f"byte 0x{byte}; save the file as UTF-8", line) from None


def _not_valid(err: yaml.YAMLError) -> YamlProblem:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return YamlProblem("not valid YAML", problem, mark.line + 1 if mark is not None else None)


def compose(text: str) -> yaml.Node | None:
    """The node tree of a one-document YAML text, checked (see the module's doc)."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise _not_valid(err) from None
    if node is not None:
        _check(node)
    return node


def construct(node: yaml.Node | None) -> Any:
    """The Python value of a node tree from `compose` (the safe loader's types)."""
    if node is None:
        return None
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise _not_valid(err) from None
    finally:
        loader.dispose()


def load(data: bytes) -> tuple[yaml.Node | None, Any]:
    """Decode, compose, check and construct: (node tree, value)."""
    node = compose(decode(data))
    return node, construct(node)


def _check(root: yaml.Node) -> None:
    """Expanded size, depth, cycles and duplicate keys, each node visited once.

    Iterative: a recursive walk is what a deep document breaks. Aliases are the same node
    object in several places, so sizes are memoized per node; a node met again while it
    is still open is an alias to one of its own parents.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str, ...], bool]] = [(root, (), False)]
    while stack:
        node, path, closing = stack.pop()
        key = id(node)
        line = node.start_mark.line + 1
        if closing:
            open_nodes.discard(key)
            children = [child for child, _ in _children(node, path)]
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_NODES:
                raise YamlProblem(_TOO_MANY, line=line, path=path)
            if depth[key] > MAX_DEPTH:
                raise YamlProblem(f"nested more than {MAX_DEPTH} levels deep", "", line, path)
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise YamlProblem(
                "an alias refers to a mapping or list it is inside of", "endless", line, path
            )
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(node, path)
        stack.append((node, path, True))
        stack.extend((child, at, False) for child, at in reversed(_children(node, path)))


def _children(node: yaml.Node, path: tuple[str, ...]) -> list[tuple[yaml.Node, tuple[str, ...]]]:
    if isinstance(node, yaml.MappingNode):
        out = []
        for key_node, value_node in node.value:
            at = (*path, str(key_node.value)) if isinstance(key_node, yaml.ScalarNode) else path
            out += [(key_node, path), (value_node, at)]
        return out
    if isinstance(node, yaml.SequenceNode):
        return [(item, (*path, str(i))) for i, item in enumerate(node.value)]
    return []


def _check_duplicates(node: yaml.MappingNode, path: tuple[str, ...]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for key_node, _value in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
            continue
        line = key_node.start_mark.line + 1
        name = (key_node.tag, key_node.value)
        if name in seen:
            raise YamlProblem(
                f"duplicate key (first on line {seen[name]})",
                line=line,
                path=(*path, str(key_node.value)),
            )
        seen[name] = line
