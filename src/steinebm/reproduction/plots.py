"""Pictures of results: metric curves and panels (matplotlib, headless). Image grids are in
:mod:`steinebm.grids`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_curves", "plot_alpha_panels", "plot_metric_panels"]


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
