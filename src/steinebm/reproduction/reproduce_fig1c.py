"""Figure 1(c) at the authors' fidelity: the SteinGAN-RBM against training length
(``reproduce fig1c-length``), the authors' recipe with each of its differences undone
(``reproduce fig1c-ablation``). The authors' estimator beside exact likelihoods is in
:mod:`steinebm.reproduction.reproduce_hais`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steinebm.data import load_dataset
from steinebm.engine.checkpoint import CHECKPOINT, atomic_write, checkpoint_step, load_checkpoint
from steinebm.engine.config import Config
from steinebm.engine.config_file import load_config
from steinebm.naming import slug
from steinebm.reproduction.document import images, page, strong, table, text, write_page
from steinebm.reproduction.reproduce import PAPER_FIG1, _mnist_only, grid_cells
from steinebm.reproduction.runs import finished_record, read_run, run_many
from steinebm.shapes import MNIST_SHAPE

__all__ = ["fig1c_length", "fig1c_ablation", "LENGTH_RUNS", "RECIPE_ABLATIONS"]

# Figure 1(c) against training length: our default SteinGAN-RBM and the authors' recipe

LENGTH_RUNS = {"default": "fig1-steingan", "authors' recipe": "fig1-steingan-authors"}


def _length_cells(rec: dict[str, Any]) -> list[str]:
    from steinebm.evaluation.sample_scores import MNIST_CLASSIFIERS

    full = [f"{rec[f'{c}_is']:.2f} ({rec[f'{c}_classes']:.0f})" for c in MNIST_CLASSIFIERS]
    return [f"{rec.get('test_ll', float('nan')):.2f}", *full, *grid_cells(rec)]


def fig1c_length(
    out: str | Path = "runs/fig1c-length",
    dataset: str = "mnist",
    data_dir: str | None = None,
    epochs: int = 100,
    n_train: int = 0,
    eval_samples: int = 10_000,
    jobs: int = 2,
    device: str = "cpu",
    authors_grid: str | Path | None = None,
    log: Callable[[str], None] = print,
    train: bool = True,
) -> dict[str, Any]:
    """Figure 1(c)'s SteinGAN-RBM against training length: the default preset and the authors'
    recipe, one seed each, evaluated at every epoch (exact test log-likelihood; ``eval_samples``
    images and the 10 x 10 grid under both MNIST classifiers). Writes fig1c-length.md, .png and
    summary.json; a second call resumes the runs or, if they are done, only redraws. Without
    ``train``, nothing is trained: the runs are read as far as they are (a table of a long run
    while it is under way; a run not started is left out)."""
    from steinebm.evaluation.sample_scores import MNIST_CLASSIFIERS, grid_scores, read_grid
    from steinebm.reproduction.plots import plot_metric_panels

    _mnist_only(dataset, "fig1c-length")
    out = Path(out)
    load_dataset(dataset, data_dir)  # before anything is created
    their_images = read_grid(authors_grid) if authors_grid is not None else None
    theirs = grid_scores(their_images) if their_images is not None else None
    target = PAPER_FIG1["authors_ll_with_kernel"]
    cfgs = {
        name: load_config(
            preset,
            [
                f"dataset={dataset}",
                f"epochs={epochs}",
                "eval_every=1",
                f"eval_samples={eval_samples}",
                f"n_train={n_train}",
                f"device={device}",
                f"out_dir={out / slug(name)}",
            ],
        )
        for name, preset in LENGTH_RUNS.items()
    }
    for cfg in cfgs.values():
        cfg.data_dir = data_dir
    out.mkdir(parents=True, exist_ok=True)
    if train:
        results = dict(zip(cfgs, run_many(list(cfgs.values()), jobs, log)))
    else:
        results = {name: read_run(cfg) for name, cfg in cfgs.items() if (Path(cfg.out_dir) / CHECKPOINT).exists()}
    summary: dict[str, Any] = {"epochs": epochs, "eval_samples": eval_samples, "runs": {}, "authors_grid": theirs}
    blocks = [
        text(
            f"Figure 1(c) against training length: {epochs} epochs, seed 0, every epoch: exact test LL (nats), "
            f"inception score (classes seen) of {eval_samples:,} images and of the 10 x 10 grid (one split), under "
            f"each MNIST classifier ({', '.join(MNIST_CLASSIFIERS)}). The authors' README: {target} (AIS)."
        )
    ]
    if not train:
        reached = [
            f"{name} to epoch {res['evals'][-1]['epoch']:g}"
            for name, res in results.items()
            if res["evals"] and res["evals"][-1]["epoch"] >= 1
        ]
        said = ", ".join(reached) if reached else "no run has an evaluated epoch yet"
        blocks.append(text(f"Read without training, as far as the runs are trained: {said}."))
    heads = [*(f"IS {c}" for c in MNIST_CLASSIFIERS), *(f"grid {c}" for c in MNIST_CLASSIFIERS)]
    for name, res in results.items():
        evals = [r for r in res["evals"] if r["epoch"] >= 1 and "test_ll" in r]
        if not evals:
            continue
        best = max(evals, key=lambda r: r["test_ll"])
        passed = next((r["epoch"] for r in evals if r["test_ll"] > target), None)
        # the first epoch whose grid scores at least the authors' grid under every classifier
        matched = None
        if theirs is not None:
            matched = next(
                (
                    r["epoch"]
                    for r in evals
                    if all(r.get(f"grid_{c}_is", 0.0) >= theirs[f"grid_{c}_is"] for c in MNIST_CLASSIFIERS)
                ),
                None,
            )
        summary["runs"][name] = {
            "out_dir": res["out_dir"],
            "diverged": res["diverged"],
            "evals": evals,
            "best_ll": best["test_ll"],
            "best_ll_epoch": best["epoch"],
            "passes_authors_ll_at": passed,
            "grid_matches_authors_at": matched,
        }
        said = (
            f" ({res['out_dir']}): best test LL {best['test_ll']:.2f} at epoch {best['epoch']:g}; "
            + (f"passes {target} at epoch {passed:g}." if passed is not None else f"does not pass {target}.")
            + (
                ""
                if theirs is None
                else f" Its grid first scores at least the authors' under both classifiers at epoch {matched:g}."
                if matched is not None
                else " Its grid does not score at least the authors' under both classifiers in these epochs."
            )
            + (f" Diverged: {res['diverged']}." if res["diverged"] else "")
        )
        blocks.append(text(strong(name), said))
        shown = sorted({1, 5, *range(10, int(evals[-1]["epoch"]) + 1, 10), int(evals[-1]["epoch"])})
        rows = [
            [f"{r['epoch']:g}", *_length_cells(r)]
            for r in evals
            if r["epoch"] in shown and all(f"grid_{c}_is" in r for c in MNIST_CLASSIFIERS)
        ]
        # one epoch's scores move from epoch to epoch: the last ten epochs' mean and spread
        tail = [r for r in evals[-10:] if all(f"grid_{c}_is" in r for c in MNIST_CLASSIFIERS)]
        if tail:
            keys = ["test_ll", *(f"{c}_is" for c in MNIST_CLASSIFIERS), *(f"grid_{c}_is" for c in MNIST_CLASSIFIERS)]
            spread = {k: (float(np.mean([r[k] for r in tail])), float(np.std([r[k] for r in tail]))) for k in keys}
            summary["runs"][name]["last_epochs_mean_std"] = spread
            cells = [f"{m:.2f} ± {sd:.2f}" for m, sd in spread.values()]
            rows.append([f"{tail[0]['epoch']:g}-{tail[-1]['epoch']:g}, mean ± sd", *cells])
        blocks.append(table(["epoch", "test LL", *heads], rows))
        if theirs is not None:
            at = [
                r["epoch"]
                for r in evals
                if all(r.get(f"grid_{c}_is", 0.0) >= theirs[f"grid_{c}_is"] for c in MNIST_CLASSIFIERS)
            ]
            summary["runs"][name]["grid_matches_authors_epochs"] = at
            listed = ", ".join(f"{e:g}" for e in at) if at else "none"
            blocks.append(text(f"Epochs whose grid scores at least the authors' under both classifiers: {listed}."))
    if theirs is not None:
        theirs_said = " | ".join(grid_cells(theirs))
        blocks.append(text(f"The authors' grid ({Path(str(authors_grid)).name}), one split: {theirs_said}."))
    pictures, at_step = [], []
    for name in summary["runs"]:
        grid, step = _grid_images(cfgs[name].out_dir, eval_samples)
        pictures.append((_save_grid(grid, out / f"grid-{slug(name)}.png"), name))
        at_step.append(f"{name}: step {step}")
    if pictures and their_images is not None:
        pictures.append((_save_grid(their_images, out / "authors-grid.png"), "the authors' grid"))
    if pictures:
        steps = ", ".join(at_step)
        blocks.append(text(f"The 10 x 10 grid of each run's last checkpoint ({steps}), drawn 2 x without padding:"))
        blocks.append(images(pictures))
    write_page(out, summary, page("fig1c-length.md", blocks))

    def curve(key: str) -> dict[str, tuple[list[float], list[float]]]:
        return {
            f"{name}, {key}": (
                [r["epoch"] for r in run["evals"] if key in r],
                [r[key] for r in run["evals"] if key in r],
            )
            for name, run in summary["runs"].items()
        }

    ref = {f"the authors' grid, {c}": theirs[f"grid_{c}_is"] for c in MNIST_CLASSIFIERS} if theirs else {}
    full_is = {k: v for c in MNIST_CLASSIFIERS for k, v in curve(f"{c}_is").items()}
    grid_is = {k: v for c in MNIST_CLASSIFIERS for k, v in curve(f"grid_{c}_is").items()}
    if summary["runs"]:
        plot_metric_panels(
            [
                ("exact test log-likelihood (nats)", curve("test_ll"), {f"the authors' README ({target})": target}),
                (f"inception score, {eval_samples:,} images", full_is, {}),
                ("inception score, the 10 x 10 grid", grid_is, ref),
            ],
            out / "fig1c-length.png",
            "epoch",
        )
    return summary


# Figure 1(c) with the authors' recipe: three seeds, then each difference switched back alone

# row -> the settings of configs/fig1-steingan.yaml (our default) that replace the recipe's
RECIPE_ABLATIONS: dict[str, dict[str, Any]] = {
    "our kernel (median distance over the pairs, log m)": dict(median_of="distance", median_over="pairs", log_term="m"),
    "phi divided by m": dict(normalize="m"),
    "generator loss averaged over the batch": dict(gen_loss="mean"),
    "generator with biases": dict(gen_bias=True),
    "BatchNorm with scale and shift": dict(gen_batchnorm="affine"),
    "BatchNorm running statistics at sampling": dict(gen_bn_stats="running"),
    "BatchNorm epsilon 1e-5": dict(gen_bn_eps=1e-5),
}


def _grid_images(run_dir: str | Path, n: int) -> tuple[torch.Tensor, int]:
    """The 100 images whose grid :func:`_generated_scores` scores for ``n`` images (the first of
    the first batch of ``n``: a generator with batch statistics draws them within that batch),
    and the step of the checkpoint they come from (read once, so a run still saving cannot
    give the one and the other from different checkpoints)."""
    from steinebm.engine.build import load_generator
    from steinebm.evaluation.sample_scores import generated_images

    ck = load_checkpoint(run_dir)
    return generated_images(load_generator(run_dir, ck), min(n, 1000))[:100], int(ck["step"])


def _save_grid(images_100: torch.Tensor, path: Path) -> str:
    """A 10 x 10 grid drawn as the authors drew theirs (no padding), enlarged 2 times; returns
    the file name."""
    from steinebm.grids import save_image_grid

    return save_image_grid(images_100, path, MNIST_SHAPE, nrow=10, scale=2, pad=0).name


def _generated_scores(run_dir: str | Path, n: int) -> dict[str, float]:
    """Scores of ``n`` images of a run's generator under both MNIST classifiers and of its first 100
    (the grid protocol), kept in RUN_DIR/sample_scores.json for the checkpoint's step."""
    from steinebm.engine.build import load_generator
    from steinebm.evaluation.sample_scores import generated_images, grid_scores, score_images

    path = Path(run_dir) / "sample_scores.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("step") == checkpoint_step(run_dir) and saved.get("n_images") == n:
            return saved  # type: ignore[no-any-return]
    ck = load_checkpoint(run_dir)  # read once: the step and the weights come from the same file
    x = generated_images(load_generator(run_dir, ck), n)
    scores: dict[str, Any] = {**score_images(x), **grid_scores(x), "step": int(ck["step"]), "n_images": n}
    # whole or not at all: a kill while writing must not leave a file the next call cannot parse
    atomic_write(path, lambda fh: fh.write(json.dumps(scores).encode()))
    return scores


def fig1c_ablation(
    out: str | Path = "runs/fig1c-ablation",
    dataset: str = "mnist",
    data_dir: str | None = None,
    epochs: int = 20,
    n_train: int = 0,
    seeds: int = 3,
    ablation_seeds: int = 1,
    is_samples: int = 50_000,
    jobs: int = 2,
    device: str = "cpu",
    authors_grid: str | Path | None = None,
    log: Callable[[str], None] = print,
    train: bool = True,
) -> dict[str, Any]:
    """The authors' recipe (configs/fig1-steingan-authors.yaml) with ``seeds`` seeds, and each of
    its differences from our default switched back alone (:data:`RECIPE_ABLATIONS`) with
    ``ablation_seeds``: exact test LL, the inception score of ``is_samples`` images and the
    100-image grid, under both MNIST classifiers. Writes fig1c-ablation.md and summary.json.

    Without ``train``, nothing is trained: the runs already finished are scored and the others
    are listed as not finished (for a table while the runs are still under way; a run that
    stopped or diverged before its last epoch is listed so too)."""
    from steinebm.evaluation.sample_scores import MNIST_CLASSIFIERS, grid_scores, read_grid

    _mnist_only(dataset, "fig1c-ablation")
    out = Path(out)
    load_dataset(dataset, data_dir)  # before anything is created
    their_images = read_grid(authors_grid) if authors_grid is not None else None
    theirs = grid_scores(their_images) if their_images is not None else None
    rows: dict[str, list[Config]] = {}
    for label, change in [("the authors' recipe", {}), *RECIPE_ABLATIONS.items()]:
        n_seeds = seeds if not change else ablation_seeds
        rows[label] = []
        for seed in range(n_seeds):
            cfg = load_config(
                "fig1-steingan-authors",
                [f"dataset={dataset}", f"epochs={epochs}", f"n_train={n_train}", f"device={device}", f"seed={seed}"],
            )
            cfg = dataclasses.replace(
                cfg, **change, data_dir=data_dir, eval_every=0, out_dir=str(out / slug(label) / f"seed{seed}")
            )
            cfg.validate()
            rows[label].append(cfg)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [c for cfgs in rows.values() for c in cfgs]
    if not train:
        wanted = [c for c in wanted if finished_record(c) is not None]
    results = run_many(wanted, jobs, log)
    by_dir = {r["out_dir"]: r for r in results}
    by_row: dict[str, Any] = {}
    keys = [f"{c}_is" for c in MNIST_CLASSIFIERS] + [f"grid_{c}_is" for c in MNIST_CLASSIFIERS]
    for label, cfgs in rows.items():
        per_seed: list[dict[str, Any]] = []
        for cfg in cfgs:
            res = by_dir.get(cfg.out_dir)
            if res is None:
                per_seed.append({"out_dir": cfg.out_dir, "not_finished": True})
                continue
            if res["diverged"]:
                per_seed.append({"out_dir": cfg.out_dir, "diverged": res["diverged"]})
                continue
            ll = res["evals"][-1].get("test_ll", float("nan")) if res["evals"] else float("nan")
            per_seed.append({"out_dir": cfg.out_dir, "test_ll": ll, **_generated_scores(cfg.out_dir, is_samples)})
        good = [s for s in per_seed if "diverged" not in s and "not_finished" not in s]
        stats = {
            k: (float(np.mean([s[k] for s in good])), float(np.std([s[k] for s in good]))) if good else None
            for k in ["test_ll", *keys]
        }
        by_row[label] = {"change": RECIPE_ABLATIONS.get(label, {}), "seeds": per_seed, "mean_std": stats}
    heads = [*(f"IS {c}" for c in MNIST_CLASSIFIERS), *(f"grid {c}" for c in MNIST_CLASSIFIERS)]

    def pm(v: tuple[float, float] | None, row: dict[str, Any]) -> str:
        if v is not None:  # one seed has no spread to show
            scored = sum("test_ll" in s for s in row["seeds"])
            return f"{v[0]:.2f} ± {v[1]:.2f}" if scored > 1 else f"{v[0]:.2f}"
        return "diverged" if any("diverged" in s for s in row["seeds"]) else "not finished"

    def seeds_cell(row: dict[str, Any]) -> str:
        done = sum("not_finished" not in s for s in row["seeds"])
        return str(done) if done == len(row["seeds"]) else f"{done} of {len(row['seeds'])}"

    cells = [
        [label, seeds_cell(row), *(pm(row["mean_std"][k], row) for k in ["test_ll", *keys])]
        for label, row in by_row.items()
    ]
    if theirs is not None:
        cells.append(
            ["the authors' grid", "", "", *[""] * len(MNIST_CLASSIFIERS)]
            + [f"{theirs[f'grid_{c}_is']:.2f}" for c in MNIST_CLASSIFIERS]
        )

    def n_of(k: int) -> str:
        return f"{k} seed{'s' if k > 1 else ''}"

    intro = text(
        f"The authors' recipe for Figure 1(c), {epochs} epochs: {n_of(seeds)}, and each difference from our default "
        f"switched back alone ({n_of(ablation_seeds)}). Exact test LL (nats); "
        f"inception score of {is_samples:,} images and of the first 100 as one split, under each MNIST classifier; "
        "mean ± standard deviation over the seeds where a row has more than one."
    )
    blocks = [intro, table(["row", "seeds", "test LL", *heads], cells)]
    missing = sum("not_finished" in s for row in by_row.values() for s in row["seeds"])
    if missing:
        total = len(wanted) + missing
        blocks.append(
            text(
                f"{missing} of the {total} runs are not finished (not started, under way, stopped or diverged); "
                "without --no-train the command trains or resumes them."
            )
        )
    pictures = [
        (_save_grid(_grid_images(row["seeds"][0]["out_dir"], is_samples)[0], out / f"grid-{slug(label)}.png"), label)
        for label, row in by_row.items()
        if "test_ll" in row["seeds"][0]  # seed 0 trained, not diverged
    ]
    if pictures and their_images is not None:
        pictures.append((_save_grid(their_images, out / "authors-grid.png"), "the authors' grid"))
    if pictures:
        blocks.append(text("The 10 x 10 grid each row's seed 0 is scored on, drawn 2 x without padding:"))
        blocks.append(images(pictures))
    summary = {"epochs": epochs, "is_samples": is_samples, "rows": by_row, "authors_grid": theirs}
    write_page(out, summary, page("fig1c-ablation.md", blocks))
    return summary
