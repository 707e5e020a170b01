"""Figure 1(a): test log-likelihood of the MNIST RBM against epochs for CD-1, CD-10 (Langevin),
SteinCD, symmetric SteinCD and Stein score matching; and the demo, Figure 1(a) in miniature.

Hyper-parameters are chosen fairly: each method's sweep (Langevin step size for CD, epsilon
for SteinCD, the learning rate for all) is run with one seed, the setting with the best
final validation log-likelihood is kept, and that setting is then run with every seed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steinebm.data import Dataset, load_dataset
from steinebm.engine.config import Config
from steinebm.engine.config_file import load_config
from steinebm.errors import UserError
from steinebm.evaluation.likelihood import log_likelihood
from steinebm.models.energies import GaussianBernoulliRBM
from steinebm.naming import slug
from steinebm.reproduction.document import Block, claims_table, page, table, text, write_page
from steinebm.reproduction.runs import run_many

__all__ = [
    "baseline_log_likelihood",
    "fig1a",
    "fig1a_document",
    "demo",
    "demo_reference_note",
    "FIG1A_PRESETS",
    "fig1a_rule",
    "FIG1A_SWEEP",
    "PAPER_FIG1A",
    "DEMO_PRESETS",
    "demo_settings",
    "demo_epochs",
]

# Figure 1(a)'s rules, each run from its shipped preset (configs/fig1a-*.yaml), the one source of
# its settings; the reproduction sets only the data, the length, the seed and the folder
FIG1A_PRESETS: dict[str, str] = {
    "CD-1": "fig1a-cd1",
    "CD-10": "fig1a-cd10",
    "SteinCD": "fig1a-steincd",
    "Symmetric SteinCD": "fig1a-symmetric-steincd",
    "Stein score matching": "fig1a-stein-score-matching",
}


def fig1a_rule(label: str) -> dict[str, Any]:
    """What names Figure 1(a)'s rule ``label`` in a setting's name: its method, and CD's k, as
    its preset sets them."""
    cfg = load_config(FIG1A_PRESETS[label])
    return {"method": cfg.method, **({"cd_k": cfg.cd_k} if cfg.method == "cd" else {})}


FIG1A_SWEEP: dict[str, dict[str, list[Any]]] = {
    "CD-1": {"langevin_step": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0], "lr": [3e-4, 1e-3, 3e-3, 1e-2]},
    "CD-10": {"langevin_step": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0], "lr": [3e-4, 1e-3, 3e-3, 1e-2]},
    "SteinCD": {"epsilon": [1e-3, 1e-2, 1e-1, 1.0], "lr": [3e-4, 1e-3, 3e-3, 1e-2]},
    "Symmetric SteinCD": {"epsilon": [1e-3, 1e-2, 1e-1, 1.0], "lr": [3e-4, 1e-3, 3e-3, 1e-2]},
    "Stein score matching": {"lr": [3e-4, 1e-3, 3e-3, 1e-2]},
}
PAPER_FIG1A = (
    "SteinCD (one SVGD step) reaches a higher test log-likelihood than CD-1 and CD-10 with "
    "Langevin dynamics (Figure 1a; the paper prints curves, no numbers)."
)


def _setting_name(setting: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items()) or "default"


def baseline_log_likelihood(data: Dataset) -> float:
    """The reference model B = 0, b = training mean (a unit-variance Gaussian at the mean)."""
    rbm = GaussianBernoulliRBM(data.dim, 1)
    with torch.no_grad():
        rbm.B.zero_()
        rbm.b.copy_(data.train.x.mean(0))
    return log_likelihood(rbm, data.test.x, "exact").value


def fig1a(
    out: str | Path = "runs/fig1a",
    dataset: str = "mnist",
    data_dir: str | None = None,
    seeds: int = 3,
    epochs: int = 20,
    sweep: bool = True,
    jobs: int = 2,
    n_train: int = 0,
    methods: list[str] | None = None,
    log: Callable[[str], None] = print,
    settings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Reproduce Figure 1(a); writes fig1a.png, fig1a.md and summary.json into ``out``. Without
    the sweep, each method runs with ``settings[method]`` (default: the config's defaults)."""
    from steinebm.reproduction.plots import plot_curves

    out = Path(out)
    data = load_dataset(dataset, data_dir)  # fail early, with a clear message, if data is missing
    labels = methods or list(FIG1A_PRESETS)
    for lab in labels:
        if lab not in FIG1A_PRESETS:
            raise UserError(f"unknown method {lab!r}; choose from {', '.join(FIG1A_PRESETS)}")
    out.mkdir(parents=True, exist_ok=True)  # only once the input is known to be good
    run = {"dataset": dataset, "data_dir": data_dir, "epochs": epochs, "n_train": n_train, "progress": jobs <= 1}

    def cfg_for(label: str, setting: dict[str, Any], seed: int, folder: str) -> Config:
        values = {**run, **setting, "seed": seed, "out_dir": str(out / "runs" / slug(label) / folder)}
        return dataclasses.replace(load_config(FIG1A_PRESETS[label]), **values).validate()

    # 1. the sweep, seed 0
    chosen: dict[str, dict[str, Any]] = {}
    sweep_table: dict[str, list[tuple[str, float, float]]] = {}
    if sweep:
        grid_cfgs, grid_keys = [], []
        for lab in labels:
            keys = list(FIG1A_SWEEP[lab])
            for values in itertools.product(*(FIG1A_SWEEP[lab][k] for k in keys)):
                setting = dict(zip(keys, values))
                grid_cfgs.append(cfg_for(lab, setting, 0, "sweep/" + _setting_name(setting)))
                grid_keys.append((lab, setting))
        log(f"sweep: {len(grid_cfgs)} runs")
        results = run_many(grid_cfgs, jobs, log)
        for (lab, setting), res in zip(grid_keys, results):
            last = dict(res["evals"][-1])
            if res["diverged"]:
                last["val_ll"] = last["test_ll"] = float("-inf")
            sweep_table.setdefault(lab, []).append((_setting_name(setting), last["val_ll"], last["test_ll"]))
            best = chosen.get(lab)
            if best is None or _finite(last["val_ll"]) > _finite(best["val_ll"]):
                chosen[lab] = {"setting": setting, "val_ll": last["val_ll"]}
    else:
        chosen = {lab: {"setting": dict((settings or {}).get(lab, {})), "val_ll": float("nan")} for lab in labels}

    # 2. the chosen setting of each method, every seed
    final_cfgs, final_keys = [], []
    for lab in labels:
        for seed in range(seeds):
            # seed 0 of the chosen setting already ran in the sweep: reuse it
            name = _setting_name(chosen[lab]["setting"])
            folder = f"sweep/{name}" if sweep and seed == 0 else f"seeds/{name}/seed{seed}"
            final_cfgs.append(cfg_for(lab, chosen[lab]["setting"], seed, folder))
            final_keys.append(lab)
    log(f"final: {len(final_cfgs)} runs")
    results = run_many(final_cfgs, jobs, log)
    per_method: dict[str, list[list[dict[str, Any]]]] = {}
    for lab, res in zip(final_keys, results):
        if res["diverged"]:
            log(f"warning: {res['out_dir']} diverged: {res['diverged']}")
        per_method.setdefault(lab, []).append(res["evals"])

    baseline = baseline_log_likelihood(data)
    curves, rows = {}, []
    for lab in labels:
        runs = per_method[lab]
        n_ep = min(len(r) for r in runs)
        ep = np.array([r["epoch"] for r in runs[0][:n_ep]])
        ll = np.array([[r["test_ll"] for r in run[:n_ep]] for run in runs])  # seeds epochs
        curves[lab] = (ep, ll.mean(0), ll.std(0))
        rows.append(
            {
                "method": lab,
                "setting": _setting_name({**fig1a_rule(lab), **chosen[lab]["setting"]}),
                "final_test_ll_mean": float(ll[:, -1].mean()),
                "final_test_ll_std": float(ll[:, -1].std()),
                "best_epoch_test_ll_mean": float(ll.max(1).mean()),
                "seeds": len(runs),
            }
        )
    lows = [float(c[1][1:].min()) for c in curves.values() if len(c[1]) > 1] + [baseline]
    highs = [float(c[1].max()) for c in curves.values()] + [baseline]
    pad = 0.08 * (max(highs) - min(lows) + 1.0)
    plot_curves(
        curves,
        out / "fig1a.png",
        "epoch",
        "test log-likelihood (nats / image)",
        title=f"Figure 1(a): Gaussian-Bernoulli RBM, {data.name}, {seeds} seed(s)",
        hlines={f"B = 0, b = mean ({baseline:.1f})": baseline},
        ylim=(min(lows) - pad, max(highs) + pad),
    )
    claims = _fig1a_claims(rows)
    summary = {
        "dataset": data.name,
        "source": data.source,
        "epochs": epochs,
        "seeds": seeds,
        "baseline_test_ll": baseline,
        "rows": rows,
        "chosen": {k: v["setting"] for k, v in chosen.items()},
        "sweep": sweep_table,
        "claims": claims,
    }
    write_page(out, summary, page("fig1a.md", fig1a_document(summary)))
    return summary


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _fig1a_claims(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    by = {r["method"]: r for r in rows}
    claims: list[dict[str, str]] = []
    if "SteinCD" not in by:
        return claims
    s = by["SteinCD"]
    for other in ("CD-1", "CD-10"):
        if other not in by:
            continue
        o = by[other]
        gap = s["final_test_ll_mean"] - o["final_test_ll_mean"]
        spread = math.hypot(s["final_test_ll_std"], o["final_test_ll_std"])
        if gap > spread:
            verdict = "held"
        elif gap < -spread:
            verdict = "not held"
        else:
            verdict = "inconclusive (within the seed spread)"
        if min(s["seeds"], o["seeds"]) < 2:
            verdict += " (one seed: no spread measured)"
        claims.append(
            {
                "claim": f"SteinCD beats {other} in test log-likelihood",
                "measured": f"SteinCD {s['final_test_ll_mean']:.2f} vs {other} {o['final_test_ll_mean']:.2f} "
                f"(difference {gap:+.2f}, seed spread {spread:.2f})",
                "verdict": verdict,
            }
        )
    return claims


def fig1a_document(summary: dict[str, Any], reference_note: str | None = None) -> list[Block]:
    """Figure 1(a)'s page: the table of the methods against the reference row (with
    ``reference_note`` under it, if given), the paper's claim and its verdicts, and the sweep."""
    rows = []
    for r in summary["rows"]:
        ll = f"{r['final_test_ll_mean']:.2f} ± {r['final_test_ll_std']:.2f}"
        rows.append([r["method"], r["setting"], ll, f"{r['best_epoch_test_ll_mean']:.2f}"])
    rows.append(["B = 0, b = training mean", "—", f"{summary['baseline_test_ll']:.2f}", "—"])
    blocks = [
        text(
            f"Dataset: {summary['dataset']} ({summary['source']}); {summary['epochs']} epochs; "
            f"{summary['seeds']} seed(s) per method; mean ± std over seeds at the last epoch."
        ),
        table(["method", "chosen setting", "final test LL (nats)", "best-epoch test LL"], rows),
        *([text(reference_note)] if reference_note else []),
        text(f"Paper: {PAPER_FIG1A}"),
        claims_table(summary["claims"]),
    ]
    if summary["sweep"]:
        blocks.append(text("Sweep (seed 0; the setting with the best final validation LL is kept):"))
        entries = [[lab, n, f"{v:.2f}", f"{t:.2f}"] for lab, es in summary["sweep"].items() for n, v, t in es]
        blocks.append(table(["method", "setting", "val LL", "test LL"], entries))
    return blocks


# Each rule's setting in the demo is its preset, configs/demo-*.yaml (the one source of it): the
# setting with the best final validation log-likelihood in Figure 1(a)'s sweep run at the demo's
# scale (embedded subset, 30 epochs, seed 0), by `steinebm reproduce fig1a --dataset
# mnist-embedded --epochs 30 --seeds 1` (docs/results.md). The full experiment's settings (chosen
# for 20 epochs of 500 steps) do not carry over: in 1,500 steps the Stein rules at its learning
# rate of 3e-3 end between 0.25 nats below and 0.16 above the reference row, and its default ones
# (lr 3e-4) about 50 nats below it.
DEMO_PRESETS: dict[str, str] = {
    "CD-1": "demo-cd1",
    "CD-10": "demo-cd10",
    "SteinCD": "demo-steincd",
    "Symmetric SteinCD": "demo-symmetric-steincd",
    "Stein score matching": "demo-stein-score-matching",
}


def demo_settings() -> dict[str, dict[str, Any]]:
    """Each rule's demo setting: its demo preset's values of the keys Figure 1(a) sweeps."""
    return {lab: {k: getattr(load_config(p), k) for k in FIG1A_SWEEP[lab]} for lab, p in DEMO_PRESETS.items()}


def demo_epochs() -> int:
    """The demo's length, as its presets set it (the same in each)."""
    lengths = {load_config(p).epochs for p in DEMO_PRESETS.values()}
    if len(lengths) != 1:
        raise UserError(f"the demo presets disagree on epochs ({sorted(lengths)}): give them one length")
    return lengths.pop()


def demo_reference_note(summary: dict[str, Any]) -> str:
    """The line under the demo's table: what the reference row is, and which rules end above it."""
    base = summary["baseline_test_ll"]
    above = [r["method"] for r in summary["rows"] if r["final_test_ll_mean"] > base]
    below = [r["method"] for r in summary["rows"] if r["final_test_ll_mean"] <= base]
    verdict = f"Above it: {', '.join(above) or 'none'}; not above it: {', '.join(below) or 'none'}."
    return (
        "Reference row: B = 0, b = the mean training image is the RBM with its hidden units cut off, a "
        "unit-variance Gaussian at the mean image (the best such fit to the training images); its exact test "
        "log-likelihood needs no training, so a rule has learned anything beyond the mean image only if it ends "
        f"above this row. {verdict}"
    )


def demo(
    out: str | Path = "runs/demo",
    epochs: int | None = None,
    jobs: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Figure 1(a) in miniature on the embedded MNIST subset: one seed, each rule with its demo
    preset's setting (:data:`DEMO_PRESETS`), no sweep, for the presets' epochs unless ``epochs``
    says otherwise. Writes fig1a.png, fig1a.md (with a line on the reference row) and
    summary.json into ``out``."""
    jobs = jobs or min(2, os.cpu_count() or 1)
    summary = fig1a(
        out=out,
        dataset="mnist-embedded",
        seeds=1,
        epochs=epochs if epochs is not None else demo_epochs(),
        sweep=False,
        jobs=jobs,
        log=log,
        settings=demo_settings(),
    )
    summary["reference_note"] = demo_reference_note(summary)
    write_page(Path(out), summary, page("fig1a.md", fig1a_document(summary, summary["reference_note"])))
    return summary
