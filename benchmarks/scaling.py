"""How the cost grows: ``svgd_direction`` against the number of particles m and the dimension d,
and a SteinCD epoch against the batch size, on one device.

    .venv/bin/python benchmarks/scaling.py [--device cuda] [--out docs/figures/scaling.png] [--quick]

Prints one table per curve with the fitted log-log slope over the upper half of the range (the
growth rate once fixed overheads no longer dominate), and draws the three curves on log-log axes
with reference lines of the expected growth: m^2 for the kernel (every pair of particles), d
for the dimension, and, for an epoch over a fixed number of images, slope 1: the same data in
fewer, larger steps, so the epoch first falls while per-step overheads dominate, then grows like
the batch once SteinCD's kernel (each step's cost grows like batch^2) dominates.

Timings are medians over repeats after a warm-up; on a GPU each timed call is synchronised.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from steinebm import RBF, GaussianBernoulliRBM, SteinCD, svgd_direction


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x over the upper half of the points."""
    k = len(xs) // 2
    lx, ly = [math.log(v) for v in xs[k:]], [math.log(v) for v in ys[k:]]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def time_svgd(m: int, d: int, device: torch.device, repeats: int) -> float:
    """Median seconds of one ``svgd_direction`` (RBF, the paper's median rule) on (m, d) particles."""
    g = torch.Generator().manual_seed(0)
    x, s = torch.randn(m, d, generator=g).to(device), torch.randn(m, d, generator=g).to(device)
    return median_time(lambda: svgd_direction(x, s, RBF()), device, repeats)


def time_epoch(batch: int, data: torch.Tensor, device: torch.device, repeats: int) -> float:
    """Median seconds for SteinCD (RBM l = 10, Adam) to pass once over the rows of ``data``."""
    rbm = GaussianBernoulliRBM(784, 10, generator=torch.Generator().manual_seed(0)).to(device)
    opt = torch.optim.Adam(rbm.parameters(), lr=3e-4, betas=(0.5, 0.999))
    learner = SteinCD(epsilon=1e-2)

    def epoch() -> None:
        for start in range(0, data.shape[0] - batch + 1, batch):
            loss, _ = learner.loss(rbm, data[start : start + batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return median_time(epoch, device, repeats, warmup=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--out", default="docs/figures/scaling.png", help="the plot (PNG)")
    p.add_argument("--quick", action="store_true", help="smaller ranges and fewer repeats (a smoke run)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("scaling: no CUDA device here; run with --device cpu", file=sys.stderr)
        return 2
    repeats = 3 if a.quick else 7
    ms = [100, 200, 500, 1000] if a.quick else [100, 200, 500, 1000, 2000, 5000, 10_000]
    ds = [10, 50, 200, 784] if a.quick else [10, 50, 100, 200, 784, 1568, 3072]
    batches = [25, 50, 100, 200] if a.quick else [25, 50, 100, 200, 400, 800]
    n_images = 2_000 if a.quick else 10_000
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"scaling on {name}; torch {torch.__version__}")

    t_m = [time_svgd(m, 784, device, repeats) for m in ms]
    t_d = [time_svgd(1000, d, device, repeats) for d in ds]
    data = torch.rand(n_images, 784, generator=torch.Generator().manual_seed(0)).to(device)
    t_b = [time_epoch(b, data, device, max(1, repeats // 2)) for b in batches]
    curves = [
        ("svgd_direction, d = 784", "particles m", ms, t_m, 2.0),
        ("svgd_direction, m = 1000", "dimension d", ds, t_d, 1.0),
        # per step a + b m + c m^2 (the kernel): over a fixed set of images, n/m steps, the epoch
        # falls like 1/m while overheads dominate and grows like m once the kernel does
        (f"SteinCD epoch over {n_images:,} images", "batch size", batches, t_b, 1.0),
    ]
    for title, xlabel, xs, ts, expected in curves:
        print(
            f"\n{title}: slope of log time against log {xlabel} (upper half) {slope(xs, ts):.2f}, expected {expected:g}"
        )
        for v, t in zip(xs, ts):
            print(f"  {xlabel} {v:>6}  {t * 1e3:10.2f} ms")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (title, xlabel, xs, ts, expected) in zip(axes, curves):
        ax.loglog(xs, ts, "o-", label=f"measured (slope {slope(xs, ts):.2f})")
        ref = [ts[-1] * (v / xs[-1]) ** expected for v in xs]
        ax.loglog(xs, ref, "--", color="grey", label=f"slope {expected:g}")
        ax.set(title=title, xlabel=xlabel, ylabel="seconds")
        ax.set_xticks(xs, [str(v) for v in xs], minor=False)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"steinebm scaling on {name}")
    fig.tight_layout()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"\nplot: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
