"""One command per figure of the paper: Figure 1(b)-(d), SteinGAN, SteinCD-GAN(alpha) and the
kernel ablation on the MNIST RBM. Figure 1(a) and the demo are in
:mod:`steinebm.reproduction.reproduce_fig1a`, the run pool every figure trains with in
:mod:`steinebm.reproduction.runs`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steinebm.data import load_dataset
from steinebm.engine.build import load_generator
from steinebm.engine.checkpoint import checkpoint_step
from steinebm.engine.config import Config
from steinebm.engine.config_file import load_config
from steinebm.engine.runlog import read_metrics
from steinebm.errors import UserError
from steinebm.evaluation.likelihood import (
    mean_pairwise_distance,
    near_duplicate_fraction,
    nearest_neighbour_distance,
)
from steinebm.models.energies import GaussianBernoulliRBM
from steinebm.naming import slug
from steinebm.reproduction.document import Block, claims_table, image_cell, page, table, text, write_page
from steinebm.reproduction.runs import run_many
from steinebm.shapes import MNIST_SHAPE

__all__ = [
    "fig1b",
    "fig1b_curves",
    "fig1b_document",
    "diversity_scores",
    "generator_scores",
    "cached_generator_scores",
    "parameter_counts",
    "sample_grid",
    "grid_cells",
    "fig1cd",
    "fig1cd_document",
    "FIG1B_ALPHAS",
    "STEINGAN_RBM",
    "PAPER_FIG1",
]


# ---------------------------------------------------------------------------------------------
# Figure 1(b)-(d): SteinGAN, SteinCD-GAN(alpha) and the kernel ablation on the MNIST RBM

FIG1B_ALPHAS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
STEINGAN_RBM = "fig1-steingan"  # the preset of Figure 1(b)-(d): the authors' rbm_adv settings


def _steingan_rbm(**values: Any) -> Config:
    """The Figure 1(b)-(d) preset with ``values`` in place of its own."""

    return dataclasses.replace(load_config(STEINGAN_RBM), **values)


PAPER_FIG1 = {
    "authors_ll_with_kernel": -771.2,  # the authors' README, AIS
    "authors_ll_without_kernel": -989.6,
}


def _mnist_only(dataset: str, figure: str) -> None:
    if dataset not in ("mnist", "mnist-embedded"):
        raise UserError(
            f"{figure} scores its samples with the shipped MNIST classifier, which means nothing on {dataset}: "
            "use --dataset mnist or mnist-embedded (fig1a takes any of them)"
        )


def diversity_scores(x: torch.Tensor) -> dict[str, float]:
    """Pixel diversity and the two nearest-neighbour measures of the first 2,000 images."""
    return {
        "pixel_diversity": mean_pairwise_distance(x),
        "nn_distance": nearest_neighbour_distance(x),
        "near_duplicates": near_duplicate_fraction(x),
    }


def generator_scores(
    run_dir: str | Path,
    n: int,
    seed: int = 0,
    batch_size: int = 1000,
    device: str = "cpu",
    generator: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Inception score (10 splits), mode coverage and diversity of ``n`` images from a run's
    generator (``generator``, else loaded from RUN_DIR). The noise is drawn on the CPU, so every
    device sees the same draws."""
    from steinebm.engine.build import load_generator
    from steinebm.evaluation.classifiers import inception_score, load_classifier, mode_coverage
    from steinebm.models.common import uniform_noise

    G: Any = (generator if generator is not None else load_generator(run_dir)).to(device)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        chunks = [uniform_noise(min(batch_size, n - k), G.noise_dim, rng) for k in range(0, n, batch_size)]
        x = torch.cat([G(xi.to(device)).cpu() for xi in chunks])
    classifier = load_classifier("mnist").to(device)
    is_mean, is_std = inception_score(x, classifier=classifier)
    cov = mode_coverage(x, classifier=classifier)
    return {"is_mean": is_mean, "is_std": is_std, "n_images": n, **diversity_scores(x), **cov}


def cached_generator_scores(
    run_dir: str | Path, n: int, seed: int = 0, device: str = "cpu", generator: torch.nn.Module | None = None
) -> dict[str, Any]:
    """:func:`generator_scores`, kept in RUN_DIR/generator_scores.json for the checkpoint's step
    (read from the checkpoint's header: a cached score reads no weights)."""
    path = Path(run_dir) / "generator_scores.json"
    step = checkpoint_step(run_dir)
    if path.exists():
        sc = json.loads(path.read_text())
        if sc.get("step") == step and sc.get("n_images") == n and sc.get("seed") == seed and "nn_distance" in sc:
            return sc  # type: ignore[no-any-return]
    sc = {**generator_scores(run_dir, n, seed=seed, device=device, generator=generator), "step": step, "seed": seed}
    path.write_text(json.dumps(sc))
    return sc


def fig1b(
    out: str | Path = "runs/fig1b",
    dataset: str = "mnist",
    data_dir: str | None = None,
    alphas: tuple[float, ...] = FIG1B_ALPHAS,
    seeds: int = 3,
    epochs: int = 20,
    is_samples: int = 50_000,
    jobs: int = 2,
    n_train: int = 0,
    device: str = "cpu",
    dcgan: bool = True,
    steincd_optimizer: str = "shared",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Figure 1(b): exact test log-likelihood of the RBM and inception score of the generator
    for SteinCD-GAN(alpha); also the no-kernel SteinGAN of Figure 1(d) and, with ``dcgan``, the
    DCGAN baseline on the same generator (inception score only: a discriminator has no
    likelihood)."""
    from steinebm.reproduction.plots import plot_alpha_panels

    _mnist_only(dataset, "fig1b")
    out = Path(out)
    data = load_dataset(dataset, data_dir)  # fail early with a clear message, before anything is created
    out.mkdir(parents=True, exist_ok=True)
    base = _steingan_rbm(
        dataset=dataset,
        data_dir=data_dir,
        epochs=epochs,
        n_train=n_train,
        progress=jobs <= 1,
        eval_every=1,  # exact LL after every epoch: cheap, and it gives the learning curves
        device=device,
        steincd_optimizer=steincd_optimizer,
    )
    variants: list[tuple[str, dict[str, Any]]] = [(f"alpha={a:g}", {"alpha": a}) for a in alphas]
    variants.append(("no-kernel", {"alpha": 0.0, "gen_kernel": "constant"}))
    if dcgan:
        variants.append(("dcgan", {"method": "dcgan"}))
    cfgs, keys = [], []
    for name, values in variants:
        for seed in range(seeds):
            cfgs.append(
                dataclasses.replace(
                    base, **values, seed=seed, out_dir=str(out / "runs" / name / f"seed{seed}")
                ).validate()
            )
            keys.append(name)
    log(f"fig1b: {len(cfgs)} runs")
    results = run_many(cfgs, jobs, log)
    rows: dict[str, dict[str, list[float]]] = {}
    for name, cfg, res in zip(keys, cfgs, results):
        r = rows.setdefault(name, {k: [] for k in ("ll", "is", "classes", "entropy", "diversity", "nn", "dup")})
        if res["diverged"]:
            log(f"warning: {cfg.out_dir} diverged: {res['diverged']}")
            continue
        r["ll"].append(res["evals"][-1].get("test_ll", float("nan")))
        sc = cached_generator_scores(cfg.out_dir, is_samples, seed=cfg.seed, device=device)
        r["is"].append(sc["is_mean"])
        r["classes"].append(sc["classes_present"])
        r["entropy"].append(sc["entropy"])
        r["diversity"].append(sc["pixel_diversity"])
        r["nn"].append(sc["nn_distance"])
        r["dup"].append(sc["near_duplicates"])
    table: list[dict[str, Any]] = []
    for name, r in rows.items():
        table.append(
            {
                "variant": name,
                "seeds": len(r["ll"]),
                **{f"{k}_mean": float(np.mean(v)) if v else float("nan") for k, v in r.items()},
                **{f"{k}_std": float(np.std(v)) if v else float("nan") for k, v in r.items()},
            }
        )
    summary = {
        "dataset": dataset,
        "epochs": epochs,
        "seeds": seeds,
        "is_samples": is_samples,
        "device": device,
        "steincd_optimizer": steincd_optimizer,
        "rows": table,
        "test_images": diversity_scores(data.test.x),
        "parameters": parameter_counts(data.dim),
        "paper": PAPER_FIG1,
    }
    summary["claims"] = _fig1b_claims(table)
    plot_alpha_panels([t for t in table if t["variant"].startswith("alpha=")], out / "fig1b.png")
    fig1b_curves(out)
    write_page(out, summary, page("fig1b.md", fig1b_document(summary)))
    return summary


def fig1b_curves(fig1b_dir: str | Path, path: str | Path | None = None) -> Path:
    """Test log-likelihood against epoch for every RBM variant of a fig1b folder (mean and
    spread over its seeds), read from the runs' logs alone: no checkpoint is needed."""
    from steinebm.reproduction.plots import plot_curves

    fig1b_dir = Path(fig1b_dir)
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for variant in sorted(p.name for p in (fig1b_dir / "runs").iterdir() if p.is_dir()):
        per_seed = []
        for run in sorted((fig1b_dir / "runs" / variant).glob("seed*")):
            evals = {r["epoch"]: r["test_ll"] for r in read_metrics(run) if "test_ll" in r}
            if evals:
                per_seed.append(evals)
        if not per_seed:
            continue  # e.g. DCGAN: a discriminator has no likelihood
        epochs = sorted(set.intersection(*(set(e) for e in per_seed)))
        ll = np.array([[e[k] for k in epochs] for e in per_seed])
        curves[variant] = (np.array(epochs), ll.mean(0), ll.std(0))
    if not curves:
        raise UserError(f"{fig1b_dir} holds no runs with test log-likelihoods")
    lows = [float(np.min(m[1:])) for _, m, _ in curves.values() if len(m) > 1] or [-1000.0]
    highs = [float(np.max(m)) for _, m, _ in curves.values()]
    pad = 0.05 * (max(highs) - min(lows) + 1)
    return plot_curves(
        curves,
        path or fig1b_dir / "fig1b-curves.png",
        "epoch",
        "test log-likelihood (nats / image)",
        title=f"SteinCD-GAN(alpha) on the MNIST RBM, {len(per_seed)} seed(s)",
        ylim=(min(lows) - pad, max(highs) + pad),  # the untrained epoch 0 would flatten the rest
    )


def parameter_counts(dim: int) -> dict[str, int]:
    """Trainable parameters of the networks Figure 1(b) compares."""
    from steinebm.models.common import count_parameters
    from steinebm.models.mnist_nets import MNISTDiscriminator, MNISTGenerator

    return {
        "rbm": count_parameters(GaussianBernoulliRBM(dim, Config().n_hidden)),
        "generator": count_parameters(MNISTGenerator(Config().noise_dim)),
        "dcgan_discriminator": count_parameters(MNISTDiscriminator()),
    }


def _fig1b_claims(table: list[dict[str, Any]]) -> list[dict[str, str]]:
    by = {t["variant"]: t for t in table}
    claims: list[dict[str, str]] = []

    def verdict(ok: bool) -> str:
        return "held" if ok else "not held"

    if "alpha=0" in by and "alpha=1" in by:
        g, c = by["alpha=0"], by["alpha=1"]
        claims.append(
            {
                "claim": "SteinGAN (alpha=0) has a worse test likelihood than SteinCD (alpha=1)",
                "measured": f"{g['ll_mean']:.2f} vs {c['ll_mean']:.2f}",
                "verdict": verdict(g["ll_mean"] < c["ll_mean"]),
            }
        )
        claims.append(
            {
                "claim": "SteinGAN has a higher inception score than SteinCD",
                "measured": f"{g['is_mean']:.2f} vs {c['is_mean']:.2f}",
                "verdict": verdict(g["is_mean"] > c["is_mean"]),
            }
        )
        for a in ("alpha=0.1", "alpha=0.25"):
            if a in by:
                t = by[a]
                ok_ll = t["ll_mean"] >= c["ll_mean"] - c["ll_std"]
                ok_is = t["is_mean"] >= g["is_mean"] - max(0.1 * g["is_mean"], g["is_std"])
                claims.append(
                    {
                        "claim": f"{a}: likelihood at least SteinCD's, inception score only slightly below SteinGAN's",
                        "measured": f"LL {t['ll_mean']:.2f} (SteinCD {c['ll_mean']:.2f}); IS {t['is_mean']:.2f} "
                        f"(SteinGAN {g['is_mean']:.2f})",
                        "verdict": verdict(ok_ll and ok_is),
                    }
                )
    if "alpha=0" in by and "no-kernel" in by:
        g, n = by["alpha=0"], by["no-kernel"]
        claims.append(
            {
                "claim": "without the kernel the samples are less diverse",
                "measured": f"near-duplicates {n['dup_mean']:.3f} vs {g['dup_mean']:.3f}; nearest-neighbour "
                f"distance {n['nn_mean']:.3f} vs {g['nn_mean']:.3f}; pixel diversity {n['diversity_mean']:.2f} vs "
                f"{g['diversity_mean']:.2f}; label entropy {n['entropy_mean']:.3f} vs {g['entropy_mean']:.3f} nats",
                # a collapse onto a few shapes shows in the nearest-neighbour distance of
                # brightness-normalised images; plain pixel distances and label histograms of
                # noisy samples can miss it
                "verdict": verdict(n["nn_mean"] < g["nn_mean"] and n["dup_mean"] > g["dup_mean"]),
            }
        )
    return claims


def fig1b_document(summary: dict[str, Any]) -> list[Block]:
    """Figure 1(b)'s page: each variant's likelihood, inception score and diversity beside the
    test images', what the columns mean, the parameter counts, the authors' numbers, the claims."""
    rows = []
    for t in summary["rows"]:
        ll = "n/a (no likelihood)" if math.isnan(t["ll_mean"]) else f"{t['ll_mean']:.2f} ± {t['ll_std']:.2f}"
        rows.append(
            [t["variant"], ll, f"{t['is_mean']:.2f} ± {t['is_std']:.2f}", f"{t['classes_mean']:.1f}"]
            + [f"{t['entropy_mean']:.3f}", f"{t['diversity_mean']:.2f}", f"{t['nn_mean']:.3f}", f"{t['dup_mean']:.3f}"]
        )
    ref = summary["test_images"]
    rows.append(
        ["MNIST test images", "", "", "", ""]
        + [f"{ref['pixel_diversity']:.2f}", f"{ref['nn_distance']:.3f}", f"{ref['near_duplicates']:.3f}"]
    )
    p = summary["paper"]
    n_par = summary["parameters"]
    header = ["variant", "test LL (nats)", "inception score", "classes seen", "label entropy (nats)"]
    header += ["pixel diversity", "NN distance", "near-duplicates"]
    return [
        text(
            f"Dataset: {summary['dataset']}; {summary['epochs']} epochs; {summary['seeds']} seed(s); inception score "
            f"over {summary['is_samples']} generated images (10 splits) under the shipped MNIST classifier."
        ),
        table(header, rows),
        text(
            "± is the standard deviation over seeds; a seed's inception score is the mean over 10 splits of its "
            "images. Diversity on 2,000 images: pixel diversity is the mean pairwise pixel distance; NN "
            "distance the mean distance to the nearest other image after centring and scaling each image to unit "
            "length; near-duplicates the fraction whose nearest other image is within 0.2 there."
        ),
        text(
            f"Parameters: RBM {n_par['rbm']:,}; generator {n_par['generator']:,}; DCGAN discriminator "
            f"{n_par['dcgan_discriminator']:,}. Trained on {summary.get('device', 'cpu')}; SteinCD steps of the mix "
            f"through the {summary.get('steincd_optimizer', 'shared')} Adam state."
        ),
        text(
            f"The authors' SteinGAN RBM: {p['authors_ll_with_kernel']} nats with the kernel, "
            f"{p['authors_ll_without_kernel']} without (AIS, their README)."
        ),
        claims_table(summary["claims"]),
    ]


def sample_grid(run_dir: str | Path, path: str | Path, n: int = 100, seed: int = 0) -> Path:
    """A 10 x 10 grid of generator samples (Figure 1(c), 1(d))."""
    return _sample_grid(run_dir, path, n, seed)[0]


def _sample_grid(
    run_dir: str | Path, path: str | Path, n: int = 100, seed: int = 0, generator: torch.nn.Module | None = None
) -> tuple[Path, torch.Tensor]:
    """:func:`sample_grid`, and its images (n, 784); ``generator``, else the run's."""
    from steinebm.engine.build import load_generator
    from steinebm.grids import save_image_grid

    G: Any = generator if generator is not None else load_generator(run_dir)
    with torch.no_grad():
        x = G(G.sample_noise(n, torch.Generator().manual_seed(seed)))
    return save_image_grid(x, path, MNIST_SHAPE, nrow=10), x.reshape(n, -1)


def grid_cells(scores: dict[str, float]) -> list[str]:
    """The 100-image protocol's cells: inception score (classes) under each MNIST classifier."""
    from steinebm.evaluation.sample_scores import MNIST_CLASSIFIERS

    return [f"{scores[f'grid_{c}_is']:.2f} ({scores[f'grid_{c}_classes']:.0f})" for c in MNIST_CLASSIFIERS]


def fig1cd(
    which: str,
    out: str | Path | None = None,
    fig1b_dir: str | Path = "runs/fig1b",
    dataset: str = "mnist",
    data_dir: str | None = None,
    epochs: int = 20,
    is_samples: int = 50_000,
    n_train: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    authors_grid: str | Path | None = None,
) -> dict[str, Any]:
    """Figure 1(c) (SteinGAN samples, with the kernel) or 1(d) (without), seed 0, sharing its
    runs with fig1b. Figure 1(c) also trains a generator by amortized SVGD on the energy that
    SteinCD trained (alpha = 1), theta frozen: the paper's check that SteinCD's model itself
    does not generate well.

    Each panel's 10 x 10 grid is also scored as one split under both MNIST classifiers (the
    100-image protocol of :func:`~steinebm.evaluation.sample_scores.grid_scores`); ``authors_grid``, a
    published 280 x 280 grid of 100 digits (e.g. the authors' ``steingan-rbm-mnist.png``), adds
    a row scored the same way."""
    from steinebm.evaluation.sample_scores import grid_scores, read_grid

    if which not in ("fig1c", "fig1d"):
        raise UserError(f"unknown figure {which!r}")
    _mnist_only(dataset, which)
    out = Path(out or f"runs/{which}")
    load_dataset(dataset, data_dir)  # before anything is created
    theirs = grid_scores(read_grid(authors_grid)) if authors_grid is not None else None
    out.mkdir(parents=True, exist_ok=True)
    base = _steingan_rbm(
        dataset=dataset, data_dir=data_dir, epochs=epochs, n_train=n_train, eval_every=0, device=device
    )
    runs = Path(fig1b_dir) / "runs"
    panels: list[tuple[str, Config]] = []
    if which == "fig1c":
        panels.append(("SteinGAN", dataclasses.replace(base, alpha=0.0, out_dir=str(runs / "alpha=0" / "seed0"))))
        steincd = dataclasses.replace(base, alpha=1.0, out_dir=str(runs / "alpha=1" / "seed0"))
        run_many([steincd], 1, log)
        panels.append(
            (
                "generator on SteinCD's energy",
                dataclasses.replace(
                    base,
                    method="amortized-svgd",
                    energy_from=steincd.out_dir,
                    out_dir=str(out / "steincd-energy-generator"),
                ),
            )
        )
    else:
        panels.append(
            (
                "SteinGAN without kernel",
                dataclasses.replace(base, gen_kernel="constant", out_dir=str(runs / "no-kernel" / "seed0")),
            )
        )
    result = {}
    for name, cfg in panels:
        cfg.validate()
        res = run_many([cfg], 1, log)[0]
        G = load_generator(cfg.out_dir)  # read once, for the grid and the scores
        grid, x_grid = _sample_grid(cfg.out_dir, out / f"{which}-{slug(name)}.png", generator=G)
        sc = cached_generator_scores(cfg.out_dir, is_samples, device=device, generator=G)
        gs = grid_scores(x_grid.cpu())
        ll = res["evals"][-1].get("test_ll", float("nan")) if res["evals"] else float("nan")
        result[name] = {"grid": str(grid), "test_ll": ll, **sc, **gs}
    if theirs is not None:
        result["authors' grid"] = {"grid": str(authors_grid), **theirs}
    write_page(out, result, page(f"{which}.md", fig1cd_document(which, epochs, is_samples, result)))
    return result


def fig1cd_document(which: str, epochs: int, is_samples: int, result: dict[str, Any]) -> list[Block]:
    """Figure 1(c)'s or 1(d)'s page: a row per panel of ``result`` (as :func:`fig1cd` returns it),
    its picture beside its scores; the authors' grid, if scored, last."""
    from steinebm.evaluation.sample_scores import MNIST_CLASSIFIERS

    rows: list[list[Any]] = []
    for name, r in result.items():
        if name == "authors' grid":
            rows.append(["the authors' grid", Path(r["grid"]).name, *[""] * 7, *grid_cells(r)])
            continue
        rows.append(
            [name, image_cell(Path(r["grid"]).name), f"{r['test_ll']:.2f}", f"{r['is_mean']:.2f} ± {r['is_std']:.2f}"]
            + [str(r["classes_present"]), f"{r['entropy']:.3f}", f"{r['pixel_diversity']:.2f}"]
            + [f"{r['nn_distance']:.3f}", f"{r['near_duplicates']:.3f}", *grid_cells(r)]
        )
    header = ["panel", "picture", "test LL (nats)", "inception score", "classes seen", "label entropy"]
    header += ["pixel diversity", "NN distance", "near-duplicates", *(f"grid: {c}" for c in MNIST_CLASSIFIERS)]
    return [
        text(
            f"{which}: {epochs} epochs, seed 0; inception score over {is_samples} images (the shipped classifier), "
            "and the picture's 100 images as one split under each MNIST classifier "
            f"({', '.join(MNIST_CLASSIFIERS)}): inception score (classes seen)."
        ),
        table(header, rows),
    ]
