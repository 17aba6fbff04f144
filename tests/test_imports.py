"""The training and data packages import one way: no module reaches, even from inside a
function, a module that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bnnx

ROOT = Path(bnnx.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str, known: set[str]) -> set[str]:
    """Every module of `known` that `source` (a module of `package`) imports anywhere in its body,
    at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return {name for name in found if name in known}


def import_graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    inside = {name for name in modules if name.startswith(packages)}
    return {name: imported_modules(modules[name].read_text(), _package(name, modules[name]), inside) - {name}
            for name in inside}


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting, done = [], set()

    def visit(node):
        if node in visiting:
            return visiting[visiting.index(node):] + [node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(graph[node]):
            cycle = visit(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


@pytest.mark.parametrize("package", ["bnnx.train", "bnnx.data"])
def test_no_import_cycle(package):
    graph = import_graph((package,))
    assert len(graph) > 3
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_checker_finds_a_cycle_and_function_level_imports():
    known = {"bnnx.train.first", "bnnx.train.second"}
    later = "def later():\n    from bnnx.train import first\n"
    assert imported_modules(later, "bnnx.train", known) == {"bnnx.train.first"}
    assert imported_modules("from . import second\n", "bnnx.train", known) == {"bnnx.train.second"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_restoring_a_run_builds_nothing():
    """restore.py reads the checkpoint's own tree: it must not reach the experiment builder."""
    graph = import_graph(("bnnx.train",))
    reachable, todo = set(), ["bnnx.train.restore"]
    while todo:
        for target in graph[todo.pop()] - reachable:
            reachable.add(target)
            todo.append(target)
    assert "bnnx.train.experiment" not in reachable and "bnnx.train.loop" not in reachable
