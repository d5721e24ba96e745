"""The documentation stays true to the code: docs/architecture.md names exactly the package's modules,
and the README's links into docs/ resolve."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "image_classifier"
SKIPPED = {"__init__.py", "__main__.py"}


def documented_tree() -> dict[str, set[str]]:
    """The layout block of docs/architecture.md: top-level entry (``name.py`` or ``name/``) ->
    the module names listed under it (indented lines; several may share one line)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```\n", 2)[1].split("```", 1)[0].splitlines()
    assert block[0] == "src/image_classifier/"
    tree: dict[str, set[str]] = {}
    current = None
    for line in block[1:]:
        if not line.startswith("  "):
            break  # past the package: tests/, bench/, ...
        if not line.startswith("    "):
            current = line.split()[0]
            tree[current] = set()
        else:
            names = re.match(r"\s*((?:\w+\.py,\s*)*\w+\.py)?", line).group(1) or ""
            tree[current] |= {n for n in re.split(r",\s*", names) if n}
    return tree


def test_architecture_page_names_every_package_and_module_and_nothing_else():
    tree = documented_tree()
    actual: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.iterdir()):
        if path.suffix == ".py":
            actual[path.name] = set()
        elif (path / "__init__.py").is_file():
            actual[path.name + "/"] = {p.name for p in path.glob("*.py") if p.name not in SKIPPED}
    documented_top = {k for k in tree if k.endswith(".py") or k.endswith("/")}
    assert documented_top == set(actual), "docs/architecture.md's top level differs from src/image_classifier"
    for name, modules in actual.items():
        assert tree[name] == modules, f"docs/architecture.md lists {sorted(tree[name])} under {name}, the code has {sorted(modules)}"


def test_readme_links_into_docs_resolve():
    readme = (ROOT / "README.md").read_text()
    links = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    assert {"docs/benchmarks.md", "docs/recipes.md", "docs/architecture.md"} <= links
    for link in links:
        assert (ROOT / link).is_file(), link
