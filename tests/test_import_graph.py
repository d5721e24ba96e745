"""The package's import graph has no cycles, at import time or inside functions.

Built from the source with :mod:`ast` (nothing is imported): every ``import`` and ``from ... import``
statement of ``src/image_classifier``, at module level and inside functions, is an edge from the
module that contains it to the module it names. ``from pkg import name`` points at ``pkg.name``
when that is a module (a submodule import), else at ``pkg`` itself; a package's ``__init__.py``
is the module named after the package. Imports under ``if TYPE_CHECKING:`` never run and are not
edges. Dynamic imports (``importlib.import_module`` with a computed name) cannot be seen.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "image_classifier"


def module_names(src: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (``pkg/__init__.py`` -> ``pkg``)."""
    out: dict[str, Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _nearest_module(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` if it is a module of the package, else its longest prefix that is one."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph(src: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (anywhere in its file)."""
    modules = module_names(src, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _import_nodes(tree):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_nearest_module(alias.name, modules) for alias in node.names]
            else:
                if node.level:  # relative: resolve against the containing package
                    base_parts = name.split(".") if is_package else name.split(".")[:-1]
                    base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else _nearest_module(base, modules))
            graph[name].update(t for t in targets if t is not None and t != name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle (``[a, b, ..., a]``) per strongly connected component with more than one
    module, found with Tarjan's algorithm (iteratively: the graph is deep)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop(0)
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return [_cycle_in(component, graph) for component in sorted(components)]


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module, staying inside the component."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, node, start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return component  # unreachable for a strongly connected component


# --- the checker itself, on small packages written here --------------------------------------

def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_function_level_import_closes_a_cycle(tmp_path):
    src = _write_package(tmp_path, {
        "__init__.py": "",
        "a.py": "import pkg.b\n",
        "b.py": "def f():\n    from pkg.a import thing\n",
    })
    assert find_cycles(import_graph(src, "pkg")) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_from_package_import_submodule_points_at_the_submodule(tmp_path):
    # sub.x imports the package's submodule y, not the package: no cycle with __init__.
    src = _write_package(tmp_path, {
        "__init__.py": "from pkg.sub.x import X\n",
        "sub/__init__.py": "",
        "sub/x.py": "from pkg.sub import y\nX = 1\n",
        "sub/y.py": "",
    })
    graph = import_graph(src, "pkg")
    assert graph["pkg.sub.x"] == {"pkg.sub.y"}
    assert find_cycles(graph) == []


def test_a_name_from_an_init_is_an_edge_to_the_package(tmp_path):
    src = _write_package(tmp_path, {
        "__init__.py": "from pkg.x import X\nVERSION = 1\n",
        "x.py": "from .. import pkg\nfrom pkg import VERSION\nX = VERSION\n",
    })
    assert find_cycles(import_graph(src, "pkg")) == [["pkg", "pkg.x", "pkg"]]


def test_relative_imports_and_type_checking_blocks(tmp_path):
    src = _write_package(tmp_path, {
        "__init__.py": "",
        "sub/__init__.py": "from .a import A\n",
        "sub/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\nA = 1\n",
        "sub/b.py": "from . import a\nfrom ..sub import a as again\n",
    })
    graph = import_graph(src, "pkg")
    assert graph["pkg.sub"] == {"pkg.sub.a"}
    assert graph["pkg.sub.a"] == set()  # the TYPE_CHECKING import never runs
    assert graph["pkg.sub.b"] == {"pkg.sub.a"}
    assert find_cycles(graph) == []


# --- the real package ------------------------------------------------------------------------

def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "image_classifier.inference.loading" in graph  # the walk found the package
    cycles = find_cycles(graph)
    if cycles:
        pytest.fail("import cycles (module -> module it imports -> ...):\n"
                    + "\n".join("  " + " -> ".join(cycle) for cycle in cycles))
