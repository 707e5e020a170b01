"""The commands on one run: train, resume, evaluate, sample; and the demo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from steinebm.cli.common import is_file, positive
from steinebm.errors import UserError

__all__ = ["train", "resume", "evaluate", "sample", "demo"]


def train(a: argparse.Namespace) -> int:
    from steinebm.engine.config_file import load_config
    from steinebm.engine.train import train

    overrides = list(a.overrides)
    config = a.config
    if config is not None and "=" in config and not is_file(config):
        overrides.insert(0, config)  # `steinebm train key=value ...` with no file
        config = None
    if a.data_dir:
        overrides.append(f"data_dir={a.data_dir}")
    if a.resume and config is not None and not any(o.split("=", 1)[0].strip() == "out_dir" for o in overrides):
        # `train RUN/config.yaml --resume` acts on RUN, where the run now is, not on the out_dir
        # its config was saved with (a copied or moved run would resume the original)
        from steinebm.engine.checkpoint import CHECKPOINT, PREVIOUS

        folder = Path(config).parent
        if (folder / CHECKPOINT).exists() or (folder / PREVIOUS).exists():
            overrides.append(f"out_dir={folder}")
    cfg = load_config(config, overrides)
    rec = _train_naming_run(train, cfg, a.resume)
    print(json.dumps({"out_dir": cfg.out_dir, **rec}))
    return 0


def resume(a: argparse.Namespace) -> int:
    from steinebm.engine.config_file import load_config
    from steinebm.engine.preflight import RESUMABLE_CHANGES
    from steinebm.engine.train import train

    run = Path(a.run_dir)
    if not run.is_dir():
        raise UserError(f"{run} is not a folder: name a run folder (it holds checkpoint.pt and config.yaml)")
    saved = run / "config.yaml"
    if not saved.exists():
        raise UserError(f"{run} holds no config.yaml, so it is not a steinebm run folder: name the run's own folder")
    overrides = list(a.overrides)
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if "=" in item and key not in RESUMABLE_CHANGES:
            raise UserError(
                f"{key} cannot change when a run is resumed (it would train another run): start a new out_dir; "
                f"resumable: {', '.join(sorted(RESUMABLE_CHANGES - {'out_dir'}))}"
            )
    if a.data_dir:
        overrides.append(f"data_dir={a.data_dir}")
    cfg = load_config(saved, [*overrides, f"out_dir={run}"])
    rec = _train_naming_run(train, cfg, True)
    print(json.dumps({"out_dir": cfg.out_dir, **rec}))
    return 0


# the attribute a stopped run's KeyboardInterrupt carries its folder in, for the stop's message
_STOPPED_RUN = "steinebm_run_dir"


def _train_naming_run(train: Any, cfg: Any, resume: bool) -> dict[str, Any]:
    try:
        rec: dict[str, Any] = train(cfg, resume=resume)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as the command line raises it
        setattr(e, _STOPPED_RUN, cfg.out_dir)
        raise
    return rec


def evaluate(a: argparse.Namespace) -> int:
    import torch

    from steinebm.engine.build import load
    from steinebm.engine.checkpoint import load_checkpoint
    from steinebm.engine.config_file import from_dict
    from steinebm.engine.provenance import load_run_data
    from steinebm.evaluation.likelihood import log_likelihood

    ck = load_checkpoint(a.run_dir)
    cfg = from_dict(ck["config"]).validate()
    model: Any = load(a.run_dir, ck)
    if not hasattr(model, "log_partition"):
        raise UserError(
            f"{a.run_dir} (method={cfg.method}, model={cfg.model}) has no exact likelihood; evaluate an RBM run"
        )
    data, seen = load_run_data(cfg, a.run_dir, a.dataset, a.data_dir, dim=int(ck["dim"]))
    x = getattr(data, a.split).x
    positive("ais-chains", a.ais_chains)
    positive("ais-steps", a.ais_steps)
    positive("hais-groups", a.hais_groups)
    if a.method == "hais" and a.ais_steps < 2:
        raise UserError("--ais-steps must be >= 2 with --method hais (the temperatures include 0 and 1)")
    rng = torch.Generator().manual_seed(a.seed)
    est = log_likelihood(model, x, a.method, a.ais_chains, a.ais_steps, generator=rng, hais_groups=a.hais_groups)
    print(
        json.dumps(
            {
                "run_dir": str(a.run_dir),
                "step": ck["step"],
                "split": a.split,
                "n": int(x.shape[0]),
                "log_likelihood_nats": est.value,
                "stderr": est.stderr,
                "method": est.method,
                "log_partition": est.log_partition,
                **seen,
            }
        )
    )
    return 0


def sample(a: argparse.Namespace) -> int:
    import torch

    from steinebm.engine.build import load, load_generator
    from steinebm.engine.checkpoint import load_checkpoint
    from steinebm.grids import save_image_grid, save_walk
    from steinebm.models.common import draw_samples, latent_walk
    from steinebm.shapes import MNIST_SHAPE

    positive("n", a.n)
    if a.walk < 0:
        raise UserError(f"--walk must be a number of steps >= 0, got {a.walk}")
    if not (a.walk_step > 0 and a.walk_step < float("inf")):
        raise UserError(f"--walk-step must be a finite number > 0, got {a.walk_step}")
    positive("steps", a.steps)
    ck = load_checkpoint(a.run_dir)
    rng = torch.Generator().manual_seed(a.seed)
    source = a.source if a.source != "auto" else ("generator" if "generator" in ck else "energy")
    nrow = None
    if a.walk and source != "generator":
        raise UserError("--walk moves through a generator's noise space: use it with a generator run")
    if source == "generator":
        G = load_generator(a.run_dir, ck)
        if a.walk:
            frames = latent_walk(G, a.walk, a.walk_step, n_chains=a.n, generator=rng)
            out = Path(a.out) if a.out else Path(a.run_dir) / "walk.png"
            try:
                png, gif = save_walk(frames, out, ck.get("image_shape", MNIST_SHAPE))
            except (OSError, ValueError) as e:
                raise UserError(f"cannot write {out} ({e}): choose a writable .png path") from None
            print(png)
            print(gif)
            return 0
        x, nrow = draw_samples(G, a.n, rng)  # conditional: a row per class
    else:
        model: Any = load(a.run_dir, ck)
        if not hasattr(model, "sample"):
            raise UserError(f"the model of {a.run_dir} has no sampler; use --source generator")
        x = model.sample(a.n, n_steps=a.steps, generator=rng)
    out = Path(a.out) if a.out else Path(a.run_dir) / "samples.png"
    try:
        save_image_grid(x, out, ck.get("image_shape", MNIST_SHAPE), nrow=nrow)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot write {out} ({e}): choose a writable .png path") from None
    print(out)
    return 0


def demo(a: argparse.Namespace) -> int:
    from steinebm.reproduction.reproduce_fig1a import demo

    if a.epochs is not None:
        positive("epochs", a.epochs)
    demo(out=a.out, **({"epochs": a.epochs} if a.epochs is not None else {}))
    print((Path(a.out) / "fig1a.md").read_text())
    print(f"figure: {Path(a.out) / 'fig1a.png'}")
    return 0
