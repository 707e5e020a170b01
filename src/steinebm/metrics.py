"""Evaluation measures. Exact test log-likelihood for models with a tractable partition function."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["average_log_likelihood", "mean_pairwise_distance"]


@torch.no_grad()
def average_log_likelihood(model: nn.Module, x: Tensor, batch_size: int = 10_000) -> float:
    """Mean ``log p(x)`` in nats per sample, exact: the model must have ``log_partition()`` and
    ``log_prob(x, log_z)`` (as :class:`~steinebm.GaussianBernoulliRBM` does)."""
    if not (hasattr(model, "log_partition") and hasattr(model, "log_prob")):
        raise TypeError(f"{type(model).__name__} has no exact log-likelihood (needs log_partition and log_prob)")
    exact: Any = model  # has log_partition / log_prob (checked above)
    log_z = exact.log_partition()
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        total += float(exact.log_prob(x[start : start + batch_size], log_z).sum())
    return total / x.shape[0]


@torch.no_grad()
def mean_pairwise_distance(images: Tensor, max_n: int = 2000) -> float:
    """Mean Euclidean distance between distinct pairs of the first ``max_n`` images, in pixel
    space: a diversity measure that, unlike label histograms, also sees a collapse onto a few
    repeated pictures."""
    x = images[:max_n].reshape(min(max_n, images.shape[0]), -1).double()
    n = x.shape[0]
    if n < 2:
        raise ValueError("mean_pairwise_distance needs at least 2 images")
    d = torch.cdist(x, x)
    return float(d.sum() / (n * (n - 1)))
