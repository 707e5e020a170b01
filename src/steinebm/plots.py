"""Pictures: image grids (Pillow) and metric curves (matplotlib, headless)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["image_grid", "save_image_grid", "save_walk", "plot_curves", "plot_alpha_panels"]


def image_grid(images: Tensor, image_shape: Sequence[int], nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images (n, d) or (n, C, H, W), values in [0, 1] (clipped), ``nrow`` to a row (as
    torchvision's ``make_grid``; about square by default), into one uint8 array (H', W') for grey
    or (H', W', 3) for colour."""
    n = images.shape[0]
    c, h, w = image_shape
    x = images.detach().float().cpu().reshape(n, c, h, w).clamp(0, 1)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad) * 0.5
    for k in range(n):
        r, q = divmod(k, nrow)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = x[k]
    arr = (grid.numpy() * 255).round().astype(np.uint8)
    return arr[0] if c == 1 else arr.transpose(1, 2, 0)


def save_image_grid(
    images: Tensor, path: str | Path, image_shape: Sequence[int], nrow: int | None = None, scale: int = 2
) -> Path:
    """Save ``images`` ((n, ...) in [0, 1], each reshaped to ``image_shape``, (C, H, W)) as one PNG
    grid of ``nrow`` images to a row (about square by default), each pixel enlarged ``scale`` times; returns
    the path. The values are rounded to 8-bit levels."""
    from PIL import Image

    arr = image_grid(images, image_shape, nrow)
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_walk(frames: Tensor, path: str | Path, image_shape: Sequence[int], scale: int = 2) -> tuple[Path, Path]:
    """A latent random walk, frames (steps, chains, ...): a PNG strip (one row per chain, steps
    left to right) and an animated GIF beside it (one frame per step, chains side by side)."""
    from PIL import Image

    steps, chains = frames.shape[:2]
    path = Path(path).with_suffix(".png")
    strip = frames.transpose(0, 1).reshape(steps * chains, *frames.shape[2:])  # chain-major
    save_image_grid(strip, path, image_shape, nrow=steps, scale=scale)
    pictures = []
    for t in range(steps):
        img = Image.fromarray(image_grid(frames[t], image_shape, nrow=chains))
        if scale > 1:
            img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
        pictures.append(img.convert("P") if img.mode == "RGB" else img)
    gif = path.with_suffix(".gif")
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=80, loop=0)
    return path, gif


def plot_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
    hlines: dict[str, float] | None = None,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One line per label: (x, mean, std), the std as a shaded band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    styles = ["-", "--", ":", "-.", (0, (5, 1, 1, 1))]
    for k, (label, (x, mean, std)) in enumerate(curves.items()):
        # distinct dash patterns keep coinciding curves visible
        (line,) = ax.plot(x, mean, label=label, lw=1.8, ls=styles[k % len(styles)])
        if np.any(std > 0):
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    for label, y in (hlines or {}).items():
        ax.axhline(y, color="grey", ls="--", lw=1.2, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_alpha_panels(rows: list[dict], path: str | Path) -> Path:
    """Figure 1(b): test log-likelihood and inception score against alpha, two panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = np.array([float(r["variant"].split("=")[1]) for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for ax, key, label in ((axes[0], "ll", "test log-likelihood (nats)"), (axes[1], "is", "inception score")):
        mean = np.array([r[f"{key}_mean"] for r in rows])
        std = np.array([r[f"{key}_std"] for r in rows])
        ax.errorbar(alphas, mean, yerr=std, marker="o", capsize=3)
        ax.set_xlabel("alpha (fraction of SteinCD steps)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle("Figure 1(b): SteinCD-GAN(alpha) on the MNIST RBM")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: object, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path


def plot_metric_panels(
    panels: Sequence[tuple[str, Mapping[str, tuple[Sequence[float], Sequence[float]]], Mapping[str, float]]],
    path: str | Path,
    xlabel: str,
) -> Path:
    """Side-by-side panels, each ``(ylabel, {label: (x, y)}, {label: reference level})``: one
    line per label, the reference levels as grey dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), dpi=110, squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, (ylabel, curves, hlines) in zip(axes[0], panels):
        for k, (label, (x, y)) in enumerate(curves.items()):
            ax.plot(x, y, label=label, lw=1.6, ls=styles[k % len(styles)])
        for k, (label, level) in enumerate(hlines.items()):
            ax.axhline(level, color="grey", ls=(0, (4, 2 + 2 * k)), lw=1.1, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
