"""Write docs/api.md, the API reference, from the package's docstrings.

    .venv/bin/python scripts/make_api_docs.py [--check]

One section per public module (the names in its ``__all__``, or the package's own exports), each
public class and function with its signature and its docstring as written. ``--check`` exits 1
when docs/api.md differs from what would be written (the tests run it so).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "api.md"

MODULES = [
    "steinebm",
    "steinebm.core.kernels",
    "steinebm.core.svgd",
    "steinebm.core.samplers",
    "steinebm.core.score",
    "steinebm.models.energies",
    "steinebm.models.table1",
    "steinebm.learners",
    "steinebm.learners.steingan",
    "steinebm.learners.dcgan",
    "steinebm.learners.rules",
    "steinebm.learners.registry",
    "steinebm.models.common",
    "steinebm.models.mnist_nets",
    "steinebm.models.dcgan_nets",
    "steinebm.evaluation.likelihood",
    "steinebm.evaluation.ais",
    "steinebm.evaluation.fid",
    "steinebm.evaluation.classifiers",
    "steinebm.evaluation.transfer",
    "steinebm.evaluation.sample_scores",
    "steinebm.reproduction.reproduce_fig1c",
    "steinebm.reproduction.reproduce_hais",
    "steinebm.data",
    "steinebm.data.base",
    "steinebm.data.fetch",
    "steinebm.engine.provenance",
    "steinebm.engine.config",
    "steinebm.engine.config_file",
    "steinebm.engine.settings",
    "steinebm.engine.build",
    "steinebm.engine.state",
    "steinebm.engine.guard",
    "steinebm.engine.evaluate",
    "steinebm.engine.train",
    "steinebm.engine.runlog",
    "steinebm.engine.preflight",
    "steinebm.core.distributed",
    "steinebm.reproduction.plots",
    "steinebm.reproduction.document",
    "steinebm.grids",
    "steinebm.naming",
    "steinebm.errors",
    "steinebm.checksums",
    "steinebm.shapes",
]


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no docstring)")


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _public_names(module: object) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        ]  # type: ignore[attr-defined]
    return sorted(names)


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `scripts/make_api_docs.py`; do not edit by hand. The tutorial",
        "(`docs/tutorial.md`) shows the pieces working together.",
        "",
    ]
    seen: set[int] = set()
    for mod_name in MODULES:
        module = importlib.import_module(mod_name)
        lines += [f"## `{mod_name}`", "", _doc(module).split("\n\n")[0], ""]
        for name in _public_names(module):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if id(obj) in seen:  # documented once, where it is first listed
                lines += [f"- `{name}`: see above ({obj.__module__}).", ""]
                continue
            seen.add(id(obj))
            kind = "class" if inspect.isclass(obj) else "def"
            lines += [f"### {kind} `{name}{_signature(obj)}`", "", "```text", _doc(obj), "```", ""]
            if inspect.isclass(obj):
                for meth_name, meth in sorted(vars(obj).items()):
                    if meth_name.startswith("_") or not inspect.isfunction(meth) or not meth.__doc__:
                        continue
                    lines += [f"- `{name}.{meth_name}{_signature(meth)}`: {_doc(meth).splitlines()[0]}"]
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is out of date")
    a = p.parse_args(argv)
    text = render()
    if a.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run {Path(sys.argv[0]).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
