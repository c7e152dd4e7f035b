"""The project's modules import downward only, and never in a circle.

Why: a circle (``chaos`` <-> ``commands.run``, ``estado`` -> ``profesor`` -> ``panel`` ->
``estado``) works only as long as each side imports the other lazily, inside a function,
and breaks the day someone moves that import to the top; an upward import (a role
importing the CLI package) drags the whole CLI into every role's process. The floors are
protocol < roles < ayudantia < bench. Every import counts, inside functions too (those
are the ones that hide circles), except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("protocol", "roles", "ayudantia", "bench")
# Circles allowed while they last (see the test): none since bench/report was split.
KNOWN_CIRCLES: set[frozenset[str]] = set()


def project_modules() -> dict[str, Path]:
    """Every module of the four packages by dotted name (a package by its ``__init__``)."""
    modules = {}
    for floor in FLOORS:
        for path in (ROOT / floor).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, wherever the import statement is."""

    def owner(dotted: str) -> str | None:
        while dotted:
            if dotted in modules:
                return dotted
            dotted = dotted.rpartition(".")[0]
        return None

    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str | None] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]))
            elif isinstance(child, ast.Import):
                found.update(owner(alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package[: len(package) - (child.level - 1)]
                    base = ".".join([*up, base] if base else up)
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    found.add(owner(full) if full in modules else owner(base))
            else:
                visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    found.discard(None)
    found.discard(name)
    return {m for m in found if m is not None}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_the_finder_sees_a_circle_and_misses_none():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [frozenset({"a", "b", "c"})]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones():
    graph = import_graph()
    assert "roles.profesor" in graph["roles.informante"]
    assert "roles.panel" in graph["roles.profesor"]  # imported inside create_app
    assert "protocol.tls" not in graph["roles.estado"]  # only under TYPE_CHECKING
    assert "ayudantia.commands.run" in graph["ayudantia.commands"]


def test_no_import_circles():
    found = set(circles(import_graph()))
    unexpected = found - KNOWN_CIRCLES
    assert not unexpected, f"import circles: {[sorted(c) for c in unexpected]}"


def test_no_import_goes_up_a_floor():
    floor = {name: i for i, name in enumerate(FLOORS)}
    upward = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if floor[target.partition(".")[0]] > floor[module.partition(".")[0]]
    ]
    assert not upward, upward
