"""bnnx imports one way: no module reaches, even from inside a function, a module that imports it
back; nothing but the CLI imports the CLI; `import bnnx` is cheap and offers the public API."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
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
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:  # `from pkg import module` imports the module, else a name of pkg
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
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


@pytest.mark.parametrize("package", ["bnnx", "bnnx.train", "bnnx.data"])
def test_no_import_cycle(package):
    graph = import_graph((package,))
    assert len(graph) > 3
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_only_the_cli_imports_the_cli():
    graph = import_graph(("bnnx",))
    assert len(graph) > 80
    outside = {name: sorted(t for t in targets if t == "bnnx.cli" or t.startswith("bnnx.cli."))
               for name, targets in graph.items() if name != "bnnx.cli" and not name.startswith("bnnx.cli.")}
    assert {name: targets for name, targets in outside.items() if targets} == {}


def test_sweeps_and_benches_compose_configs_themselves():
    """The library composes (bnnx.config.compose); no sweep or bench takes a compose callback."""
    for package in ("sweeps", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            assert "compose=" not in path.read_text(), path


def test_import_bnnx_is_cheap_and_offers_the_api():
    code = ("import sys, bnnx; assert 'jax' not in sys.modules and 'flax' not in sys.modules; "
            "print(sorted(bnnx.__all__))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["['TrainConfig',", "'binarize',", "'compose',", "'evaluate',", "'export',",
                                   "'train']"]
    importlib.import_module("bnnx.train.loop")  # binds bnnx.train to the package: it stays callable

    assert callable(bnnx.train) and callable(bnnx.export) and callable(bnnx.evaluate)
    config = bnnx.compose(["method=bop", "epochs=3"])
    assert isinstance(config, bnnx.TrainConfig) and (config.method.name, config.epochs) == ("bop", 3)
    with pytest.raises(AttributeError):
        bnnx.no_such_name  # noqa: B018


def test_the_checker_finds_a_cycle_and_function_level_imports():
    known = {"bnnx.train", "bnnx.train.first", "bnnx.train.second"}
    later = "def later():\n    from bnnx.train import first\n"
    assert imported_modules(later, "bnnx.train", known) == {"bnnx.train.first"}
    assert imported_modules("from . import second\n", "bnnx.train", known) == {"bnnx.train.second"}
    assert imported_modules("from bnnx.train import NAME\n", "bnnx", known) == {"bnnx.train"}
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
