"""The package's import graph has no cycles, at import time or inside functions, and follows the
import layers docs/architecture.md states (a module never imports one of a higher layer).

Built from the source with :mod:`ast` (nothing is imported): every ``import`` and ``from ... import``
statement of ``src/image_classifier``, at module level and inside functions, is an edge from the
module that contains it to the module it names. ``from pkg import name`` points at ``pkg.name``
when that is a module (a submodule import), else at ``pkg`` itself; a package's ``__init__.py``
is the module named after the package. Imports under ``if TYPE_CHECKING:`` never run and are not
edges. Dynamic imports (``importlib.import_module`` with a computed name) cannot be seen.
"""
from __future__ import annotations

import ast
import re
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


# --- the layers of docs/architecture.md ------------------------------------------------------

#: The import layers, bottom to top, as docs/architecture.md states them ("## Import layers"): each
#: entry names packages or modules under ``image_classifier`` (a package stands for all its modules;
#: "image_classifier" is the package's own ``__init__``). A module may import its own layer and those
#: below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "version", "units", "fileio", "tensorio", "runtime", "machine", "device", "i18n", "runs", "jsonable",
     "card", "results", "optionspec", "lazy"),
    ("data",),
    ("faces",),
    ("preprocessing", "recipe", "models"),
    ("saved_model",),
    ("training",),
    ("inference",),
    ("trust",),
    ("export",),
    ("evaluate", "report"),
    ("study", "serve", "people", "sorting"),
    ("api", "image_classifier"),
    ("cli", "__main__"),
]

#: Inside ``inference``, the stack (docs/architecture.md, "## The inference stack"), bottom to top;
#: each entry is one module ("inference" is the package's ``__init__``: the backend names).
INFERENCE_STACK: list[tuple[str, ...]] = [
    ("inference", "inference.calibration", "inference.onnx_metadata", "inference.preprocess", "inference.rejection",
     "inference.inputs", "inference.rows", "inference.enrol", "inference.model", "inference.options"),
    ("inference.backends",),
    ("inference.explain",),
    ("inference.classifier",),
    ("inference.face_model",),
    ("inference.kinds", "inference.ensemble"),
    ("inference.timing",),
    ("inference.selection",),
    ("inference.loading", "inference.files"),
]


def layer_of(module: str, layers: list[tuple[str, ...]], package: str = PACKAGE, *,
             exact: bool = False) -> int | None:
    """Index of the layer whose longest matching entry names ``module`` (None: in no layer); with
    ``exact``, an entry names one module only, not the package's modules under it."""
    best: tuple[int, int] | None = None  # (entry length, layer)
    for index, entries in enumerate(layers):
        for entry in entries:
            name = package if entry == package else f"{package}.{entry}"
            if module == name or (not exact and entry != package and module.startswith(name + ".")):
                if best is None or len(name) > best[0]:
                    best = (len(name), index)
    return None if best is None else best[1]


def upward_imports(graph: dict[str, set[str]], layers: list[tuple[str, ...]],
                   package: str = PACKAGE, *, exact: bool = False) -> list[str]:
    """``a (layer i) -> b (layer j)`` for every import from a lower layer into a higher one."""
    found = []
    for module, targets in sorted(graph.items()):
        low = layer_of(module, layers, package, exact=exact)
        if low is None:
            continue
        for target in sorted(targets):
            high = layer_of(target, layers, package, exact=exact)
            if high is not None and high > low:
                found.append(f"{module} (layer {low + 1}) -> {target} (layer {high + 1})")
    return found


def documented_layers(section: str) -> list[tuple[str, ...]]:
    """The numbered list under ``## <section>`` of docs/architecture.md: the backticked names of
    each item, before its first dash (what follows it is prose)."""
    text = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    items = re.findall(r"^\d+\. (.*(?:\n {3}.*)*)", body, flags=re.MULTILINE)
    return [tuple(re.findall(r"`([\w.]+)`", item.split(" — ", 1)[0])) for item in items]


def test_layer_checker_finds_an_upward_import(tmp_path):
    src = _write_package(tmp_path, {
        "__init__.py": "from pkg import top\n",
        "low.py": "def f():\n    from pkg.top import thing\n",  # inside a function: still an import
        "top.py": "import pkg.low\nthing = 1\n",
        "sub/__init__.py": "",
        "sub/mid.py": "from pkg import low\n",
    })
    layers = [("low",), ("sub",), ("top", "pkg")]
    graph = import_graph(src, "pkg")
    assert layer_of("pkg.sub.mid", layers, "pkg") == 1 and layer_of("pkg", layers, "pkg") == 2
    assert upward_imports(graph, layers, "pkg") == ["pkg.low (layer 1) -> pkg.top (layer 3)"]


def test_every_module_has_a_layer():
    graph = import_graph()
    assert [m for m in graph if layer_of(m, LAYERS) is None] == []
    inference = [m for m in graph if m == f"{PACKAGE}.inference" or m.startswith(f"{PACKAGE}.inference.")]
    assert [m for m in inference if layer_of(m, INFERENCE_STACK, exact=True) is None] == []


def test_the_layers_here_are_the_documented_ones():
    assert documented_layers("Import layers") == LAYERS
    assert documented_layers("The inference stack") == INFERENCE_STACK


def test_no_module_imports_a_higher_layer():
    graph = import_graph()
    upward = upward_imports(graph, LAYERS) + upward_imports(graph, INFERENCE_STACK, exact=True)
    if upward:
        pytest.fail("imports against the layers of docs/architecture.md:\n" + "\n".join("  " + u for u in upward))
