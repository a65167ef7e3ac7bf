"""The tree's shape, as docs/ARCHITECTURE.md describes it: no import cycles, and data flowing one way."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "corral"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_at_load(path: Path, modules: set[str]) -> set[str]:
    """The corral modules `path` imports when it is loaded (not under TYPE_CHECKING, not inside functions)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules and name != module_name(path)}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: imports_at_load(path, modules) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            if component:
                found.append(sorted([node, *component]))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_in_a_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_brain_and_the_hands_never_import_the_http_surface() -> None:
    graph = import_graph()
    inward = [name for name in graph if name.startswith(("corral.brain", "corral.hands", "corral.session"))]
    offenders = {
        name: sorted(t for t in graph[name] if t.startswith(("corral.api", "corral.services"))) for name in inward
    }
    assert {name: targets for name, targets in offenders.items() if targets} == {}


def test_the_store_never_imports_the_brain_the_hands_or_the_models() -> None:
    graph = import_graph()
    outward = ("corral.brain", "corral.hands", "corral.models", "corral.api", "corral.services")
    offenders = {
        name: sorted(t for t in targets if t.startswith(outward))
        for name, targets in graph.items()
        if name.startswith("corral.session")
    }
    assert {name: targets for name, targets in offenders.items() if targets} == {}


def test_the_protocol_imports_only_the_floor() -> None:
    """Typed events are shared by every room, so they may import nothing above `ids` and `clock`."""
    graph = import_graph()
    floor = ("corral.protocol", "corral.ids", "corral.clock")
    offenders = {
        name: sorted(t for t in targets if not t.startswith(floor))
        for name, targets in graph.items()
        if name.startswith("corral.protocol")
    }
    assert {name: targets for name, targets in offenders.items() if targets} == {}
