"""The packages draw the architecture: each imports only the packages below it, so there is no
import cycle between them, and none between two modules either."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "steinebm"
# from the bottom up; a package may import its own modules and those of any lower level
LEVELS = [
    {"errors", "naming", "grids", "checksums", "shapes", "precision"},
    {"core"},
    {"models"},
    {"learners", "data"},
    {"evaluation"},
    {"engine"},
    {"reproduction"},
    {"cli", "__init__"},
]
LEVEL = {name: k for k, names in enumerate(LEVELS) for name in names}


def _part(path: Path) -> str:
    first = path.relative_to(SRC).parts[0]
    return first.removesuffix(".py")


def _imports(path: Path) -> list[str]:
    """The steinebm modules ``path`` imports (at the top or inside a function), as dotted names."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("steinebm"):
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]  # `from steinebm.x import module`
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("steinebm")]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import of {node.module}; the package imports by full name")
    return out


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {_module(p): p for p in SRC.rglob("*.py")}


def test_every_package_imports_only_those_below_it():
    wrong = []
    for path in MODULES.values():
        here = _part(path)
        assert here in LEVEL, f"{path} is in no level of the layout: add it to LEVELS and the README"
        for name in _imports(path):
            parts = name.split(".")
            there = parts[1] if len(parts) > 1 else "__init__"
            if there != here and LEVEL.get(there, -1) >= LEVEL[here]:
                wrong.append(f"{path.relative_to(SRC)} imports {name}")
    assert not wrong, wrong


def test_no_import_cycle_between_modules():
    """Every import, at the top or inside a function (which only defers a cycle); of any length."""
    graph = {mod: {n for n in _imports(path) if n in MODULES and n != mod} for mod, path in MODULES.items()}
    # a package's __init__ is reached through its modules' imports too; drop those edges, which
    # Python resolves by importing the package first
    seen, stack, cycles = set(), [], []

    def visit(m: str) -> None:
        if m in stack:
            cycles.append(stack[stack.index(m) :] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in sorted(graph[m]):
            if not (m.startswith(d + ".") or d.startswith(m + ".")):  # a package and its own modules
                visit(d)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, cycles
