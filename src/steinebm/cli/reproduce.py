"""The commands on reproductions: reproduce (a figure of the paper) and report (an HTML page)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from steinebm.cli.common import positive
from steinebm.errors import UserError

__all__ = ["reproduce", "report"]


def reproduce(a: argparse.Namespace) -> int:
    from steinebm.reproduction.reproduce import FIG1B_ALPHAS, fig1b, fig1cd
    from steinebm.reproduction.reproduce_fig1a import fig1a
    from steinebm.reproduction.reproduce_fig1c import fig1c_length

    positive("seeds", a.seeds)
    epochs_given = a.epochs
    a.epochs = 20 if a.epochs is None else a.epochs
    positive("epochs", a.epochs)
    positive("jobs", a.jobs)
    positive("is-samples", a.is_samples)
    out = a.out or f"runs/{a.figure}"
    if a.authors_grid is not None and a.figure not in (
        "fig1c",
        "fig1d",
        "fig1c-length",
        "fig1c-ablation",
        "mnist-joint",
    ):
        raise UserError(f"--authors-grid is scored beside fig1c or fig1d's panels, not {a.figure}'s: drop it")
    if a.no_train and a.figure not in ("fig1c-ablation", "fig1c-length", "mnist-joint"):
        raise UserError(
            f"--no-train reads fig1c-ablation's, fig1c-length's or mnist-joint's runs, not {a.figure}'s: drop it"
        )
    if a.figure == "fig2" and a.dataset is not None:
        raise UserError("reproduce fig2 trains on CIFAR-10 only: drop --dataset (point --data-dir at CIFAR-10)")
    dataset = a.dataset or "mnist"
    # what every MNIST figure takes; the long ones (fig1c-length, mnist-joint) default to 100 epochs
    data: dict[str, Any] = dict(dataset=dataset, data_dir=a.data_dir, n_train=a.n_train)
    common: dict[str, Any] = dict(data, epochs=a.epochs)
    if a.figure == "fig2":
        from steinebm.reproduction.reproduce_images import fig2

        fig2(
            out=out,
            data_dir=a.data_dir,
            scale=a.scale,
            jobs=a.jobs,
            device=a.device,
            epochs=epochs_given,
            fid=not a.no_fid,
            fid_weights=a.fid_weights,
        )
    elif a.figure == "mnist-joint":
        from steinebm.reproduction.reproduce_joint import mnist_joint

        for flag in ("fid_samples", "transfer_images", "transfer_epochs"):
            positive(flag.replace("_", "-"), getattr(a, flag))
        mnist_joint(
            out=out,
            epochs=epochs_given or 100,
            jobs=a.jobs,
            device=a.device,
            is_samples=a.is_samples,
            fid_samples=a.fid_samples,
            transfer_images=a.transfer_images,
            transfer_epochs=a.transfer_epochs,
            authors_grid=a.authors_grid,
            train=not a.no_train,
            **data,
        )
    elif a.figure == "hais":
        from steinebm.reproduction.reproduce_hais import hais_table

        try:
            steps = tuple(int(v) for v in a.hais_steps.split(","))
        except ValueError:
            raise UserError(f"--hais-steps must be integers separated by commas, got {a.hais_steps!r}") from None
        hais_table(
            [r for r in (a.runs or "").split(",") if r],
            out=out,
            steps=steps,
            groups=a.hais_groups,
            chains=a.hais_chains,
            seed=a.hais_seed,
            data_dir=a.data_dir,
        )
    elif a.figure == "fig1c-ablation":
        from steinebm.reproduction.reproduce_fig1c import fig1c_ablation

        fig1c_ablation(
            out=out,
            seeds=a.seeds,
            is_samples=a.is_samples,
            jobs=a.jobs,
            device=a.device,
            authors_grid=a.authors_grid,
            train=not a.no_train,
            **common,
        )
    elif a.figure == "fig1c-length":
        if a.eval_samples < 100:
            raise UserError(f"--eval-samples must be at least 100 (the grid's images), got {a.eval_samples}")
        fig1c_length(
            out=out,
            epochs=epochs_given or 100,
            eval_samples=a.eval_samples,
            jobs=a.jobs,
            device=a.device,
            authors_grid=a.authors_grid,
            train=not a.no_train,
            **data,
        )
    elif a.figure == "fig1a":
        methods = [m.strip() for m in a.methods.split(",")] if a.methods else None
        fig1a(out=out, seeds=a.seeds, sweep=not a.no_sweep, jobs=a.jobs, methods=methods, **common)
    elif a.figure == "fig1b":
        alphas: tuple[float, ...] = FIG1B_ALPHAS
        if a.alphas:
            try:
                alphas = tuple(float(v) for v in a.alphas.split(","))
            except ValueError:
                raise UserError(f"--alphas must be numbers separated by commas, got {a.alphas!r}") from None
            if not all(0.0 <= v <= 1.0 for v in alphas):
                raise UserError(f"--alphas must lie in [0, 1], got {a.alphas!r}")
        fig1b(
            out=out,
            seeds=a.seeds,
            jobs=a.jobs,
            is_samples=a.is_samples,
            alphas=alphas,
            device=a.device,
            dcgan=not a.no_dcgan,
            steincd_optimizer=a.steincd_optimizer,
            **common,
        )
    else:
        fig1cd(
            a.figure,
            out=out,
            fig1b_dir=a.fig1b_dir,
            is_samples=a.is_samples,
            device=a.device,
            authors_grid=a.authors_grid,
            **common,
        )
    print((Path(out) / f"{a.figure}.md").read_text())
    print(f"figures in {out}")
    return 0


def report(a: argparse.Namespace) -> int:
    from steinebm.reproduction.report import write_report

    print(write_report(a.run_dirs, a.out, samples=a.samples, gibbs_steps=a.gibbs_steps, seed=a.seed))
    return 0
