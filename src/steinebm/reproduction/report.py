"""One self-contained HTML page about runs and reproductions (``steinebm report``).

A run folder's files are for programs; the page is for a person who wants to see at a glance
how far each run got, what its curves look like, what it draws and how its settings differ
from the others'. Everything the page shows is inside it (PNGs as base64 ``data:`` URIs, CSS
inline, no web fonts or scripts), so it can be mailed, archived or opened offline and still
show exactly what the runs held when it was written.

Each argument is a *unit*: a run folder (``metrics.jsonl`` or ``checkpoint.pt``), or a folder
that holds runs below it, such as one written by ``steinebm reproduce``, whose page (the tables
of the paper against the measurement, kept as data in its summary.json: see
:mod:`steinebm.reproduction.document`) and figure PNGs are shown as well.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from steinebm.engine.runlog import read_log
from steinebm.engine.settings import differing_keys, read_values
from steinebm.errors import UserError
from steinebm.reproduction.document import (
    esc,
    figure_tag,
    html_table,
    image_files,
    read_png,
    to_html,
)
from steinebm.reproduction.report_units import Run, Unit, collect_units
from steinebm.shapes import MNIST_SHAPE

__all__ = [
    "config_differences",
    "curve_panels",
    "curves_png",
    "fresh_samples",
    "read_log",
    "render_report",
    "write_report",
    "PANEL_PX",
]

# Curve panels are drawn at a fixed pixel size (never "tight" bounding boxes), so a figure's
# size follows from its number of panels alone and the page's layout does not jump.
PANEL_PX = (360, 260)
PANEL_COLUMNS = 3
_DPI = 100
# The keys of an evaluation line that are bookkeeping, not measurements.
_EVAL_SKIP = {"step", "epoch", "time", "ll_stderr"}


# ---------------------------------------------------------------------------------------------
# pictures


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def curve_panels(records: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, tuple[list[float], list[float]]]]]:
    """The panels of a run's curve figure, as (title, x label, {label: (x, y)}).

    The held-out log-likelihood comes first (what Figure 1 is about), test and validation on
    one panel against epochs; then each training quantity against steps, in the order the log
    first names them. Counters (step, epoch, time) are axes, not curves."""
    train = [r for r in records if "epoch" not in r]
    evals = [r for r in records if "epoch" in r]
    panels: list[tuple[str, str, dict[str, tuple[list[float], list[float]]]]] = []

    def series(recs: list[dict[str, Any]], xkey: str, key: str) -> tuple[list[float], list[float]]:
        pts = [(float(r[xkey]), float(r[key])) for r in recs if _is_number(r.get(key)) and _is_number(r.get(xkey))]
        return [p[0] for p in pts], [p[1] for p in pts]

    eval_keys = _ordered_keys(evals, _EVAL_SKIP)
    ll: dict[str, tuple[list[float], list[float]]] = {
        k: series(evals, "epoch", k) for k in ("test_ll", "val_ll") if k in eval_keys
    }
    if ll:
        panels.append(("log-likelihood (nats)", "epoch", ll))
    for k in eval_keys:
        if k not in ll:
            panels.append((k, "epoch", {k: series(evals, "epoch", k)}))
    for k in _ordered_keys(train, {"step"}):
        panels.append((k, "step", {k: series(train, "step", k)}))
    return panels


def _ordered_keys(records: list[dict[str, Any]], skip: set[str]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in skip and _is_number(v):
                keys.setdefault(k)
    return list(keys)


def _png_bytes(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    plt.close(fig)
    return buf.getvalue()


def curves_png(records: list[dict[str, Any]], title: str) -> bytes | None:
    """All of a run's logged curves in one figure of PANEL_PX-sized panels; None if the log
    holds no numbers yet."""
    panels = curve_panels(records)
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(PANEL_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / cols)
    w, h = PANEL_PX
    fig, axes = plt.subplots(rows, cols, figsize=(cols * w / _DPI, rows * h / _DPI), dpi=_DPI, squeeze=False)
    for ax, (name, xlabel, lines) in zip(axes.flat, panels):
        for label, (x, y) in lines.items():
            # a lone point (a run evaluated once) would be invisible as a line
            ax.plot(x, y, lw=1.2, label=label, marker="o" if len(x) < 12 else None, ms=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png_bytes(fig)


def _grid_png(images: Any, image_shape: Sequence[int], nrow: int | None, scale: int = 2) -> bytes:
    """The same grid as ``steinebm sample`` writes (grids.save_image_grid), kept in memory:
    the report never writes into a run folder."""
    from steinebm.grids import grid_picture

    img = grid_picture(images, image_shape, nrow, scale)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def fresh_samples(run: Run, n: int, gibbs_steps: int, seed: int) -> tuple[bytes | None, str]:
    """A grid of ``n`` images newly drawn from the run's last checkpoint, and a caption (or,
    without a picture, the reason). A generator run draws from its generator (one pass); an
    RBM by ``gibbs_steps`` steps of block Gibbs sampling, kept few because a report should
    take seconds, not the minutes 1,000 steps of ``steinebm sample`` may take."""
    if not run.has_checkpoint:
        return None, "no checkpoint yet, so no fresh samples"
    import torch

    from steinebm.engine.build import load, load_generator
    from steinebm.engine.checkpoint import load_checkpoint
    from steinebm.models.common import draw_samples

    ck = load_checkpoint(run.path)
    shape = ck.get("image_shape") or MNIST_SHAPE
    rng = torch.Generator().manual_seed(seed)
    step = int(ck.get("step", 0))
    # Tensors this small run many times faster on one thread than on several that wait for
    # each other (a Gibbs chain of 100 steps: 0.08 s against seconds on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if "generator" in ck:
            x, nrow = draw_samples(load_generator(run.path, ck), n, rng)
            return _grid_png(x, shape, nrow), f"{len(x)} fresh samples from the generator (step {step}, seed {seed})"
        model: Any = load(run.path, ck)
        if not hasattr(model, "sample"):
            return None, f"the {type(model).__name__} energy has no sampler, so no fresh samples"
        with torch.no_grad():
            x = model.sample(n, n_steps=gibbs_steps, generator=rng)
    finally:
        torch.set_num_threads(threads)
    return _grid_png(x, shape, None), f"{n} fresh samples, {gibbs_steps} Gibbs steps (step {step}, seed {seed})"


# ---------------------------------------------------------------------------------------------
# HTML


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.6g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


def config_differences(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    """The config keys whose values are not the same in every run
    (:func:`~steinebm.engine.settings.differing_keys`: a key a run's method does not read counts
    as different and shows as "—"), and each run's values of them. ``out_dir`` always differs and
    names the run, so it is the row label rather than a column."""
    with_cfg = [r for r in runs if r.config is not None]
    configs = [r.config or {} for r in with_cfg]
    read = [read_values(c) for c in configs]

    def val(values: dict[str, Any], k: str) -> str:
        if k not in values:
            return "—"
        v = values[k]
        return v if isinstance(v, str) else json.dumps(v, sort_keys=True)

    differ = [k for k in differing_keys(configs) if k != "out_dir"]
    return differ, [[r.name, *(val(v, k) for k in differ)] for r, v in zip(with_cfg, read)]


def _status(run: Run) -> list[tuple[str, str]]:
    """How far the run got: steps and epochs logged against what its config asks for."""
    cfg = run.config or {}
    rows: list[tuple[str, str]] = [
        ("method", str(cfg.get("method", "?"))),
        ("model", str(cfg.get("model", "—"))),  # a DCGAN run has a discriminator, no energy model
        ("dataset", str(cfg.get("dataset", "?"))),
    ]
    if isinstance(cfg.get("data_fingerprint"), str):  # what the run was trained on; older runs record none
        rows.append(("data fingerprint", cfg["data_fingerprint"][:12]))
    if not run.records:
        rows.append(("status", "nothing logged yet"))
        return rows
    step = int(max(r["step"] for r in run.records))
    evals = [r for r in run.records if "epoch" in r]
    planned = None
    per_epoch = [r["step"] / r["epoch"] for r in evals if _is_number(r["epoch"]) and r["epoch"] > 0]
    if per_epoch and _is_number(cfg.get("epochs")):
        planned = round(per_epoch[-1] * cfg["epochs"])
        if _is_number(cfg.get("max_steps")) and cfg["max_steps"] > 0:
            planned = min(planned, int(cfg["max_steps"]))
    if planned is None:
        rows.append(("steps done", f"{step} (the planned total shows after the first evaluation past step 0)"))
    else:
        state = "finished" if step >= planned else "incomplete (running, or stopped)"
        rows.append(("steps done", f"{step} of {planned}: {state}"))
    if evals:
        rows.append(("last evaluation", f"epoch {_fmt(evals[-1]['epoch'])} of {cfg.get('epochs', '?')}"))
    try:
        # tells a run still being written from one that stopped long ago
        mtime = (run.path / "metrics.jsonl").stat().st_mtime
        rows.append(("log last written", time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))))
    except OSError:
        pass
    return rows


def _last_values(run: Run) -> str:
    train = [r for r in run.records if "epoch" not in r]
    evals = [r for r in run.records if "epoch" in r]
    rows = []
    for what, recs in (("last training line", train), ("last evaluation", evals)):
        if recs:
            rec = recs[-1]
            values = ", ".join(f"{esc(k)} = {esc(_fmt(v))}" for k, v in rec.items())
            rows.append([esc(what), values])
    for name, scores in run.scores.items():
        rows.append([esc(name), ", ".join(f"{esc(k)} = {esc(_fmt(v))}" for k, v in scores.items())])
    return html_table([], rows, "kv") if rows else ""


def _run_html(run: Run, samples: int, gibbs_steps: int, seed: int) -> str:
    parts = [f'<section class=run id="{run.anchor}"><h3>{esc(run.name)}</h3>']
    parts.append(f"<div class=small>{esc(run.path)}</div>")
    parts.append(html_table([], [[esc(k), esc(v)] for k, v in _status(run)], "kv"))
    parts.append(_last_values(run))
    pics = []
    curves = curves_png(run.records, run.name)
    if curves is not None:
        pics.append(figure_tag(curves, f"metrics.jsonl of {run.name}", "curves", "metrics.jsonl"))
    for p in run.pngs:
        data = read_png(p)
        if data is not None:
            pics.append(figure_tag(data, p.name, "existing", p.name, "grid"))
    if samples > 0:
        data, caption = fresh_samples(run, samples, gibbs_steps, seed)
        if data is not None:
            pics.append(figure_tag(data, caption, "samples", cls="grid"))
        else:
            pics.append(f"<p class=small>{esc(caption)}</p>")
    if pics:
        parts.append("<div class=pics>" + "".join(pics) + "</div>")
    if run.config is not None:
        text = yaml.safe_dump(run.config, sort_keys=False)
        parts.append(f"<details><summary>config.yaml</summary><pre>{esc(text)}</pre></details>")
    else:
        parts.append("<p class=small>no config.yaml in this folder</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _reproduction_html(u: Unit) -> str:
    """A reproduction's page (its tables, rendered from summary.json), the figures the page does
    not show, and summary.json itself. A folder written before summary.json held the page shows
    its markdown as it is, unparsed."""
    parts = []
    used: set[str] = set()
    if u.document is not None:
        parts.append("<h3>the paper against this reproduction</h3>")
        parts.append(f"<p class=small>the page kept in summary.json (also written as {esc(u.document['file'])})</p>")
        parts.append(to_html(u.document["blocks"], u.path, first_heading=4))
        used = image_files(u.document["blocks"])
    else:
        for md in u.markdown:
            try:
                text = md.read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise UserError(f"cannot read {md} ({e}): restore it") from None
            parts.append(f"<h3>{esc(md.name)}</h3>")
            parts.append(
                "<p class=small>written by an older version of steinebm, whose summary.json holds no page: shown "
                "as it is; running its reproduce command again renders its tables here.</p>"
            )
            parts.append(f"<pre>{esc(text)}</pre>")
    pics = [figure_tag(d, p.name, "figure", p.name) for p in u.figures if p.name not in used and (d := read_png(p))]
    if pics:
        parts.append("<h3>figures</h3><div class=pics>" + "".join(pics) + "</div>")
    if u.summary is not None:
        parts.append(f"<details><summary>summary.json</summary><pre>{esc(u.summary)}</pre></details>")
    if not u.runs:
        parts.append("<p class=small>no run folders below this one</p>")
    return "\n".join(parts)


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1160px;
       padding: 16px 24px; color: #1d232a; background: #fff; }
h1 { font-size: 22px; margin: 8px 0; } h2 { font-size: 18px; border-bottom: 2px solid #d0d7de; padding-bottom: 4px;
       margin-top: 32px; } h3 { font-size: 15px; margin: 18px 0 4px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; } table.kv td:first-child { color: #57606a; white-space: nowrap; }
.small { color: #57606a; font-size: 12px; } .missing { color: #b42318; }
.pics { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 6px 0; } figcaption { font-size: 12px; color: #57606a; }
img { max-width: 100%; height: auto; } img.grid, img.thumb { image-rendering: pixelated; }
img.thumb { max-width: 240px; } img.broken { outline: 3px solid #b42318; }
section.run { border-top: 1px solid #eaeef2; padding-top: 4px; }
pre { background: #f6f8fa; padding: 8px; font-size: 12px; overflow-x: auto; }
nav { font-size: 13px; } nav div { margin: 2px 0; } nav a { margin-right: 12px; white-space: nowrap; }
.wide { overflow-x: auto; } .diff td { font-family: ui-monospace, monospace; font-size: 12px; }
"""

# Marks the page with how many of its pictures decoded (and outlines any that did not), so a
# headless browser run can check that the page renders without a JavaScript console.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images), ok = 0;
  imgs.forEach(function (im) { if (im.complete && im.naturalWidth > 0) { ok++; } else { im.className += " broken"; } });
  document.body.setAttribute("data-images-loaded", String(ok));
  document.body.setAttribute("data-images-total", String(imgs.length));
});
"""


def render_report(units: Sequence[Unit], samples: int = 64, gibbs_steps: int = 100, seed: int = 0) -> str:
    """The page, as one HTML string (see the module docstring)."""
    runs = [r for u in units for r in u.runs]
    title = "steinebm report: " + ", ".join(u.path.resolve().name for u in units)
    body = [f"<h1>{esc(title)}</h1>"]
    body.append(
        f"<p class=small>{len(units)} folder(s), {len(runs)} run(s). "
        + (
            f"Fresh samples: {samples} per run ({gibbs_steps} Gibbs steps for an RBM, seed {seed})."
            if samples
            else "No fresh samples (only pictures already in the folders)."
        )
        + "</p>"
    )
    nav = []
    for u in units:
        links = " ".join(f'<a href="#{r.anchor}">{esc(r.name)}</a>' for r in u.runs)
        nav.append(f'<div><a href="#{u.anchor}"><strong>{esc(u.path)}</strong></a> {links}</div>')
    if len(runs) > 1 or any(not u.is_run for u in units):
        body.append("<nav>" + "".join(nav) + "</nav>")

    body.append('<h2 id="differences">Settings that differ</h2>')
    if len([r for r in runs if r.config is not None]) < 2:
        body.append("<p class=small>fewer than two runs with a config.yaml: nothing to compare</p>")
    else:
        keys, rows = config_differences(runs)
        if keys:
            body.append(
                "<p class=small>config keys whose values are not the same in every run (out_dir, which always "
                "differs, names the row); every other key is equal in all runs.</p>"
            )
            table = html_table(["run", *map(esc, keys)], [[esc(c) for c in row] for row in rows], "diff")
            body.append(f"<div class=wide>{table}</div>")  # many keys scroll, not spill over the page
        else:
            body.append("<p class=small>all runs have the same config (apart from out_dir)</p>")

    for u in units:
        if u.is_run:
            body.append(f'<h2 id="{u.anchor}">run {esc(u.path)}</h2>')
        else:
            body.append(f'<h2 id="{u.anchor}">{esc(u.path)}</h2>')
            body.append(_reproduction_html(u))
        for r in u.runs:
            body.append(_run_html(r, samples, gibbs_steps, seed))

    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )


def write_report(
    paths: Sequence[str | Path],
    out: str | Path = "report.html",
    samples: int = 64,
    gibbs_steps: int = 100,
    seed: int = 0,
) -> Path:
    """Read the runs, render the page and write it to ``out``; returns ``out``."""
    if samples < 0:
        raise UserError(f"--samples must be >= 0, got {samples}")
    if gibbs_steps < 1:
        raise UserError(f"--gibbs-steps must be >= 1, got {gibbs_steps}")
    units = collect_units(paths)
    page = render_report(units, samples, gibbs_steps, seed)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write {out} ({e.strerror or e}): choose a writable path with --out") from None
    return out
