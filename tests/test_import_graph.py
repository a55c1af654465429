"""The import graph of the `exporter` package: acyclic, and the sources at the bottom.

Every module is parsed with `ast`, so every import counts: module-level, under
`if TYPE_CHECKING:`, and inside functions (a function-level import hides a cycle from
the interpreter at start-up; it does not remove it). Relative imports are resolved.
`from package import name` is an edge to the submodule when `name` is one, else to the
package's `__init__`. Importing `a.b.c` also runs `a/b/__init__.py`: an edge to it too,
unless the importer is inside `a.b` itself (then that `__init__` is already running).

Two graphs are checked for cycles: modules, and units (a subpackage such as
`exporter.kernel`, or a top-level module such as `exporter.config`). The sources of data
(`vici`, `strongswan`, `kernel`) import only their own package and the sources below them;
nothing but the entry points imports `exporter.cli` or `exporter.daemon`; the probes
import nothing of the HTTP server they are mounted on.

Run as a script to print the unit graph: `python tests/test_import_graph.py`.
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "exporter"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

# Each source → the sources it may import (besides itself and the root `exporter`, whose
# __init__ holds only __version__). The Libreswan source joins pluto's polled state to
# the kernel's XFRM notifications, so it may use the kernel source. The logins (per-login
# accounting: the pppd hooks' ended records and the ledger) are fed the kernel's ppp
# interfaces and hook records, so they may use the kernel source too.
SOURCES: dict[str, frozenset[str]] = {
    "exporter.vici": frozenset(),
    "exporter.strongswan": frozenset({"exporter.vici"}),
    "exporter.kernel": frozenset(),
    "exporter.libreswan": frozenset({"exporter.kernel"}),
    "exporter.logins": frozenset({"exporter.kernel"}),
}
# The bottom of the graph: the settings schema, its YAML reader and durations, which every
# layer may use (a source declares its own settings, as node_exporter's collectors declare
# their flags); they import only each other.
FOUNDATION = frozenset({"exporter.settings", "exporter.strict_yaml"})
# The top of the graph: these wire everything and are imported only by each other.
ENTRY_POINTS = frozenset({"exporter.__main__", "exporter.cli", "exporter.demo.run"})
DAEMON = "exporter.daemon"
# The HTTP server; the daemon mounts the probe routes on it, the probes never reach up.
SERVER = frozenset({"exporter.http", "exporter.http_limits", DAEMON})


@dataclass(frozen=True)
class Edge:
    """`source` imports `target` at `file:line` (for a unit edge: one such import)."""

    source: str
    target: str
    file: str
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_path(module: str) -> str:
    relative = Path(*module.split("."))
    package_init = PACKAGE_DIR.parent / relative / "__init__.py"
    if package_init.exists():
        return str(relative / "__init__.py")
    return f"{relative}.py"


def discover() -> dict[str, Path]:
    """Module name → file, for every .py file of the package."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, name] if name else base)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that `name` is or lies in (None: not ours)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, modules: dict[str, Path]) -> Iterator[Edge]:
    path = modules[module]
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(module, is_package, node.level, node.module)
                if node.level
                else node.module or ""
            )
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            targets = [name if name in modules else base for name in submodules]
        else:
            continue
        for target in targets:
            known = _known(target, modules)
            if known is None or known == module:
                continue
            yield Edge(module, known, module_path(module), node.lineno)
            # Importing a submodule runs its packages' __init__ first (and with it their
            # re-exports); a module's own packages are already running, so not those.
            running = {module, *_packages_of(module)}
            for package in _packages_of(known):
                if package in modules and package not in running:
                    yield Edge(module, package, module_path(module), node.lineno)


def _packages_of(module: str) -> list[str]:
    """`exporter.vici.client` → [`exporter`, `exporter.vici`]."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def import_graph() -> dict[str, list[Edge]]:
    modules = discover()
    return {module: sorted(set(imports_of(module, modules)), key=_edge_key) for module in modules}


def _edge_key(edge: Edge) -> tuple[str, int]:
    return edge.target, edge.line


def unit_of(module: str) -> str:
    """`exporter.kernel.source` → `exporter.kernel`; `exporter.config` → itself."""
    return ".".join(module.split(".")[:2])


def unit_graph(graph: dict[str, list[Edge]]) -> dict[str, list[Edge]]:
    """Units and, per pair of units, the first import found between them as witness."""
    units: dict[str, dict[str, Edge]] = {unit_of(m): {} for m in graph}
    for edges in graph.values():
        for edge in edges:
            source, target = unit_of(edge.source), unit_of(edge.target)
            if source != target:
                witness = Edge(source, target, edge.file, edge.line)
                units[source].setdefault(target, witness)
    return {unit: [units[unit][t] for t in sorted(units[unit])] for unit in units}


def strongly_connected(nodes: Iterable[str], successors: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(successors.get(root, [])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(successors.get(child, []))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def shortest_cycle(start: str, successors: dict[str, list[str]], within: set[str]) -> list[str]:
    """The shortest path start → … → start inside one strongly connected component."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in successors.get(node, []):
            if child not in within:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    return [start]


def cycles(graph: dict[str, list[Edge]]) -> list[str]:
    """One line per strongly connected component of more than one node: a cycle through
    it, each step with the import that makes it."""
    successors = {node: [edge.target for edge in edges] for node, edges in graph.items()}
    found = []
    for component in strongly_connected(sorted(graph), successors):
        if len(component) < 2:
            continue
        cycle = shortest_cycle(component[0], successors, set(component))
        steps = []
        for source, target in itertools.pairwise(cycle):
            edge = next(e for e in graph[source] if e.target == target)
            steps.append(f"{target} ({edge.where()})")
        others = sorted(set(component) - set(cycle))
        also = f"; also in this tangle: {', '.join(others)}" if others else ""
        found.append(f"{cycle[0]} -> {' -> '.join(steps)}{also}")
    return found


def test_no_module_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles among exporter modules:\n" + "\n".join(found)


def test_no_package_import_cycle() -> None:
    found = cycles(unit_graph(import_graph()))
    assert not found, "import cycles among exporter packages:\n" + "\n".join(found)


def test_sources_import_nothing_above_them() -> None:
    wrong: dict[tuple[str, int, str], str] = {}
    for module, edges in import_graph().items():
        source = unit_of(module)
        if source not in SOURCES:
            continue
        allowed = {source, PACKAGE, *SOURCES[source], *FOUNDATION}
        for edge in edges:
            if unit_of(edge.target) not in allowed:
                # One line per import statement and unit: the submodule, not its package.
                key = (edge.file, edge.line, unit_of(edge.target))
                if len(edge.target) > len(wrong.get(key, "")):
                    wrong[key] = edge.target
    wrong_lines = [
        f"{f}:{line}: imports {target}" for (f, line, _), target in sorted(wrong.items())
    ]
    assert not wrong, "a source imports above its layer:\n" + "\n".join(wrong_lines)


def test_the_foundation_imports_only_itself() -> None:
    wrong = [
        f"{edge.where()}: {module} imports {edge.target}"
        for module, edges in import_graph().items()
        if unit_of(module) in FOUNDATION
        for edge in edges
        if unit_of(edge.target) not in {*FOUNDATION, PACKAGE}
    ]
    assert not wrong, "the settings foundation imports above itself:\n" + "\n".join(wrong)


def test_only_entry_points_import_the_top() -> None:
    wrong = [
        f"{edge.where()}: {module} imports {edge.target}"
        for module, edges in import_graph().items()
        for edge in edges
        if (edge.target in ENTRY_POINTS or edge.target == DAEMON) and module not in ENTRY_POINTS
    ]
    assert not wrong, "only the entry points import cli, demo or daemon:\n" + "\n".join(wrong)


def test_probes_import_nothing_of_the_server() -> None:
    wrong = [
        f"{edge.where()}: {module} imports {edge.target}"
        for module, edges in import_graph().items()
        if unit_of(module) == "exporter.probes"
        for edge in edges
        if edge.target in SERVER
    ]
    assert not wrong, "the probes import the HTTP server:\n" + "\n".join(wrong)


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The parser itself: a function-level import and a relative one are edges."""
    modules = {"exporter.a": tmp_path / "a.py", "exporter.b": tmp_path / "b.py"}
    modules["exporter.a"].write_text("def f():\n    from . import b\n")
    modules["exporter.b"].write_text("from exporter.a import f\n")
    graph = {m: list(imports_of(m, modules)) for m in modules}
    assert {m: [e.target for e in edges] for m, edges in graph.items()} == {
        "exporter.a": ["exporter.b"],
        "exporter.b": ["exporter.a"],
    }
    assert cycles(graph) == [
        "exporter.a -> exporter.b (exporter/a.py:2) -> exporter.a (exporter/b.py:1)"
    ]


def test_importing_a_submodule_runs_its_package(tmp_path: Path) -> None:
    """`exporter.q` importing `exporter.p.y` also runs `exporter/p/__init__.py`, which
    imports `exporter.p.x`; `exporter.p.x` itself is inside `exporter.p`: no edge up."""
    (tmp_path / "p").mkdir()
    files = {
        "exporter.p": ("p/__init__.py", "from exporter.p.x import X\n"),
        "exporter.p.x": ("p/x.py", "from .y import Y\nX = Y\n"),
        "exporter.p.y": ("p/y.py", "Y = 1\n"),
        "exporter.q": ("q.py", "from exporter.p.y import Y\n"),
    }
    modules = {}
    for name, (relative, text) in files.items():
        modules[name] = tmp_path / relative
        modules[name].write_text(text)
    edges = {m: sorted(e.target for e in imports_of(m, modules)) for m in modules}
    assert edges == {
        "exporter.p": ["exporter.p.x"],
        "exporter.p.x": ["exporter.p.y"],
        "exporter.p.y": [],
        "exporter.q": ["exporter.p", "exporter.p.y"],
    }


if __name__ == "__main__":
    for unit, edges in unit_graph(import_graph()).items():
        print(unit, "->", ", ".join(edge.target for edge in edges) or "-")
    print(*cycles(import_graph()), *cycles(unit_graph(import_graph())), sep="\n")
