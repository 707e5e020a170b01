"""The units of a report (``steinebm report``): each argument is a run folder (``metrics.jsonl``
or ``checkpoint.pt``) or a folder holding runs below it, such as one written by ``steinebm
reproduce``, read into :class:`Run` and :class:`Unit` records for
:mod:`steinebm.reproduction.report` to draw."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from steinebm.engine.runlog import read_log
from steinebm.errors import UserError, first_line
from steinebm.naming import slug
from steinebm.reproduction.document import (
    Page,
    check_page,
)

__all__ = ["Run", "Unit", "collect_units"]


@dataclass
class Run:
    """One run folder and what was read from it."""

    path: Path
    name: str
    config: dict[str, Any] | None
    records: list[dict[str, Any]]
    has_checkpoint: bool
    pngs: list[Path] = field(default_factory=list)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def anchor(self) -> str:
        return "run-" + slug(self.name)


@dataclass
class Unit:
    """One argument of ``steinebm report``: a single run, or a folder of runs (a reproduction)."""

    path: Path
    runs: list[Run]
    is_run: bool
    markdown: list[Path] = field(default_factory=list)  # shown as text only where there is no page
    figures: list[Path] = field(default_factory=list)
    summary: str | None = None
    document: Page | None = None  # the figure's page, from summary.json (None: written before pages)

    @property
    def anchor(self) -> str:
        return "unit-" + slug(str(self.path))


def _natural(path: Path) -> list[Any]:
    """Sort key that puts seed2 before seed10 and alpha=0.1 before alpha=0.25."""
    # split() with a group alternates text and numbers, so the keys of two paths compare
    # text with text and number with number
    return [float(t) if k % 2 else t for k, t in enumerate(re.split(r"(\d+(?:\.\d+)?)", str(path)))]


def _is_run(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() or (path / "checkpoint.pt").is_file()


# ---------------------------------------------------------------------------------------------
# reading


def _read_config(path: Path) -> dict[str, Any] | None:
    p = path / "config.yaml"
    if not p.is_file():
        return None
    try:
        cfg = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"cannot read {p} ({first_line(e)[:200]}): restore it") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{p} is not a steinebm config (a YAML mapping): restore it")
    return cfg


def _read_scores(path: Path) -> dict[str, dict[str, Any]]:
    """The scalar fields of the score files a reproduction leaves in a run (e.g. the inception
    score in generator_scores.json); unreadable ones are left out, they are only extras."""
    out = {}
    for p in sorted(path.glob("*scores*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            out[p.name] = {
                k: v for k, v in data.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)
            }
    return out


def _read_run(path: Path, name: str) -> Run:
    metrics = path / "metrics.jsonl"
    return Run(
        path=path,
        name=name,
        config=_read_config(path),
        records=read_log(metrics) if metrics.is_file() else [],
        has_checkpoint=(path / "checkpoint.pt").is_file(),
        pngs=sorted(path.glob("*.png"), key=_natural),
        scores=_read_scores(path),
    )


def _find_runs(root: Path) -> list[Path]:
    """Run folders at or below ``root`` (runs do not nest, so the walk stops at each)."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if _is_run(here):
            found.append(here)
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return sorted(found, key=_natural)


def collect_units(paths: Sequence[str | Path]) -> list[Unit]:
    """Read every argument; a path that is neither a run nor a folder with runs or a
    reproduction's files in it is a UserError (most likely a typo)."""
    if not paths:
        raise UserError("name at least one run folder")
    units: list[Unit] = []
    seen: set[Path] = set()
    for arg in paths:
        root = Path(arg)
        if not root.is_dir():
            raise UserError(f"{root} is not a folder: name a run folder or a reproduction folder")
        key = root.resolve()
        if key in seen:
            continue
        seen.add(key)
        if _is_run(root):
            units.append(Unit(root, [_read_run(root, root.resolve().name)], is_run=True))
            continue
        markdown = sorted(root.glob("*.md"), key=_natural)
        run_dirs = _find_runs(root)
        if not run_dirs and not markdown and not (root / "summary.json").is_file():
            raise UserError(
                f"{root} is not a run folder (no metrics.jsonl or checkpoint.pt) and holds no runs or "
                "reproduction (FIGURE.md, summary.json): name a folder written by steinebm train or reproduce"
            )
        runs = []
        for d in run_dirs:
            rel = d.relative_to(root).as_posix()
            runs.append(_read_run(d, rel[len("runs/") :] if rel.startswith("runs/") else rel))
        summary, document = _read_summary(root / "summary.json")
        figures = sorted(root.glob("*.png"), key=_natural)
        units.append(
            Unit(root, runs, is_run=False, markdown=markdown, figures=figures, summary=summary, document=document)
        )
    # a run named on its own and inside a reproduction given too is shown once, where it comes first
    shown: set[Path] = set()
    for u in units:
        kept = []
        for r in u.runs:
            if r.path.resolve() not in shown:
                shown.add(r.path.resolve())
                kept.append(r)
        u.runs = kept
    units = [u for u in units if u.runs or not u.is_run]
    _unique_names(units)
    return units


def _read_summary(path: Path) -> tuple[str | None, Page | None]:
    """A reproduction's summary.json, pretty-printed, and the figure's page it holds (None for
    one written before summary.json held the page); (None, None) without the file."""
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path} is damaged (not JSON): restore it") from None
    if not isinstance(data, dict) or "document" not in data:
        return json.dumps(data, indent=2), None
    try:
        document = check_page(data["document"])
    except ValueError as e:
        raise UserError(f"the page in {path} is damaged ({e}): run its reproduce command again") from None
    return json.dumps(data, indent=2), document


def _unique_names(units: list[Unit]) -> None:
    """Runs from several units get their unit's name in front when names would collide, so
    the difference table and the contents can tell them apart."""
    runs = [r for u in units for r in u.runs]
    if len({r.name for r in runs}) == len(runs):
        return
    for u in units:
        for r in u.runs:
            r.name = r.path.resolve().name if u.is_run else f"{u.path.resolve().name}/{r.name}"
    names = [r.name for r in runs]
    for r in runs:
        if names.count(r.name) > 1:
            r.name = str(r.path.resolve())
