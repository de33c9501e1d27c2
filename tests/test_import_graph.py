"""The package's modules import only downward: no cycle, errors at the ground floor, and the
command line at the top.

The graph is read from the source with ``ast``, so an import hidden inside a function (to
dodge a cycle at import time) counts as much as one at the top of the file. Its rules:

- every module of ``adasim_ray`` is a node; a package is the node of its ``__init__.py``;
- ``import a.b.c`` is an edge to ``a.b.c`` (the module or the package's ``__init__``);
- ``from a.b import c`` is an edge to ``a.b.c`` when that is a module or package, else to
  ``a.b`` (``c`` is a name defined there); relative imports are resolved the same way;
- ``from a.b.c import x`` is an edge to ``a.b.c`` only, not to the ``__init__`` of ``a`` or
  ``a.b``, although Python runs those first: otherwise every module of a package that
  re-exports its modules (``adasim_ray/data/__init__.py``) would form a cycle with it;
- a string literal that is exactly the dotted name of a package module, or such a name
  followed by ``:attribute``, counts as an import of it: ``cli.py`` names each sub-command's
  function as ``module:function``, ``data/spec.py`` each source class as ``module:Class``,
  and ``importlib.resources.files(name)`` imports that module too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "adasim_ray"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
Graph = dict[str, set[str]]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the string constants that are docstrings (never an import)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def imports_of(name: str, source: str, modules: set[str] | dict[str, Path],
               is_package: bool = False) -> set[str]:
    """The package modules that module ``name`` (whose text is ``source``; an ``__init__.py``
    when ``is_package``) imports, by the rules of the module docstring."""
    tree = ast.parse(source)
    package = name if is_package else name.rpartition(".")[0]
    docstrings = _docstrings(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in modules else base)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.partition(":")[0] in modules
            and id(node) not in docstrings
        ):
            found.add(node.value.partition(":")[0])
    return {m for m in found if m in modules and m != name}


def import_graph() -> Graph:
    """module -> the package modules it imports."""
    modules = _modules()
    return {
        name: imports_of(name, path.read_text(), modules, path.name == "__init__.py")
        for name, path in modules.items()
    }


def _cycle_through(graph: Graph, start: str, members: set[str]) -> list[str]:
    """One shortest cycle ``start -> ... -> start`` inside a strongly connected component."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for dep in sorted(graph[node] & members):
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if dep not in parents:
                    parents[dep] = node
                    nxt.append(dep)
        frontier = nxt
    return []


def find_cycles(graph: Graph) -> list[list[str]]:
    """The shortest cycle through each module caught in one (Tarjan's strongly connected
    components, then a breadth-first search from each member), each written once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            members = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                members.add(top)
                if top == node:
                    break
            if len(members) > 1:
                components.append(members)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles: list[list[str]] = []
    for members in components:
        for start in sorted(members):
            ring = _cycle_through(graph, start, members)[:-1]
            first = ring.index(min(ring))
            cycle = [*ring[first:], *ring[:first], min(ring)]
            if cycle not in cycles:
                cycles.append(cycle)
    return cycles


def test_the_graph_reader_follows_the_rules():
    modules = {"p", "p.a", "p.b", "p.sub", "p.sub.c", "p.sub.d"}
    source = '''"""p.sub.d: its docstring names no module."""
import json
from p.a import thing
from p.sub import c
from . import missing_name

def later():
    import p.b
    from .c import x
    return "p.a", "p.sub.d:Thing"
'''
    # p.a by name, p.b inside a function, p.sub.c as a module, p.sub for a name defined in
    # its __init__, relative imports resolved; the docstring and the module itself are not.
    assert imports_of("p.sub.d", source, modules) == {"p.a", "p.b", "p.sub", "p.sub.c"}
    assert imports_of("p.sub", "from .c import x", modules, is_package=True) == {"p.sub.c"}
    graph = import_graph()
    assert "adasim_ray.commands.check" in graph["adasim_ray.cli"]  # "module:function"
    assert "adasim_ray.data.mnist" in graph["adasim_ray.data.spec"]  # "module:Class"


def test_find_cycles_names_each_cycle_once():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    two = find_cycles({"a": {"b", "c"}, "b": {"a"}, "c": {"a"}})
    assert two == [["a", "b", "a"], ["a", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_errors_import_nothing_of_the_package():
    assert import_graph()[f"{PACKAGE}.errors"] == set()


def test_only_the_command_line_imports_the_command_line():
    def in_top(module: str) -> bool:
        return any(module == t or module.startswith(f"{t}.") for t in top)

    top = (f"{PACKAGE}.cli", f"{PACKAGE}.commands")
    offenders = {
        f"{name} -> {dep}"
        for name, deps in import_graph().items()
        if not in_top(name)
        for dep in deps
        if in_top(dep)
    }
    assert not offenders, "imports of the command line from below it:\n" + "\n".join(
        sorted(offenders)
    )


def heavy_imports(code: str, heavy: set[str]) -> list[str]:
    """The top-level packages of ``heavy`` that ``code`` leaves imported, in a fresh process."""
    import subprocess
    import sys

    probe = (f"import sys\n{code}\n"
             f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(heavy)!r}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT.parent)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_the_parser_loads_no_heavy_library():
    """``launch.py --help`` and a mistyped option answer at once: building the parser imports
    neither torch nor Ray nor pyarrow (each sub-command imports its work when it runs)."""
    code = "from adasim_ray.cli import build_parser; build_parser()"
    assert heavy_imports(code, {"torch", "ray", "pyarrow", "timm", "sklearn"}) == []


@pytest.mark.parametrize("module", ["adasim_ray.train.pipeline", "adasim_ray.train.board"])
def test_the_modules_of_the_plan_board_and_the_datasets_import_no_torch(module):
    """Ray Train's controller and dataset manager unpickle the run's datasets, and the plan
    board's actor imports its class's module: none of them needs torch (seconds of CPU per
    process at every start of a run)."""
    assert heavy_imports(f"import {module}", {"torch", "torchvision", "timm"}) == []


#: The package's layers, lowest first (README, "What is where"): a module imports only from
#: its own layer or lower ones. A new top-level module or package must be placed here.
LAYERS = (
    "errors", "engine", "methods", "data", "backbones", "export", "init_weights",
    "augmentations", "evaluation", "configfile", "config", "presets", "recipe", "resources",
    "rundir", "init_sources", "preflight", "figures", "train", "sweep",
    "audit", "visualize", "commands", "cli",
)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_layers_only_import_downward():
    graph = import_graph()
    unplaced = sorted(m for m in graph if m != PACKAGE and _layer(m) is None)
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"
    upward = sorted(
        f"{name} -> {dep}"
        for name, deps in graph.items()
        if name != PACKAGE
        for dep in deps
        if dep != PACKAGE and _layer(dep) > _layer(name)
    )
    assert not upward, "imports going up a layer:\n" + "\n".join(upward)


def _train_modules_imported_by(prefix: str) -> dict[str, set[str]]:
    graph = import_graph()
    return {name: {d for d in deps if d.startswith(f"{PACKAGE}.train")}
            for name, deps in graph.items()
            if name == prefix or name.startswith(f"{prefix}.")}


def test_readers_of_runs_import_the_run_directory_not_the_train_layer():
    """``audit/`` and ``visualize/`` read runs through ``rundir/`` alone; ``sweep/`` starts
    its trials through the driver's entry (``train.run``) and nothing else of ``train/``."""
    for package in (f"{PACKAGE}.audit", f"{PACKAGE}.visualize"):
        found = {k: v for k, v in _train_modules_imported_by(package).items() if v}
        assert not found, f"{package} imports the Train layer: {found}"
    sweep = set().union(*_train_modules_imported_by(f"{PACKAGE}.sweep").values())
    assert sweep == {f"{PACKAGE}.train.run"}
    assert any(d.startswith(f"{PACKAGE}.rundir") for d in import_graph()[f"{PACKAGE}.audit.report"])
