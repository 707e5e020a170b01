"""One command per figure of the paper. Figure 1(a): test log-likelihood of the MNIST RBM
against epochs for CD-1, CD-10 (Langevin), SteinCD, symmetric SteinCD and Stein score matching.

A reproduction is a folder of ordinary runs (``runs/<label>/seed<k>``), so an interrupted
reproduction picks up where it stopped: finished runs are read back, partial ones resumed.
Hyper-parameters are chosen fairly: each method's sweep (Langevin step size for CD, epsilon
for SteinCD, the learning rate for all) is run with one seed, the setting with the best
final validation log-likelihood is kept, and that setting is then run with every seed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config
from .data import Dataset, load_dataset
from .energies import GaussianBernoulliRBM
from .errors import DivergenceError, UserError
from .metrics import average_log_likelihood
from .train import CHECKPOINT, read_metrics, train

FIG1A_METHODS: dict[str, dict[str, Any]] = {
    "CD-1": {"method": "cd", "cd_k": 1},
    "CD-10": {"method": "cd", "cd_k": 10},
    "SteinCD": {"method": "steincd"},
    "Symmetric SteinCD": {"method": "symmetric-steincd"},
    "Stein score matching": {"method": "stein-score-matching"},
}
FIG1A_SWEEP: dict[str, dict[str, list[Any]]] = {
    "CD-1": {"langevin_step": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0], "lr": [3e-4, 1e-3, 3e-3]},
    "CD-10": {"langevin_step": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0], "lr": [3e-4, 1e-3, 3e-3]},
    "SteinCD": {"epsilon": [1e-3, 1e-2, 1e-1, 1.0], "lr": [3e-4, 1e-3, 3e-3]},
    "Symmetric SteinCD": {"epsilon": [1e-3, 1e-2, 1e-1, 1.0], "lr": [3e-4, 1e-3, 3e-3]},
    "Stein score matching": {"lr": [3e-4, 1e-3, 3e-3]},
}
PAPER_FIG1A = (
    "SteinCD (one SVGD step) reaches a higher test log-likelihood than CD-1 and CD-10 with "
    "Langevin dynamics (Figure 1a; the paper prints curves, no numbers)."
)


def _slug(label: str) -> str:
    return label.lower().replace(" ", "-")


def _setting_name(setting: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items()) or "default"


def _run_is_complete(cfg: Config) -> dict[str, Any] | None:
    ck = Path(cfg.out_dir) / CHECKPOINT
    if not ck.exists():
        return None
    recs = [r for r in read_metrics(cfg.out_dir) if "test_ll" in r]
    if recs and recs[-1]["epoch"] >= cfg.epochs:
        return recs[-1]
    return None


def _run(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Train one run (in a worker process); returns its evaluation records."""
    cfg = Config(**cfg_dict)
    diverged = None
    if _run_is_complete(cfg) is None:
        resume = (Path(cfg.out_dir) / CHECKPOINT).exists()
        try:
            train(cfg, resume=resume, dataset=_worker_data(cfg))
        except DivergenceError as e:
            diverged = str(e)
    evals = [r for r in read_metrics(cfg.out_dir) if "test_ll" in r]
    return {"out_dir": cfg.out_dir, "evals": evals, "diverged": diverged}


_DATA: dict[tuple[str, str | None], Dataset] = {}


def _worker_data(cfg: Config) -> Dataset:
    key = (cfg.dataset, cfg.data_dir)
    if key not in _DATA:
        _DATA[key] = load_dataset(cfg.dataset, cfg.data_dir)
    return _DATA[key]


def run_many(cfgs: list[Config], jobs: int, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train many runs, ``jobs`` at a time (processes with one torch thread each when jobs > 1)."""
    if jobs <= 1:
        out = []
        for k, cfg in enumerate(cfgs):
            log(f"[{k + 1}/{len(cfgs)}] {cfg.out_dir}")
            out.append(_run(dataclasses.asdict(cfg)))
        return out
    dicts = []
    for cfg in cfgs:
        d = dataclasses.asdict(cfg)
        d["threads"], d["progress"] = 1, False
        dicts.append(d)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        results = []
        for k, res in enumerate(pool.map(_run, dicts)):
            log(f"[{k + 1}/{len(cfgs)}] done {res['out_dir']}")
            results.append(res)
        return results


def baseline_log_likelihood(data: Dataset) -> float:
    """The reference model B = 0, b = training mean (a unit-variance Gaussian at the mean)."""
    rbm = GaussianBernoulliRBM(data.dim, 1)
    with torch.no_grad():
        rbm.B.zero_()
        rbm.b.copy_(data.train.x.mean(0))
    return average_log_likelihood(rbm, data.test.x)


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
) -> dict[str, Any]:
    """Reproduce Figure 1(a); writes fig1a.png, fig1a.md and summary.json into ``out``."""
    from .plots import plot_curves

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(dataset, data_dir)  # fail early, with a clear message, if data is missing
    labels = methods or list(FIG1A_METHODS)
    for lab in labels:
        if lab not in FIG1A_METHODS:
            raise UserError(f"unknown method {lab!r}; choose from {', '.join(FIG1A_METHODS)}")
    base = Config(dataset=dataset, data_dir=data_dir, epochs=epochs, n_train=n_train, progress=jobs <= 1)

    def cfg_for(label: str, setting: dict[str, Any], seed: int, folder: str) -> Config:
        values = {**FIG1A_METHODS[label], **setting, "seed": seed, "out_dir": str(out / "runs" / _slug(label) / folder)}
        return dataclasses.replace(base, **values).validate()

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
        chosen = {lab: {"setting": {}, "val_ll": float("nan")} for lab in labels}

    # 2. the chosen setting of each method, every seed
    final_cfgs, final_keys = [], []
    for lab in labels:
        for seed in range(seeds):
            # seed 0 of the chosen setting already ran in the sweep: reuse it
            folder = "sweep/" + _setting_name(chosen[lab]["setting"]) if sweep and seed == 0 else f"seed{seed}"
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
                "setting": _setting_name({**FIG1A_METHODS[lab], **chosen[lab]["setting"]}),
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
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "fig1a.md").write_text(fig1a_markdown(summary))
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
        claims.append(
            {
                "claim": f"SteinCD beats {other} in test log-likelihood",
                "measured": f"SteinCD {s['final_test_ll_mean']:.2f} vs {other} {o['final_test_ll_mean']:.2f} "
                f"(difference {gap:+.2f}, seed spread {spread:.2f})",
                "verdict": verdict,
            }
        )
    return claims


def fig1a_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"Dataset: {summary['dataset']} ({summary['source']}); {summary['epochs']} epochs; "
        f"{summary['seeds']} seed(s) per method; mean ± std over seeds at the last epoch.",
        "",
        "| method | chosen setting | final test LL (nats) | best-epoch test LL |",
        "| --- | --- | --- | --- |",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['method']} | {r['setting']} | {r['final_test_ll_mean']:.2f} ± {r['final_test_ll_std']:.2f} | "
            f"{r['best_epoch_test_ll_mean']:.2f} |"
        )
    lines.append(f"| B = 0, b = training mean | — | {summary['baseline_test_ll']:.2f} | — |")
    lines += ["", f"Paper: {PAPER_FIG1A}", "", "| claim | measured | verdict |", "| --- | --- | --- |"]
    for c in summary["claims"]:
        lines.append(f"| {c['claim']} | {c['measured']} | {c['verdict']} |")
    if summary["sweep"]:
        lines += ["", "Sweep (seed 0; the setting with the best final validation LL is kept):", ""]
        lines += ["| method | setting | val LL | test LL |", "| --- | --- | --- | --- |"]
        for lab, entries in summary["sweep"].items():
            for name, val, test in entries:
                lines.append(f"| {lab} | {name} | {val:.2f} | {test:.2f} |")
    return "\n".join(lines) + "\n"


def demo(
    out: str | Path = "runs/demo", epochs: int = 30, jobs: int | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Figure 1(a) in miniature on the embedded MNIST subset: one seed, default settings."""
    jobs = jobs or min(2, os.cpu_count() or 1)
    return fig1a(out=out, dataset="mnist-embedded", seeds=1, epochs=epochs, sweep=False, jobs=jobs, log=log)
