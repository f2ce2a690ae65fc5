"""Measure the package's structure: import cycles, longest functions, widest signatures.

Run: python benchmarks/structure.py
Prints a table, then one JSON line.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "budgetflow"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target in modules and target != name:
                found.add(target)
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def package_parent(module: str) -> str | None:
    parent = module.rpartition(".")[0]
    return parent or None


def main() -> None:
    sys.setrecursionlimit(10_000)
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {module_name(path): imports_of(path, modules) for path in paths}
    # A package's __init__ importing its own submodules is not a cycle of layers.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if package_parent(t) != module}
    cycles = strongly_connected(graph)
    functions: list[tuple[int, int, str]] = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                arguments = node.args
                width = len(arguments.posonlyargs + arguments.args + arguments.kwonlyargs)
                where = f"{module_name(path)}.{node.name}"
                functions.append((length, width, where))
    longest = sorted(functions, reverse=True)[:5]
    widest = sorted(functions, key=lambda f: (f[1], f[0]), reverse=True)[:5]
    print("import cycles:", len(cycles))
    for cycle in cycles:
        print("  ", " <-> ".join(cycle))
    print("longest functions (lines):")
    for length, _, where in longest:
        print(f"  {length:4d}  {where}")
    print("widest signatures (parameters):")
    for _, width, where in widest:
        print(f"  {width:4d}  {where}")
    summary = {
        "import_cycles": len(cycles),
        "longest_function": {"name": longest[0][2], "lines": longest[0][0]},
        "widest_signature": {"name": widest[0][2], "parameters": widest[0][1]},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
