"""No import cycles between rotator's modules, lazy (function-level) imports included; imports under
``if TYPE_CHECKING:`` do not run and are left out. Found statically from the sources."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rotator"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in modules:
                found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@cache
def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        parent = name.rpartition(".")[0]
        edges = _imports(ast.parse(path.read_text()), modules) - {name}
        graph[name] = {m for m in edges if m != parent or parent != "rotator"} - {"rotator"}
    return graph


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


# Known, to be removed: plan.decide() imports rotator.manual lazily and manual imports plan (kind: manual).
# Moving remind() into plan (or passing it to decide) breaks it; until then the pair is listed here, and any
# other cycle fails.
KNOWN = {"rotator.manual -> rotator.plan -> rotator.manual", "rotator.plan -> rotator.manual -> rotator.plan"}


def test_no_module_is_part_of_an_import_cycle() -> None:
    """Every rotator module, e.g. keyring -> jwks -> keyring and report -> report_html -> report before."""
    graph = _graph()
    assert {"rotator.keyring", "rotator.jwks", "rotator.report", "rotator.report_html"} <= set(graph)
    cycles = [" -> ".join(c) for m in sorted(graph) if (c := _cycle_through(graph, m))]
    assert set(cycles) - KNOWN == set()


def test_the_scan_sees_lazy_imports() -> None:
    """A function-level import counts (the old report <-> report_md cycle was one)."""
    tree = ast.parse("def f():\n    from rotator.report import render\n")
    assert _imports(tree, {"rotator.report"}) == {"rotator.report"}
