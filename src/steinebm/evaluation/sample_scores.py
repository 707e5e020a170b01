"""Scores of a set of generated MNIST images under more than one classifier, and the 100-image
grid protocol used to compare a generator with a published sample grid.

An inception score of imperfect samples depends on the classifier that judges them (one may call
half of a set of speckled digits "8", another a sixth of them), so :func:`score_images` reports
every number under each of several independently trained classifiers
(:data:`MNIST_CLASSIFIERS`), and a verdict should rest only on what they agree on.

The grid protocol scores the 100 images of a 10 x 10 grid as one split: that is all a published
figure offers, so a generator's grid is scored the same way beside it (:func:`read_grid` cuts a
PNG grid into its images).

>>> import torch
>>> x = torch.rand(20, 784, generator=torch.Generator().manual_seed(0))
>>> sorted(score_images(x, classifiers=("mnist",), n_splits=2))[:3]
['mnist_classes', 'mnist_is', 'mnist_is_std']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steinebm.errors import UserError
from steinebm.evaluation.classifiers import inception_score, load_classifier, mode_coverage
from steinebm.shapes import MNIST_SHAPE

__all__ = [
    "MNIST_CLASSIFIERS",
    "score_images",
    "grid_scores",
    "read_grid",
    "generated_images",
    "classifier_features",
    "classifier_fid",
    "label_agreement",
]

MNIST_CLASSIFIERS = ("mnist", "mnist-lenet")


def score_images(x: Tensor, classifiers: Sequence[str] = MNIST_CLASSIFIERS, n_splits: int = 10) -> dict[str, float]:
    """For each classifier ``c``: ``c_is`` and ``c_is_std`` (inception score over ``n_splits``),
    ``c_classes`` (classes holding at least one image), ``c_top_share`` (the share of the most
    frequent predicted class) and ``c_share_8`` (the share called "8", the class speckled digits
    drift to)."""
    out: dict[str, float] = {}
    for name in classifiers:
        model = load_classifier(name)
        mean, std = inception_score(x, model, n_splits=n_splits)
        cov = mode_coverage(x, model)
        fractions = np.asarray(cov["counts"], dtype=np.float64) / cov["n"]
        out[f"{name}_is"], out[f"{name}_is_std"] = mean, std
        out[f"{name}_classes"] = float(cov["classes_present"])
        out[f"{name}_top_share"] = float(fractions.max())
        out[f"{name}_share_8"] = float(fractions[8])
    return out


def grid_scores(x: Tensor, classifiers: Sequence[str] = MNIST_CLASSIFIERS) -> dict[str, float]:
    """The 100-image protocol: the first 100 images scored as one split, keys prefixed ``grid_``."""
    if x.shape[0] < 100:
        raise ValueError(f"the grid protocol needs 100 images, got {x.shape[0]}")
    return {f"grid_{k}": v for k, v in score_images(x[:100], classifiers, n_splits=1).items() if "std" not in k}


def read_grid(path: str | Path, rows: int = 10, cols: int = 10, tile: int = MNIST_SHAPE[-1], pad: int = 0) -> Tensor:
    """The ``rows x cols`` images of a grey (or RGB/RGBA, averaged) PNG grid of ``tile``-pixel
    tiles separated by ``pad`` pixels, as (rows * cols, tile * tile) floats in [0, 1], row by row."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"cannot read the grid image {path} ({e}): give a PNG file") from None
    need_h, need_w = rows * tile + (rows + 1) * pad, cols * tile + (cols + 1) * pad
    if arr.shape != (need_h, need_w):
        raise UserError(
            f"{path} is {arr.shape[1]} x {arr.shape[0]} pixels, not the {need_w} x {need_h} of {rows} x {cols} tiles "
            f"of {tile} px with {pad} px padding: give the grid's layout"
        )
    step = tile + pad
    tiles = [
        arr[pad + r * step : pad + r * step + tile, pad + c * step : pad + c * step + tile]
        for r in range(rows)
        for c in range(cols)
    ]
    return torch.from_numpy(np.stack(tiles).reshape(rows * cols, tile * tile)).float()


def generated_images(G: Any, n: int, seed: int = 0, batch_size: int = 1000) -> Tensor:
    """``n`` images of a generator from seeded noise drawn on the CPU (the same draws on every
    device), on the CPU, in batches of ``batch_size`` (a generator whose BatchNorm uses batch
    statistics sees batches of that size). A class-conditional generator (one with
    ``n_classes``) is given image k the label ``(k // n_classes) % n_classes``: every class
    equally often, and each 10 x 10 block of images, shown as a grid, one class per row."""
    from steinebm.models.common import uniform_noise

    device = next(G.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    K = int(getattr(G, "n_classes", 0))
    out = []
    with torch.no_grad():
        for k in range(0, n, batch_size):
            xi = uniform_noise(min(batch_size, n - k), G.noise_dim, rng).to(device)
            if K:
                y = (torch.arange(k, k + len(xi)) // K % K).to(device)
                out.append(G(xi, y).reshape(len(xi), -1).cpu())
            else:
                out.append(G(xi).reshape(len(xi), -1).cpu())
    return torch.cat(out)


@torch.no_grad()
def classifier_features(x: Tensor, classifier: str, batch_size: int = 1000) -> Tensor:
    """The penultimate layer of a shipped MNIST classifier (its last hidden units, before the
    logits) for images (n, 784) in [0, 1], float64 (n, p): the feature space of
    :func:`classifier_fid`."""
    model: Any = load_classifier(classifier)
    head = model.head[:-1]  # everything but the final linear layer to the logits
    out = [
        head(model.features(x[k : k + batch_size].reshape(-1, *MNIST_SHAPE).float()))
        for k in range(0, len(x), batch_size)
    ]
    return torch.cat(out).double()


def classifier_fid(x: Tensor, x_ref: Tensor, classifier: str) -> float:
    """The Frechet distance between Gaussians fitted to the :func:`classifier_features` of ``x``
    and of ``x_ref`` (FID with an MNIST classifier in place of the Inception network)."""
    from steinebm.evaluation.fid import frechet_distance, gaussian_statistics

    mu1, s1 = gaussian_statistics(classifier_features(x, classifier))
    mu2, s2 = gaussian_statistics(classifier_features(x_ref, classifier))
    return frechet_distance(mu1, s1, mu2, s2)


@torch.no_grad()
def label_agreement(x: Tensor, y: Tensor, classifier: str, batch_size: int = 1000) -> float:
    """The share of images (n, 784) that ``classifier`` assigns the label (n,) they were drawn
    for: a class-conditional generator's own accuracy."""
    model = load_classifier(classifier)
    pred = torch.cat([model(x[k : k + batch_size].float()).argmax(1) for k in range(0, len(x), batch_size)])
    return float((pred == y.to(pred.device)).double().mean())
