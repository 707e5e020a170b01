"""steinebm against the libraries a user would otherwise pick, every ratio measured in one run.

    .venv/bin/python benchmarks/bench_peers.py [--quick] [--data-dir DIR]

The peers come from the optional ``bench`` extra (``pip install -e .[bench]``; ``make bench``
installs them itself); without them this exits with code 2. Prints the machine, one table (each
row: what is measured, the value, its goal, met / not met) and notes on what differs between the
two sides of each comparison, so a ratio is never read without its caveats.

1. One SVGD step (score, phi, Adam update of the particles) of steinebm against Pyro's
   ``pyro.infer.SVGD`` on the same particles, the same target (the Gaussian-Bernoulli RBM
   ``GaussianBernoulliRBM(d, 10)``; Pyro sees its log density through ``pyro.factor``) and the
   same optimizer (Adam, same lr), at m = 100, d = 784 and m = 1000, d = 50.
   Goal: Pyro's step / ours >= 50 at m = 100, d = 784. Pyro builds (m, m, d) tensors and
   goes through its trace / ELBO machinery on every step, hence the expectation.
2. One CD-1 epoch on the 60,000 MNIST training images (batch 100, 10 hidden units, Adam
   lr 3e-4, betas (0.5, 0.999)) of steinebm's training step against learnergy's
   ``GaussianRBM.fit`` for one epoch at the same settings. Goal: theirs / ours >= 2. A second
   row times learnergy's bare CD-1 steps (no DataLoader, batch standardization or per-batch
   metrics), for a like-for-like view of the arithmetic.

Runs of the things compared alternate (the order rotated each round) and each time is the
median over rounds, so slow spells of a shared machine fall on both sides alike.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import cpu_jiffies, fmt_time, interleaved, load_average, machine_lines, print_cpu_use, table  # noqa: E402

import steinebm.data  # noqa: E402
from steinebm import RBF, GaussianBernoulliRBM, svgd_direction  # noqa: E402
from steinebm.core.score import score as energy_score  # noqa: E402
from steinebm.engine.build import build_parts  # noqa: E402
from steinebm.engine.config import Config  # noqa: E402
from steinebm.errors import DataError  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PEERS = {"pyro": "pyro-ppl", "learnergy": "learnergy"}
INSTALL_HINT = "pip install -e .[bench]"

N_HIDDEN = 10
SVGD_LR = 1e-2  # Adam on the particles, torch's default betas on both sides
SVGD_SHAPES = ((100, 784), (1000, 50))
SVGD_GOAL_SHAPE, SVGD_GOAL = (100, 784), 50.0
OUR_BLOCK = 10  # our SVGD steps per timed slot
BATCH = 100
CD_LR, CD_BETAS = 3e-4, (0.5, 0.999)  # configs/fig1a-cd1.yaml
CD_GOAL = 2.0


def missing_peers() -> list[str]:
    """Distribution names of the peers that cannot be imported."""
    missing = []
    for module, dist_name in PEERS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist_name)
    return missing


def peer_versions() -> str:
    out = []
    for dist_name in PEERS.values():
        try:
            out.append(f"{dist_name} {importlib.metadata.version(dist_name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist_name} (no metadata)")
    return ", ".join(out)


# ----------------------------------------------------------------------------------------------
# 1. SVGD against Pyro


def rbm_tilt(x: Tensor, B: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """What the Pyro model adds to its standard-normal prior: ``b^T x + sum_k log(e^z_k + e^-z_k)``,
    ``z = B^T x + c``, per row.

    The RBM's negative energy is ``f(x) = -||x||^2 / 2 + b^T x + sum_k log(e^z_k + e^-z_k)``, so
    ``log N(x; 0, I) + rbm_tilt(x) = f(x) - (d/2) log 2 pi``: Pyro's target is ours up to a
    constant, and its autograd score is our closed-form score. Written out independently of
    ``GaussianBernoulliRBM.forward`` (``logaddexp`` instead of ``|z| + log1p(e^-2|z|)``) so the tests
    can hold one against the other.
    """
    z = x @ B + c
    return x @ b + torch.logaddexp(z, -z).sum(-1)


def pyro_rbm_model(rbm: GaussianBernoulliRBM) -> Callable[[], None]:
    """A Pyro model whose log joint is the RBM's log density up to a constant (see ``rbm_tilt``).

    The standard-normal prior carries the ``-||x||^2 / 2`` term, which also lets Pyro's guide
    initialise from a sample (an improper flat prior cannot be sampled)."""
    import pyro
    import pyro.distributions as dist

    d = rbm.n_visible

    def model() -> None:
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([d]).to_event(1))
        pyro.factor("rbm", rbm_tilt(x, rbm.B, rbm.b, rbm.c))

    return model


def pyro_svgd(
    rbm: GaussianBernoulliRBM,
    x0: Tensor,
    optim: Any,
    mode: str = "multivariate",
    bandwidth: float | None = None,
) -> tuple[Any, Callable[[], Tensor]]:
    """Pyro's SVGD started from particles x0 (m, d), and a function returning its particles.

    ``mode="multivariate"`` is the kernel of the SVGD paper, a function of the whole vector
    (Pyro's default, ``"univariate"``, is a per-coordinate kernel: another algorithm). With
    ``bandwidth`` every coordinate's bandwidth is that number, which makes Pyro's kernel exactly
    ``RBF(bandwidth)``. Pyro keeps its particles in the global parameter store, so this clears it.
    """
    import pyro
    from pyro.infer import SVGD, RBFSteinKernel

    kernel = RBFSteinKernel()
    if bandwidth is not None:
        h = float(bandwidth)

        class FixedBandwidth(RBFSteinKernel):  # type: ignore[misc]
            def _bandwidth(self, norm_sq: Tensor) -> Tensor:
                return norm_sq.new_full(norm_sq.shape[-1:], h)

        kernel = FixedBandwidth()
    m = x0.shape[0]
    pyro.clear_param_store()
    # set before the first step: the guide's pyro.param then keeps this value, not a prior sample
    pyro.param("svgd_particles", x0.detach().reshape(-1).clone())
    svgd = SVGD(pyro_rbm_model(rbm), kernel, optim, num_particles=m, max_plate_nesting=0, mode=mode)
    return svgd, lambda: pyro.param("svgd_particles").detach().reshape(m, -1)


def pyro_optimizer(name: str, lr: float) -> Any:
    """``pyro.optim``'s wrapper of the torch optimizer ``name`` (Pyro generates these at import)."""
    return getattr(importlib.import_module("pyro.optim"), name)({"lr": lr})


def pyro_bandwidths(x: Tensor) -> Tensor:
    """Pyro's ``RBFSteinKernel`` bandwidths for particles x (m, d): one per coordinate,
    ``h_k = median_{i<j} (x_ik - x_jk)^2 / log(m + 1)`` (torch's median: the lower middle value)."""
    from pyro.infer import RBFSteinKernel

    delta = x.unsqueeze(0) - x.unsqueeze(1)
    h: Tensor = RBFSteinKernel()._bandwidth(delta.pow(2))
    return h


def one_step_gap(rbm: GaussianBernoulliRBM, x0: Tensor, bandwidth: float, lr: float = 0.1) -> tuple[float, float]:
    """(max |our update - Pyro's update|, max |our update|) after one plain-SGD SVGD step from x0
    with the same fixed bandwidth: the two sides compute the same thing, so the gap is rounding."""
    svgd, particles = pyro_svgd(rbm, x0, pyro_optimizer("SGD", lr), bandwidth=bandwidth)
    svgd.step()
    theirs = particles() - x0
    ours = lr * svgd_direction(x0, energy_score(rbm, x0), RBF(bandwidth=bandwidth))
    return float((ours - theirs).abs().max()), float(ours.abs().max())


def our_svgd_step(rbm: GaussianBernoulliRBM, x0: Tensor, lr: float) -> Callable[[], None]:
    """One step of ours: closed-form score, phi with the paper's median-rule RBF, Adam on x (fused,
    the Adam the training loop uses; same maths as Pyro's)."""
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr, fused=True)
    kernel = RBF()

    def step() -> None:
        with torch.no_grad():
            phi = svgd_direction(x, energy_score(rbm, x), kernel)
        x.grad = phi.neg_()  # Adam descends: the gradient is -phi
        opt.step()

    return step


def svgd_rbm(d: int) -> GaussianBernoulliRBM:
    """The target: an RBM with random weights and biases (zero biases would make it symmetric)."""
    g = torch.Generator().manual_seed(0)
    rbm = GaussianBernoulliRBM(d, N_HIDDEN, generator=g)
    with torch.no_grad():
        rbm.b.copy_(0.5 * torch.randn(d, generator=g))
        rbm.c.copy_(0.5 * torch.randn(N_HIDDEN, generator=g))
    # the parameters stay fixed: Pyro's backward would otherwise also fill their .grad every step
    return rbm.requires_grad_(False)


def bench_svgd(m: int, d: int, rounds: int, with_univariate: bool) -> dict[str, Any]:
    """Median step seconds of each side at m particles of dimension d, with the two sides'
    bandwidths and mean kernel values on the starting particles and the fixed-bandwidth check."""
    rbm = svgd_rbm(d)
    x0 = torch.randn(m, d, generator=torch.Generator().manual_seed(1))
    out: dict[str, Any] = {}
    # the kernels compared: ours on the starting particles, Pyro's per-coordinate rule on the same
    kernel = RBF()
    svgd_direction(x0, energy_score(rbm, x0), kernel)
    out["h_ours"] = kernel.last_h
    h_pyro = pyro_bandwidths(x0)
    out["h_pyro"] = (float(h_pyro.min()), float(h_pyro.median()), float(h_pyro.max()))
    d2 = torch.cdist(x0, x0).pow(2)
    off = ~torch.eye(m, dtype=torch.bool)
    out["k_ours"] = float(torch.exp(-d2 / out["h_ours"])[off].mean())
    delta2 = (x0.unsqueeze(0) - x0.unsqueeze(1)).pow(2)
    out["k_pyro"] = float(torch.exp(-(delta2 / h_pyro).sum(-1))[off].mean())
    del delta2
    out["gap"] = one_step_gap(rbm, x0, float(out["h_ours"]))

    # ours runs OUR_BLOCK consecutive steps per slot, as an SVGD loop does: one step alone, right
    # after a Pyro step, would be timed in the cold cache that Pyro's (m, m, d) tensors leave behind
    ours = our_svgd_step(rbm, x0, SVGD_LR)
    fns: dict[str, Callable[[], object]] = {"ours": lambda: [ours() for _ in range(OUR_BLOCK)]}
    svgd, _ = pyro_svgd(rbm, x0, pyro_optimizer("Adam", SVGD_LR), mode="multivariate")
    fns["pyro"] = svgd.step
    if with_univariate:
        # a second SVGD object on the same parameter store: both step the same particles, which
        # changes nothing in what a step costs
        uni = pyro_svgd_same_store(rbm, m, pyro_optimizer("Adam", SVGD_LR))
        fns["pyro univariate"] = uni.step
    out["t"] = interleaved(fns, rounds=rounds, inner=1, warmup=2)
    out["t"]["ours"] /= OUR_BLOCK
    return out


def pyro_svgd_same_store(rbm: GaussianBernoulliRBM, m: int, optim: Any) -> Any:
    """Pyro's SVGD in its default (univariate) mode on the particles already in the store."""
    from pyro.infer import SVGD, RBFSteinKernel

    return SVGD(pyro_rbm_model(rbm), RBFSteinKernel(), optim, num_particles=m, max_plate_nesting=0)


# ----------------------------------------------------------------------------------------------
# 2. CD-1 epochs against learnergy


def load_images(data_dir: str | None, limit: int | None) -> tuple[Tensor, str]:
    """MNIST training and validation images together (60,000 x 784 in [0, 1]) and a line saying
    where they came from; the embedded subset when the full files are not there."""
    folder = data_dir or os.environ.get("STEINEBM_DATA") or str(REPO_ROOT.parent / "shared" / "data" / "mnist")
    try:
        ds = steinebm.data.load_dataset("mnist", folder, download=False)
        note = f"MNIST from {ds.source}"
    except DataError as e:
        ds = steinebm.data.load_dataset("mnist-embedded")
        note = f"NOTE: full MNIST not used ({' '.join(str(e).split())}); the embedded subset"
    x = torch.cat([ds.train.x.reshape(ds.train.x.shape[0], -1), ds.val.x.reshape(ds.val.x.shape[0], -1)])
    if limit is not None:
        x = x[:limit]
    return x.contiguous(), f"{note} ({x.shape[0]} images: train + validation)"


def learnergy_rbm(seed: int) -> Any:
    """learnergy's Gaussian-visible, Bernoulli-hidden RBM with 10 hidden units, CD-1, and our
    optimizer: its SGD (it exposes ``optimizer``) replaced by Adam with our lr and betas."""
    from learnergy.models.gaussian import GaussianRBM

    torch.manual_seed(seed)
    model = GaussianRBM(n_visible=784, n_hidden=N_HIDDEN, steps=1, learning_rate=CD_LR)
    model.optimizer = torch.optim.Adam(model.parameters(), lr=CD_LR, betas=CD_BETAS)
    return model


def learnergy_bare_step(model: Any, samples: Tensor) -> None:
    """The arithmetic of one of ``GaussianRBM.fit``'s batches, nothing else: Gibbs sweep, the
    free-energy difference, backward, optimizer step."""
    _, _, _, _, visible = model.gibbs_sampling(samples)
    cost = model.energy(samples).mean() - model.energy(visible.detach()).mean()
    model.optimizer.zero_grad()
    cost.backward()
    model.optimizer.step()


def cd_epochs(x: Tensor, idx: Tensor) -> dict[str, Callable[[], Callable[[], None]]]:
    """For each side, a factory: fresh model and optimizer -> one epoch over the batches idx."""
    from torch.utils.data import TensorDataset

    dataset = TensorDataset(x, torch.zeros(x.shape[0]))
    dim = x.shape[1]

    def ours() -> Callable[[], None]:
        cfg = Config(
            method="cd", cd_k=1, n_hidden=N_HIDDEN, batch_size=BATCH, lr=CD_LR, beta1=CD_BETAS[0], progress=False
        )
        parts = build_parts(cfg, dim, torch.device("cpu"))
        rng = torch.Generator().manual_seed(1)

        def run() -> None:
            for b in range(idx.shape[0]):
                parts.step(x[idx[b]], rng)  # the training loop's step: loss, backward, Adam

        return run

    def fit() -> Callable[[], None]:
        model = learnergy_rbm(0)
        return lambda: model.fit(dataset, batch_size=BATCH, epochs=1)

    def bare() -> Callable[[], None]:
        model = learnergy_rbm(0)

        def run() -> None:
            for b in range(idx.shape[0]):
                learnergy_bare_step(model, x[idx[b]])

        return run

    return {"ours": ours, "learnergy fit": fit, "learnergy bare": bare}


def bench_cd(x: Tensor, rounds: int) -> dict[str, float]:
    """Median epoch seconds of each side, interleaved, each epoch from a fresh model."""
    n = x.shape[0] - x.shape[0] % BATCH  # whole batches only, the same on both sides
    x = x[:n]
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0)).view(-1, BATCH)
    factories = cd_epochs(x, idx)
    warm = min(20, idx.shape[0])
    for make in cd_epochs(x[: warm * BATCH], idx[:warm] % (warm * BATCH)).values():  # first-call costs
        make()()
    names = list(factories)
    samples: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            run = factories[name]()
            t0 = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


# ----------------------------------------------------------------------------------------------


def status(ok: bool) -> str:
    return "met" if ok else "not met"


def parse_shapes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        m, d = part.lower().split("x")
        out.append((int(m), int(d)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run; ratios are noisier)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the MNIST files (default: STEINEBM_DATA, then "
        "../shared/data/mnist next to the repository, else the embedded subset)",
    )
    p.add_argument("--svgd-shapes", default=None, help="particles m x dimension d, e.g. 100x784,1000x50 (the default)")
    p.add_argument("--images", type=int, default=None, help="use only the first N images (default: all 60,000)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per comparison")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads for both sides (default: torch's own, all cores)"
    )
    args = p.parse_args(argv)
    missing = missing_peers()
    if missing:
        print(f"bench_peers: {', '.join(missing)} not installed; run `{INSTALL_HINT}` (or `make bench`)")
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    busy0, total0 = cpu_jiffies()
    own0 = sum(os.times()[:2])
    wall0 = time.perf_counter()
    shapes = parse_shapes(args.svgd_shapes) if args.svgd_shapes else list(SVGD_SHAPES)
    svgd_rounds = args.rounds or (3 if args.quick else 11)
    cd_rounds = args.rounds or (2 if args.quick else 5)

    print("steinebm against its peers" + (" (--quick)" if args.quick else ""))
    print("command: " + " ".join([os.path.relpath(sys.executable), *sys.argv]))
    for line in machine_lines():
        print(line)
    print(f"peers        : {peer_versions()}")
    x, data_line = load_images(args.data_dir, args.images)
    print(f"data         : {data_line}")
    print()

    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    for m, d in shapes:
        sv = bench_svgd(m, d, svgd_rounds, with_univariate=(m, d) == shapes[0])
        t = sv["t"]
        tag = f"m={m} d={d}"
        rows.append((f"SVGD step {tag}, steinebm", fmt_time(t["ours"]), "-", "context"))
        rows.append((f"SVGD step {tag}, Pyro (multivariate RBF)", fmt_time(t["pyro"]), "-", "context"))
        if "pyro univariate" in t:
            rows.append(
                (f"SVGD step {tag}, Pyro (default: univariate)", fmt_time(t["pyro univariate"]), "-", "context")
            )
        ratio = t["pyro"] / t["ours"]
        goal = (m, d) == SVGD_GOAL_SHAPE
        rows.append(
            (
                f"  Pyro step / steinebm step, {tag}",
                f"{ratio:.1f}",
                f">= {SVGD_GOAL:g}" if goal else "-",
                status(ratio >= SVGD_GOAL) if goal else "context",
            )
        )
        lo, med, hi = sv["h_pyro"]
        gap, scale = sv["gap"]
        notes.append(
            f"{tag}: bandwidth ours h = {sv['h_ours']:.4g}; Pyro's per-coordinate h_k in [{lo:.3g}, {hi:.3g}] "
            f"(median {med:.3g}); mean off-diagonal kernel value ours {sv['k_ours']:.3g}, Pyro {sv['k_pyro']:.3g}. "
            f"Check at fixed h = ours (Pyro's kernel then equals RBF(h)): one SGD step, max |update gap| "
            f"{gap:.2g} of max |update| {scale:.2g}"
        )

    ep = bench_cd(x, cd_rounds)
    n_img = x.shape[0] - x.shape[0] % BATCH
    rows.append((f"CD-1 epoch ({n_img} images, batch {BATCH}), steinebm", fmt_time(ep["ours"]), "-", "context"))
    rows.append(("CD-1 epoch, learnergy GaussianRBM.fit", fmt_time(ep["learnergy fit"]), "-", "context"))
    rows.append(("CD-1 epoch, learnergy bare steps", fmt_time(ep["learnergy bare"]), "-", "context"))
    r_fit, r_bare = ep["learnergy fit"] / ep["ours"], ep["learnergy bare"] / ep["ours"]
    rows.append(("  learnergy fit / steinebm", f"{r_fit:.2f}", f">= {CD_GOAL:g}", status(r_fit >= CD_GOAL)))
    rows.append(("  learnergy bare steps / steinebm", f"{r_bare:.2f}", "-", "context"))

    print(table(rows))
    print()
    print(
        f"timings: medians of {svgd_rounds} (SVGD) and {cd_rounds} (CD epochs) interleaved rounds after warm-up; "
        f"a Pyro slot is one SVGD step, a steinebm slot {OUR_BLOCK} consecutive steps (time per step shown)."
    )
    print()
    print("SVGD: what differs between the two sides")
    for line in SVGD_NOTES + notes:
        print(f"  - {line}")
    print()
    print("CD-1: what differs between the two sides")
    for line in CD_NOTES:
        print(f"  - {line}")
    print()
    print_cpu_use(busy0, total0, own0, wall0)
    print(f"load average at end: {load_average()} (1, 5, 15 min)")
    return 0


SVGD_NOTES = [
    "same target (RBM d x 10, random fixed parameters; Pyro: N(0, I) prior + pyro.factor, equal to f(x) up to a "
    f"constant), same starting particles N(0, I), same optimizer (Adam lr {SVGD_LR:g}, betas (0.9, 0.999)), both "
    "divide the kernel sum by m",
    "score: ours closed form (b - x + B tanh(B^T x + c)); Pyro autograd through its trace and Trace_ELBO "
    "(guide: Delta at the particles), plus per-step squared-gradient stats (.item()) and validation checks",
    "kernel, ours: k = exp(-||x - x'||^2 / h), one h = med^2 / log m, med the median Euclidean distance over the "
    "m(m-1)/2 pairs (mean of the two middle ones when their count is even); computed with two matmuls (x x^T and "
    "K [score, x]), no (m, m, d) tensor",
    "kernel, Pyro (RBFSteinKernel, mode='multivariate', the closest): k = exp(-sum_k (x_k - x'_k)^2 / h_k) with one "
    "bandwidth per coordinate, h_k = median_{i<j} (x_ik - x_jk)^2 / log(m + 1) (torch.median: the lower middle "
    "value): per-coordinate squared differences instead of whole distances, log(m + 1) instead of log m; the "
    "exponent sums d terms of order log(m + 1), so at large d the kernel is nearly the identity (the kernel "
    "values below); built from (m, m, d) tensors. Pyro's default mode='univariate' applies a separate "
    "1-D kernel per coordinate (the kernelized complete-conditional Stein discrepancy), a different update; "
    "timed as context at the first shape",
]

CD_NOTES = [
    "closest learnergy class: learnergy.models.gaussian.GaussianRBM (Gaussian visible of unit variance, Bernoulli "
    "hidden); GaussianReluRBM / GaussianSeluRBM have deterministic hidden units, VarianceGaussianRBM learns the "
    "visible variance",
    "same marginal family: ours has hidden units in {-1, +1}, theirs in {0, 1}; with W = 2B, hidden bias 2c and "
    "visible bias b - B 1, their -energy(x) equals our f(x) up to a constant",
    f"same settings: {N_HIDDEN} hidden units, batch {BATCH}, CD-1, Adam lr {CD_LR:g} betas {CD_BETAS} on both "
    "(learnergy's own SGD, lr 0.1 by default, replaced through model.optimizer)",
    "negative samples: ours one Langevin step from the data (x + eps/2 score + sqrt(eps) noise, eps 0.01); theirs "
    "one Gibbs sweep (sample h | x, then the visible mean W h + a, no Gaussian noise), plus one more hidden "
    "sampling pass whose result fit() does not use; so ours draws 100 x 784 normal variates per step, theirs "
    "2 x 100 x 10 Bernoulli ones",
    "learnergy's fit (what a user runs) also: a DataLoader over a TensorDataset (one __getitem__ per image, "
    "collated per batch; in order, unshuffled), standardizes every batch (normalize=True), and per batch computes "
    "the reconstruction MSE and a pseudo-likelihood (two more energies on a rounded, one-bit-flipped copy)",
    "ours: the training loop's step (steinebm.engine.build.build_parts: CD loss, finite check, backward, Adam) on "
    "batches of a random permutation; the bare learnergy row uses the same batches",
]


if __name__ == "__main__":
    raise SystemExit(main())
