"""The package's structure, read with `ast` from the source: no module imports a private name
of another module, and the folders (core, distribution, frontend, lab, terminal, testing, the
top-level modules) import each other without a circle, every import counted (module-level,
in functions and under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "noex_lab"
PENDING: set[tuple[str, str]] = set()  # (module, private name) exceptions: none left


def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE)): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: str, tree: ast.Module) -> list[tuple[str, ast.ImportFrom | ast.Import]]:
    """(absolute dotted module, node) for every noex_lab import in `tree`."""
    package = ["noex_lab", *Path(path).parent.parts]
    found: list[tuple[str, ast.ImportFrom | ast.Import]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.startswith("noex_lab"):
                found.append((target, node))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node) for alias in node.names if alias.name.startswith("noex_lab"))
    return found


def _folder(dotted: str) -> str:
    """The folder of a module (`core`, `lab`...); a top-level module is a unit of its own, the
    package's `__init__` (which re-exports the layers) is `noex_lab`."""
    parts = dotted.removesuffix("__init__").rstrip(".").split(".")
    return parts[1] if len(parts) > 1 else "noex_lab"


def test_no_module_imports_a_private_name_of_another() -> None:
    private = []
    for path, tree in _modules().items():
        for _target, node in _imports(path, tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    name = alias.name
                    if name.startswith("_") and not name.startswith("__") and (path, name) not in PENDING:
                        private.append(f"{path}:{node.lineno} imports {name}")
    assert private == []


def test_the_folders_import_each_other_without_a_circle() -> None:
    edges: dict[str, set[str]] = {}
    for path, tree in _modules().items():
        here = _folder("noex_lab." + path.removesuffix(".py").replace("/", "."))
        for target, _node in _imports(path, tree):
            there = _folder(target)
            if there != here:
                edges.setdefault(here, set()).add(there)
    circles = []

    def walk(start: str, at: str, seen: list[str]) -> None:
        for nxt in sorted(edges.get(at, ())):
            if nxt == start:
                circles.append(" -> ".join([*seen, nxt]))
            elif nxt not in seen:
                walk(start, nxt, [*seen, nxt])

    for folder in sorted(edges):
        walk(folder, folder, [folder])
    assert circles == [], f"folder imports: {edges}"


def test_core_imports_no_other_layer() -> None:
    edges = set()
    for path, tree in _modules().items():
        if path.startswith("core/"):
            edges |= {_folder(target) for target, _ in _imports(path, tree)}
    assert edges <= {"core"}
