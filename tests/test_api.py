"""Every module says what it offers: an ``__all__`` whose names exist and that lists each public
function and class the module defines (a package's ``__all__`` lists what it re-exports). A
package whose ``__init__`` is only a docstring offers nothing of its own and needs none."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "steinebm"

# modules allowed to lack an __all__ for now, each with its reason; keep this short
WITHOUT_ALL: dict[str, str] = {}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _only_a_docstring(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)


PATHS = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}
MODULES = sorted(n for n, p in PATHS.items() if not (p.name == "__init__.py" and _only_a_docstring(p)))


@pytest.mark.parametrize("name", MODULES)
def test_module_lists_its_public_names(name):
    module = importlib.import_module(name)
    listed = getattr(module, "__all__", None)
    if name in WITHOUT_ALL:
        assert listed is None, f"{name} has an __all__ now: take it out of WITHOUT_ALL"
        return
    assert listed is not None, f"{name} has no __all__"
    assert len(listed) == len(set(listed)), f"{name}.__all__ names something twice"
    missing = [n for n in listed if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"
    defined = [
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == name
    ]
    unlisted = sorted(set(defined) - set(listed))
    assert not unlisted, f"{name} defines public {unlisted} but leaves them out of __all__"


def test_the_walk_sees_every_package():
    assert {"steinebm", "steinebm.learners.rules", "steinebm.data.fetch", "steinebm.engine.build"} <= set(MODULES)
    assert set(WITHOUT_ALL) <= set(MODULES)
