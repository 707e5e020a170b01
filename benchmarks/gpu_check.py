"""SteinGAN against DCGAN on CIFAR-10, on a CUDA GPU: iterations per second and their ratio.

    python benchmarks/gpu_check.py --data-dir /path/to/cifar10 [--seconds 120] [--batch-size 100]

Trains the Figure 2 SteinGAN (joint energy, conditional generator, feature kernel with the
nearest-neighbour repulsion, the paper's network sizes) and the conditional DCGAN baseline,
each for ``--seconds`` after a warm-up, on real CIFAR-10 batches, and prints the device, the
iterations per second of each and SteinGAN's time per iteration over DCGAN's. The two runs
alternate in slices so that a change in the machine's speed falls on both. Without a CUDA
device it says so and exits with status 2. ``--dry-run`` runs the same code on the CPU with
narrow networks for a few seconds, to check the script itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=False, help="folder holding cifar-10-batches-py (else $STEINEBM_DATA)")
    ap.add_argument("--seconds", type=float, default=120.0, help="timed seconds per method (default 120)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--repulsion", choices=["nearest", "exact"], default="nearest")
    ap.add_argument("--dry-run", action="store_true", help="CPU, narrow networks, 2 s: checks the script only")
    a = ap.parse_args()
    if a.dry_run:
        a.seconds, a.batch_size = 2.0, 16
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device is available here; run it on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2

    from steinebm.engine.build import build_parts, load_config_dataset
    from steinebm.engine.config import Config
    from steinebm.errors import UserError
    from steinebm.reproduction.reproduce_images import fig2_config

    device = torch.device("cpu" if a.dry_run else "cuda")
    narrow = dict(width=8, gen_width=8, disc_width=8, code_dim=16) if a.dry_run else {}
    run_kw: dict[str, Any] = dict(data_dir=a.data_dir, batch_size=a.batch_size, device=device.type, **narrow)
    base = Config(dataset="cifar10", **run_kw)
    try:
        data = load_config_dataset(base)
    except UserError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    x_all, y_all = data.train.x.to(device), data.train.y.to(device)
    runs = {
        "SteinGAN": build_parts(
            fig2_config("SteinGAN", **run_kw, feature_repulsion=a.repulsion),
            data.dim,
            device,
            image_shape=data.image_shape,
        ),
        "DCGAN": build_parts(fig2_config("DCGAN", **run_kw), data.dim, device, image_shape=data.image_shape),
    }
    rng = torch.Generator(device=device).manual_seed(0)
    g = torch.Generator(device=device).manual_seed(1)

    def run(name: str, seconds: float) -> tuple[int, float]:
        parts, n, start = runs[name], 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            idx = torch.randint(0, len(x_all), (a.batch_size,), device=device, generator=g)
            parts.step(x_all[idx], rng, y_all[idx])
            n += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n, time.perf_counter() - start

    for name in runs:  # warm-up: cuDNN autotuning, allocator
        run(name, 0.5 if a.dry_run else 5.0)
    totals = {name: [0, 0.0] for name in runs}
    slices = max(1, int(a.seconds // 10))
    for _ in range(slices):
        for name in runs:
            n, t = run(name, a.seconds / slices)
            totals[name][0] += n
            totals[name][1] += t
    where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run, narrow networks)"
    print(f"device: {where}, torch {torch.__version__}, batch {a.batch_size}")
    rate = {name: n / t for name, (n, t) in totals.items()}
    for name, r in rate.items():
        print(f"{name}: {r:.2f} iterations/s ({totals[name][0]} iterations in {totals[name][1]:.1f} s)")
    print(f"SteinGAN time per iteration / DCGAN's: {rate['DCGAN'] / rate['SteinGAN']:.2f} (goal <= 1.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
