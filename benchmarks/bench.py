"""Timed comparisons for steinebm, every number measured in one run.

    .venv/bin/python benchmarks/bench.py [--quick] [--data-dir DIR]

Prints the machine, then one table (each row: what is measured, the value, its goal, met / not
met), then where the time goes (component timings and a torch.profiler summary of one training
step), so a missed goal can be explained from the same run.

The goals are ratios measured in this run, never absolute times from another machine:

1. ``svgd_direction`` (RBF, the paper's median bandwidth) at m = 1000, d = 784: GFLOP/s counting
   4 m^2 d flops (2 m^2 d for the distances, 2 m^2 d for the single (m x m) @ (m x d) product
   K (s - 2/h x) that such inputs take; see RBF.stein_sum),
   as a fraction of this machine's float32 matmul rate, taken as the larger of a same-shape
   (m x d) @ (d x m) product and a 2048^3 product. Goal >= 0.7.
2. Exact RBM log Z for l = 10, 20, 24. Goal: l = 20 under 1 s. ``svgd_direction`` at m = 10,000,
   d = 784 in a fresh process, with the memory it adds at its peak: goal O(m^2 + m d), no
   m x m x d tensor. AIS log Z at l = 20 (100 chains, 10,000 steps) against the exact value.
3. SteinCD epoch time over CD-1 epoch time on MNIST (500 steps of batch 100, RBM l = 10,
   Adam lr 3e-4, betas (0.5, 0.999)). Goal <= 1.3. CD-10, symmetric SteinCD and Stein score
   matching for context. Methods run interleaved (one epoch of each per round, the order
   rotated every round) and each time is the median over rounds.

Timings are medians of repeated runs after warm-up; the runs of the things compared alternate,
so slow spells of a shared machine fall on all of them alike.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import steinebm
import steinebm.data
from steinebm import RBF, GaussianBernoulliRBM, svgd_direction
from steinebm.core.kernels import _middle_pair, median_bandwidth, pairwise_sq_dists
from steinebm.core.samplers import langevin
from steinebm.core.score import score as energy_score
from steinebm.errors import DataError
from steinebm.learners.base import contrastive_loss

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCH = 100
N_HIDDEN = 10
LR, BETAS = 3e-4, (0.5, 0.999)
# flops of svgd_direction per m^2 d: x x^T (2) and the single product K (s - 2/h x) (2)
SVGD_FLOPS = 4


# ----------------------------------------------------------------------------------------------
# timing helpers


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, inner: int = 1, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function. Each round times ``inner`` calls of every
    function in turn (the order rotated by one each round); warm-up rounds are discarded."""
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            dt = (time.perf_counter() - t0) / inner
            if r >= warmup:
                samples[name].append(dt)
    return {n: statistics.median(v) for n, v in samples.items()}


def fmt_time(s: float) -> str:
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.0f} us"


# ----------------------------------------------------------------------------------------------
# machine and data


def machine_lines() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    blas = "mkl" if torch.backends.mkl.is_available() else "other"
    return [
        f"cpu          : {cpu}",
        f"logical cpus : {os.cpu_count()}",
        f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})",
        f"torch        : {torch.__version__} (blas: {blas})",
        f"python       : {platform.python_version()}",
        f"steinebm     : {steinebm.__version__}",
        f"load average : {load_average()} (1, 5, 15 min, at start)",
    ]


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; (0, 0) where unreadable."""
    try:
        f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def load_train_images(data_dir: str | None) -> tuple[torch.Tensor, str]:
    """Training images (n, 784) and a line saying where they came from."""
    candidates: list[tuple[str, Path]] = []
    if data_dir:
        candidates.append(("--data-dir", Path(data_dir)))
    elif os.environ.get("STEINEBM_DATA"):
        candidates.append(("STEINEBM_DATA", Path(os.environ["STEINEBM_DATA"])))
    else:
        shared = REPO_ROOT.parent / "shared" / "data" / "mnist"
        if shared.exists():
            candidates.append(("../shared/data/mnist", shared))
    reasons = []
    for origin, path in candidates:
        try:
            ds = steinebm.data.load_mnist(path, download=False)
        except DataError as e:
            reasons.append(f"{origin} ({path}): {e}")
            continue
        return ds.train.x, f"MNIST from {ds.source} ({ds.train.x.shape[0]} training images)"
    ds = steinebm.data.load_dataset("mnist-embedded")
    why = "; ".join(reasons) if reasons else "no MNIST folder given or found"
    note = (
        f"NOTE: full MNIST not used ({why}); falling back to the embedded subset "
        f"({ds.train.x.shape[0]} training images, reused across each 500-step epoch)"
    )
    return ds.train.x, note


# ----------------------------------------------------------------------------------------------
# 1. svgd_direction against the matmul rate


def bench_svgd(x: torch.Tensor, s: torch.Tensor, rounds: int) -> dict[str, float]:
    m, d = x.shape
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    kernel = RBF()  # bandwidth="median", median_over="pairs", log_term="m": the paper's rule
    xt = x.T.contiguous()  # a plain (d x m) operand
    t = interleaved(
        {
            "same": lambda: torch.mm(x, xt),
            "square": lambda: torch.mm(a, b),
            "svgd": lambda: svgd_direction(x, s, kernel),
        },
        rounds=rounds,
        warmup=3,
    )
    return {
        "t_same": t["same"],
        "t_square": t["square"],
        "t_svgd": t["svgd"],
        "rate_same": 2 * m * m * d / t["same"] / 1e9,
        "rate_square": 2 * 2048**3 / t["square"] / 1e9,
        "rate_svgd": SVGD_FLOPS * m * m * d / t["svgd"] / 1e9,
    }


def svgd_components(x: torch.Tensor, s: torch.Tensor, rounds: int, inner: int) -> dict[str, float]:
    """The pieces of ``RBF.stein_sum`` timed one by one (same operations, same shapes)."""
    m, d = x.shape
    d2 = pairwise_sq_dists(x)
    h = median_bandwidth(d2)
    flat = d2.reshape(-1)
    iu = torch.triu_indices(m, m, offset=1)
    vals = flat[iu[0] * m + iu[1]]
    K = d2.clone().div_(-h).exp_()
    folded = s - (2.0 / h) * x  # the single product's right operand
    kernel = RBF()
    return interleaved(
        {
            "svgd_direction (whole)": lambda: svgd_direction(x, s, kernel),
            "pairwise_sq_dists (x x^T)": lambda: pairwise_sq_dists(x),
            "median_bandwidth": lambda: median_bandwidth(d2),
            "  of which the selection (middle pair)": lambda: _middle_pair(vals),
            "exp(-d2/h)": lambda: d2.clone().div_(-h).exp_(),
            "K @ (s - 2/h x) (single product)": lambda: K @ folded,
        },
        rounds=rounds,
        inner=inner,
    )


# The m = 10,000 run goes in a fresh process so that its peak resident memory is its own: the
# increase of ru_maxrss over the moment the inputs exist is what svgd_direction allocated.
_LARGE_M = """
import resource, sys, time, torch
from steinebm import RBF, svgd_direction
torch.manual_seed(0)
m, d = int(sys.argv[1]), int(sys.argv[2])
x, s = torch.randn(m, d), torch.randn(m, d)
svgd_direction(x[:100], s[:100], RBF())  # warm-up on a small batch
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
phi = svgd_direction(x, s, RBF())
t = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(t, (peak - base) * 1024, bool(torch.isfinite(phi).all()))
"""


def bench_large_m(m: int, d: int) -> tuple[float, float]:
    """(seconds, bytes of peak memory added) of one svgd_direction call at (m, d), in a subprocess."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", _LARGE_M, str(m), str(d)], capture_output=True, text=True, check=True
    ).stdout.split()
    if out[2] != "True":
        raise RuntimeError("svgd_direction returned non-finite values at large m")
    return float(out[0]), float(out[1])


def bench_ais(rounds: int) -> dict[str, float]:
    """AIS log Z of the MNIST-shaped RBM (l = 20, so the exact value is at hand): time and error."""
    from steinebm.evaluation.ais import ais_log_partition

    rbm = GaussianBernoulliRBM(784, 20, generator=torch.Generator().manual_seed(0))
    exact = float(rbm.log_partition())
    times, errs, ses = [], [], []
    for r in range(rounds):
        t = time.perf_counter()
        est = ais_log_partition(rbm, n_chains=100, n_betas=10_000, generator=torch.Generator().manual_seed(r))
        times.append(time.perf_counter() - t)
        errs.append(est.log_z - exact)
        ses.append(est.stderr)
    return {
        "time": statistics.median(times),
        "mean_abs_err": statistics.fmean(abs(e) for e in errs),
        "mean_se": statistics.fmean(ses),
        "rounds": rounds,
    }


# ----------------------------------------------------------------------------------------------
# 2. exact log Z


def bench_log_z(rounds: int) -> dict[int, float]:
    out = {}
    for n_hidden in (10, 20, 24):
        rbm = GaussianBernoulliRBM(784, n_hidden, generator=torch.Generator().manual_seed(0))
        rbm.log_partition()  # warm-up
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            rbm.log_partition()
            times.append(time.perf_counter() - t0)
        out[n_hidden] = statistics.median(times)
    return out


# ----------------------------------------------------------------------------------------------
# 3. epoch times of the learners


def learners() -> dict[str, steinebm.Learner]:
    return {
        "CD-1": steinebm.CD(k=1, step_size=1e-2),
        "SteinCD": steinebm.SteinCD(epsilon=1e-2),
        "CD-10": steinebm.CD(k=10, step_size=1e-2),
        "symmetric SteinCD": steinebm.SymmetricSteinCD(epsilon=1e-2),
        "Stein score matching": steinebm.SteinScoreMatching(),
    }


def batch_indices(n: int, steps: int, seed: int = 0) -> torch.Tensor:
    """(steps, BATCH) indices: consecutive random permutations of the n images."""
    g = torch.Generator().manual_seed(seed)
    need = steps * BATCH
    perms = [torch.randperm(n, generator=g) for _ in range(-(-need // n))]
    return torch.cat(perms)[:need].view(steps, BATCH)


def fresh_run(x_train: torch.Tensor) -> tuple[GaussianBernoulliRBM, torch.optim.Optimizer, torch.Generator]:
    model = GaussianBernoulliRBM(x_train.shape[1], N_HIDDEN, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, fused=True)  # the training loop's default
    return model, opt, torch.Generator().manual_seed(1)


def epoch_time(learner: steinebm.Learner, x_train: torch.Tensor, idx: torch.Tensor) -> float:
    """Seconds for one epoch (idx.shape[0] steps) from a fresh model and optimizer; a step is
    exactly the training loop's: loss, backward, Adam step."""
    model, opt, gen = fresh_run(x_train)
    gc.collect()
    t0 = time.perf_counter()
    for b in range(idx.shape[0]):
        x_batch = x_train[idx[b]]
        loss, _ = learner.loss(model, x_batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def bench_epochs(x_train: torch.Tensor, steps: int, rounds: int) -> tuple[dict[str, float], list[float]]:
    """Median epoch seconds per learner, and the per-round SteinCD / CD-1 ratios."""
    ls = learners()
    idx = batch_indices(x_train.shape[0], steps)
    warm_idx = idx[:20]
    for learner in ls.values():  # warm-up: allocator, kernels, first-call costs
        epoch_time(learner, x_train, warm_idx)
    names = list(ls)
    samples: dict[str, list[float]] = {n: [] for n in names}
    ratios = []
    for r in range(rounds):
        shift = r % len(names)
        this_round = {}
        for name in names[shift:] + names[:shift]:
            this_round[name] = epoch_time(ls[name], x_train, idx)
            samples[name].append(this_round[name])
        ratios.append(this_round["SteinCD"] / this_round["CD-1"])
    return {n: statistics.median(v) for n, v in samples.items()}, ratios


def step_components(x_train: torch.Tensor, rounds: int, inner: int) -> dict[str, float]:
    """One training step of CD-1 and of SteinCD at batch 100, split into its parts."""
    model, opt, gen = fresh_run(x_train)
    x = x_train[:BATCH].clone()
    cd1, scd = steinebm.CD(k=1, step_size=1e-2), steinebm.SteinCD(epsilon=1e-2)
    kernel = RBF()
    s = energy_score(model, x)
    d2 = pairwise_sq_dists(x)
    h = median_bandwidth(d2)
    K = d2.clone().div_(-h).exp_()
    folded = s - (2.0 / h) * x  # the single product's right operand
    x_neg = x + 1e-2 * svgd_direction(x, s, kernel)

    def step(learner: steinebm.Learner) -> None:
        loss, _ = learner.loss(model, x, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def fwd_bwd() -> None:
        loss, _, _ = contrastive_loss(model, x, x_neg)
        opt.zero_grad()
        loss.backward()

    fwd_bwd()
    return interleaved(
        {
            "CD-1 step (whole)": lambda: step(cd1),
            "SteinCD step (whole)": lambda: step(scd),
            "score grad_x f (closed form)": lambda: energy_score(model, x),
            "Langevin, 1 step": lambda: langevin(model, x, 1, 1e-2, 1.0, gen),
            "  of which randn (100 x 784)": lambda: torch.randn(x.shape, generator=gen),
            "svgd_direction": lambda: svgd_direction(x, s, kernel),
            "  pairwise_sq_dists": lambda: pairwise_sq_dists(x),
            "  median_bandwidth": lambda: median_bandwidth(d2),
            "  K @ (s - 2/h x)": lambda: K @ folded,
            "f(x+), f(x-) forward + backward": fwd_bwd,
            "Adam step": lambda: opt.step(),
        },
        rounds=rounds,
        inner=inner,
    )


def profile_steps(x_train: torch.Tensor, n_steps: int, top: int = 8) -> dict[str, list[tuple[str, float, int]]]:
    """torch.profiler: the top ops by self CPU time per step, for CD-1 and SteinCD."""
    out = {}
    idx = batch_indices(x_train.shape[0], n_steps, seed=3)
    for name, learner in (("CD-1", steinebm.CD(k=1, step_size=1e-2)), ("SteinCD", steinebm.SteinCD(epsilon=1e-2))):
        model, opt, gen = fresh_run(x_train)

        def run(steps: int) -> None:
            for b in range(steps):
                loss, _ = learner.loss(model, x_train[idx[b]], gen)  # noqa: B023
                opt.zero_grad()  # noqa: B023
                loss.backward()
                opt.step()  # noqa: B023

        run(10)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(n_steps)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        rows = [(e.key, e.self_cpu_time_total / n_steps, e.count // n_steps) for e in events[:top]]
        rows.append(("(all ops)", total / n_steps, sum(e.count for e in events) // n_steps))
        out[name] = rows
    return out


# ----------------------------------------------------------------------------------------------


def bench_gan_iterations(x_train: torch.Tensor, rounds: int, inner: int) -> dict[str, float]:
    """Seconds per iteration of SteinGAN (RBM energy + MNIST generator) and of DCGAN (the same
    generator + its discriminator), each exactly the step the training loop runs."""
    from steinebm.engine.build import build_parts
    from steinebm.engine.config import Config

    idx = batch_indices(x_train.shape[0], 64)
    batches = [x_train[idx[k]] for k in range(idx.shape[0])]
    steps = {}
    for name, method in (("SteinGAN", "steingan"), ("DCGAN", "dcgan")):
        parts = build_parts(
            Config(method=method, dataset="mnist", progress=False), x_train.shape[1], torch.device("cpu")
        )
        rng = torch.Generator().manual_seed(0)
        counter = {"k": 0}

        def one(parts=parts, rng=rng, counter=counter) -> None:
            counter["k"] = (counter["k"] + 1) % len(batches)
            parts.step(batches[counter["k"]], rng)

        steps[name] = one
    return interleaved(steps, rounds=rounds, inner=inner)


def bench_gan_same_nets(rounds: int) -> dict[str, float]:
    """Seconds per iteration of Figure 2's SteinGAN (the CIFAR-10 joint energy) and DCGAN (its
    discriminator), on the same conditional generator at Table 1's widths (the fig2 presets),
    batch 100 of 32 x 32 images: the comparison Section 5.2's speed claim is about. The images
    are uniform noise with labels 0-9 in turn: the cost of a step does not depend on the pixels."""
    from steinebm.engine.build import build_parts
    from steinebm.reproduction.reproduce_images import fig2_config

    x = torch.rand(100, 3 * 32 * 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(100) % 10
    steps = {}
    for name in ("SteinGAN", "DCGAN"):
        parts = build_parts(fig2_config(name, device="cpu"), x.shape[1], torch.device("cpu"), image_shape=(3, 32, 32))
        rng = torch.Generator().manual_seed(0)

        def one(parts=parts, rng=rng) -> None:
            parts.step(x, rng, y)

        steps[name] = one
    return interleaved(steps, rounds=rounds, inner=1, warmup=1)


def table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("benchmark", "measured", "goal", "status")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(out)


def print_cpu_use(busy0: int, total0: int, own0: float, wall0: float) -> None:
    """The run's wall time and how much of the machine's CPU time other processes took meanwhile,
    with a warning when it was enough to spoil the timings (torch uses every core)."""
    busy1, total1 = cpu_jiffies()
    own = sum(os.times()[:2]) - own0
    wall = time.perf_counter() - wall0
    if total1 > total0:
        tick = os.sysconf("SC_CLK_TCK")
        busy, total = (busy1 - busy0) / tick, (total1 - total0) / tick
        others = max(0.0, busy - own)
        print(
            f"run: {wall:.0f} s wall; CPU time of all processes {busy:.0f} s of {total:.0f} s available, "
            f"this process {own:.0f} s, others {others:.0f} s"
        )
        if others > 0.05 * total:
            print(
                f"WARNING: other processes used {100 * others / total:.0f} % of the CPU time during this run; "
                "with torch using every core, timings degrade sharply: rerun on an idle machine"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run; ratios are noisier)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the MNIST files (default: STEINEBM_DATA, "
        "then ../shared/data/mnist next to the repository, else the embedded subset)",
    )
    args = p.parse_args(argv)
    torch.manual_seed(0)
    busy0, total0 = cpu_jiffies()
    own0 = sum(os.times()[:2])
    wall0 = time.perf_counter()

    steps = 100 if args.quick else 500
    epoch_rounds = 3 if args.quick else 7
    svgd_rounds = 7 if args.quick else 21
    comp_rounds = 5 if args.quick else 15

    print("steinebm benchmarks" + (" (--quick)" if args.quick else ""))
    print("command: " + " ".join([os.path.relpath(sys.executable), *sys.argv]))
    for line in machine_lines():
        print(line)
    x_train, data_line = load_train_images(args.data_dir)
    print(f"data         : {data_line}")
    print()

    # 1. svgd_direction
    m, d = 1000, x_train.shape[1]
    x1000 = x_train[:m].clone()
    rbm = GaussianBernoulliRBM(d, N_HIDDEN, generator=torch.Generator().manual_seed(0))
    s1000 = energy_score(rbm, x1000)
    sv = bench_svgd(x1000, s1000, svgd_rounds)
    peak = max(sv["rate_same"], sv["rate_square"])
    frac = sv["rate_svgd"] / peak

    # 2. log Z
    lz = bench_log_z(rounds=3 if args.quick else 5)

    # 3. epochs
    ep, ratios = bench_epochs(x_train, steps, epoch_rounds)
    ratio = ep["SteinCD"] / ep["CD-1"]

    def status(ok: bool) -> str:
        return "met" if ok else "not met"

    rows = [
        (
            f"matmul ({m}x{d}) @ ({d}x{m}), float32",
            f"{sv['rate_same']:.1f} GFLOP/s ({fmt_time(sv['t_same'])})",
            "-",
            "context",
        ),
        ("matmul 2048^3, float32", f"{sv['rate_square']:.1f} GFLOP/s ({fmt_time(sv['t_square'])})", "-", "context"),
        (
            f"svgd_direction RBF median, m={m} d={d}",
            f"{sv['rate_svgd']:.1f} GFLOP/s ({fmt_time(sv['t_svgd'])})",
            "-",
            "context",
        ),
        ("  svgd GFLOP/s / max matmul GFLOP/s", f"{frac:.3f}", ">= 0.70", status(frac >= 0.7)),
        ("exact RBM log Z, l=10", fmt_time(lz[10]), "-", "context"),
        ("exact RBM log Z, l=20", fmt_time(lz[20]), "< 1 s", status(lz[20] < 1.0)),
        ("exact RBM log Z, l=24", fmt_time(lz[24]), "-", "context"),
    ]
    big_m = 2_000 if args.quick else 10_000
    t_big, mem_big = bench_large_m(big_m, d)
    floats = 4 * (big_m * big_m + big_m * d)  # bytes of one m x m and one m x d float32 tensor
    rows.append((f"svgd_direction RBF median, m={big_m} d={d}", fmt_time(t_big), "-", "context"))
    rows.append(
        (
            "  its peak memory / (m^2 + m d) floats",
            f"{mem_big / floats:.2f} ({mem_big / 2**20:.0f} MiB)",
            "O(1), no m^2 d",
            status(mem_big < 0.05 * 4 * big_m * big_m * d),
        )
    )
    ais = bench_ais(rounds=2 if args.quick else 5)
    rows.append(
        (
            "AIS log Z, l=20 (100 chains x 10,000 steps)",
            f"{fmt_time(ais['time'])}, |err| {ais['mean_abs_err']:.2f} (se {ais['mean_se']:.2f})",
            "-",
            "context",
        )
    )
    for name in ep:
        rows.append((f"epoch ({steps} steps x {BATCH}), {name}", fmt_time(ep[name]), "-", "context"))
    rows.append(("  SteinCD epoch / CD-1 epoch", f"{ratio:.3f}", "<= 1.30", status(ratio <= 1.3)))
    gan = bench_gan_iterations(x_train, rounds=3 if args.quick else 9, inner=5 if args.quick else 20)
    gan_ratio = gan["SteinGAN"] / gan["DCGAN"]
    rows.append(("MNIST iteration (batch 100), SteinGAN (RBM energy)", fmt_time(gan["SteinGAN"]), "-", "context"))
    rows.append(("MNIST iteration (batch 100), DCGAN (CNN discriminator)", fmt_time(gan["DCGAN"]), "-", "context"))
    rows.append(("  SteinGAN iteration / DCGAN iteration (other nets)", f"{gan_ratio:.3f}", "-", "context"))
    same = bench_gan_same_nets(rounds=2 if args.quick else 3)
    same_ratio = same["SteinGAN"] / same["DCGAN"]
    rows.append(("CIFAR-10 iteration (batch 100), SteinGAN (joint energy)", fmt_time(same["SteinGAN"]), "-", "context"))
    rows.append(("CIFAR-10 iteration (batch 100), DCGAN (discriminator)", fmt_time(same["DCGAN"]), "-", "context"))
    rows.append(
        (
            "  SteinGAN iteration / DCGAN iteration, same generator, Table 1 widths",
            f"{same_ratio:.3f}",
            "<= 1.25",
            status(same_ratio <= 1.25),
        )
    )

    print(table(rows))
    print()
    print(
        f"svgd_direction flops counted: {SVGD_FLOPS} m^2 d = {SVGD_FLOPS * m * m * d / 1e9:.3f} GFLOP per call; "
        f"medians of {svgd_rounds} interleaved rounds after 3 warm-up rounds."
    )
    print(
        f"large m: one call in a fresh process; peak memory = rise of its max resident set during the call "
        f"(an m x m x d float32 tensor would take {4 * big_m * big_m * d / 2**30:.0f} GiB). "
        f"AIS: median time and mean |log Z error| against the exact value over {ais['rounds']} seeds."
    )
    print(
        f"epochs: medians of {epoch_rounds} interleaved rounds (fresh RBM l={N_HIDDEN} and Adam each epoch); "
        f"per-round SteinCD/CD-1 ratios: " + ", ".join(f"{r:.2f}" for r in ratios)
    )
    print()

    # where the time goes
    print(f"where the time goes: svgd_direction at m={m}, d={d} (medians, interleaved)")
    sc = svgd_components(x1000, s1000, rounds=comp_rounds, inner=1)
    whole = sc["svgd_direction (whole)"]
    for name, t in sc.items():
        print(f"  {name:<30} {fmt_time(t):>10}  {100 * t / whole:5.1f} %")
    print(
        f"  at the max matmul rate the {SVGD_FLOPS * m * m * d / 1e9:.2f} GFLOP of products alone take "
        f"{fmt_time(SVGD_FLOPS * m * m * d / peak / 1e9)}"
    )
    print()

    print(f"where the time goes: one training step at batch {BATCH} (medians, interleaved, 20 calls each)")
    st = step_components(x_train, rounds=comp_rounds, inner=20)
    for name, t in st.items():
        print(f"  {name:<34} {fmt_time(t):>10}")
    kflops = SVGD_FLOPS * BATCH * BATCH * d
    rflops = 3 * 2 * (2 * BATCH) * d * N_HIDDEN
    print(
        f"  flops: SteinCD's kernel products {SVGD_FLOPS} m^2 d = {kflops / 1e6:.1f} MFLOP per step; the RBM's "
        f"forward+backward on 2m rows ~ 3 x 2 (2m) d l = {rflops / 1e6:.1f} MFLOP"
    )
    print()

    n_prof = 20 if args.quick else 100
    print(f"torch.profiler, self CPU time per step (mean over {n_prof} steps, batch {BATCH})")
    prof = profile_steps(x_train, n_prof)
    for name, rows_p in prof.items():
        print(f"  {name}")
        for key, us, calls in rows_p:
            print(f"    {key:<28} {us:8.1f} us  {calls:4d} calls/step")
    print()
    print_cpu_use(busy0, total0, own0, wall0)
    print(f"load average at end: {load_average()} (1, 5, 15 min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
