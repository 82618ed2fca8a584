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


# Circles between modules that predate this test, each a strongly connected set of modules; a
# circle found must lie inside one of them (they may shrink, never grow or appear elsewhere).
KNOWN_CIRCLES: list[tuple[frozenset[str], str]] = [
    (frozenset({"core.genserver", "core.node", "core.registry", "core.snapshot", "core.supervisor",
                "core.systools", "core.upgrade"}),
     "the node starts behaviors and supervisors and they reach their node back: issue 13 point 1 "
     "(the typed cluster port and the node/process split) takes this apart"),
    (frozenset({"sim.scenarios", "sim.simulation"}),
     "`Simulation.replay` runs a scenario by name and `run_scenario` builds a Simulation, each "
     "importing the other inside a function"),
]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(path: str, tree: ast.Module, modules: set[str]) -> set[str]:
    """The noex_lab modules `path` imports when it runs: module level and inside functions,
    not under `if TYPE_CHECKING:`. `from pkg import mod` counts as importing `pkg.mod`; names are
    dotted without `noex_lab.` (a package is named by its folder)."""
    dotted = path.removesuffix(".py").replace("/", ".")
    package = dotted.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit_one(other)
                continue
            visit_one(child)

    def visit_one(child: ast.AST) -> None:
        if isinstance(child, ast.ImportFrom):
            if child.level:
                base = package[: len(package) - child.level + 1]
                target = ".".join([*base, *([child.module] if child.module else [])])
            else:
                target = (child.module or "").removeprefix("noex_lab").lstrip(".")
            for alias in child.names:
                sub = f"{target}.{alias.name}".lstrip(".")
                found.add(sub if sub in modules else target)
        elif isinstance(child, ast.Import):
            found.update(a.name.removeprefix("noex_lab.") for a in child.names if a.name.startswith("noex_lab."))
        visit(child)

    visit(tree)
    return {m for m in found if m in modules}


def _circles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected sets of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            at, children = work[-1]
            nxt = next(children, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges[nxt]))))
                elif nxt in on_stack:
                    low[at] = min(low[at], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[at])
            if low[at] == index[at]:
                members = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.add(member)
                    if member == at:
                        break
                if len(members) > 1:
                    found.append(frozenset(members))
    return found


def _module_edges() -> dict[str, set[str]]:
    trees = _modules()
    names = {p.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for p in trees}
    edges: dict[str, set[str]] = {}
    for path, tree in trees.items():
        dotted = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        edges[dotted] = _runtime_imports(path, tree, names) - {dotted}  # (a package: its __init__)
    return edges


def test_no_import_circle_between_modules() -> None:
    """No two modules import each other, directly or around a longer circle (imports inside
    functions count; `if TYPE_CHECKING:` ones do not), except the known circles above."""
    circles = _circles(_module_edges())
    new = [sorted(c) for c in circles if not any(c <= known for known, _why in KNOWN_CIRCLES)]
    assert new == [], f"import circles: {new}"


def test_the_circle_finder_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
    assert _circles({"a": {"b"}, "b": set()}) == []
