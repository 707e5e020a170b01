"""Evaluation measures: the test log-likelihood (exact for an RBM with few hidden units, else
estimated by AIS), and distances between generated images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from steinebm.precision import float64_device

__all__ = [
    "EXACT_MAX_HIDDEN",
    "LogLikelihood",
    "log_likelihood",
    "mean_negative_energy",
    "mean_pairwise_distance",
    "near_duplicate_fraction",
    "nearest_neighbour_distance",
]


@dataclass(frozen=True)
class LogLikelihood:
    """A mean test log-likelihood in nats per sample (``value``), with the standard error of the
    estimated log Z (0 when exact), how it was obtained (``"exact"``, ``"ais"`` or ``"hais"``) and
    the log partition function used."""

    value: float
    stderr: float
    method: str
    log_partition: float


@torch.no_grad()
def _exact(model: nn.Module, x: Tensor, batch_size: int = 10_000) -> tuple[float, float]:
    """(mean ``log p(x)``, log Z), exact: the model must have ``log_partition()`` and
    ``log_prob(x, log_z)`` (as :class:`~steinebm.GaussianBernoulliRBM` does)."""
    if not (hasattr(model, "log_partition") and hasattr(model, "log_prob")):
        raise TypeError(f"{type(model).__name__} has no exact log-likelihood (needs log_partition and log_prob)")
    exact: Any = model  # has log_partition / log_prob (checked above)
    log_z = exact.log_partition()
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        total += float(exact.log_prob(x[start : start + batch_size], log_z).sum())
    return total / x.shape[0], float(log_z)


# Enumerating 2^l hidden states is exact and takes milliseconds up to l = 20 and about 0.05 s at
# l = 24 (docs/performance.md); beyond that, log Z comes from annealed importance sampling.
EXACT_MAX_HIDDEN = 24


def log_likelihood(
    model: nn.Module,
    x: Tensor,
    method: str = "auto",
    ais_chains: int = 100,
    ais_steps: int = 10_000,
    generator: torch.Generator | None = None,
    hais_groups: int = 100,
) -> LogLikelihood:
    """Mean ``log p(x)`` in nats of a Gaussian-Bernoulli RBM, exact or by AIS: the one
    log-likelihood function.

    ``method``: ``"exact"`` (log Z by enumerating the hidden states), ``"ais"``
    (mean f minus :func:`steinebm.evaluation.ais.ais_log_partition` with ``ais_chains`` chains and
    ``ais_steps`` annealing steps), ``"hais"`` (the authors' estimator,
    :func:`steinebm.evaluation.ais.hais_log_partition`: ``hais_groups`` groups of ``ais_chains`` chains,
    ``ais_steps`` temperatures, their group-averaged log Z) or ``"auto"``: exact when the model
    has at most :data:`EXACT_MAX_HIDDEN` hidden units. The standard error is 0 when exact and
    that of the estimated log Z otherwise (the test set's own spread is not in it).

    >>> import torch
    >>> from steinebm import GaussianBernoulliRBM
    >>> rbm = GaussianBernoulliRBM(2, 1)
    >>> for p in rbm.parameters():  # B = 0, b = 0, c = 0: the model is N(0, I)
    ...     _ = p.data.zero_()
    >>> ll = log_likelihood(rbm, torch.zeros(1, 2))
    >>> round(ll.value, 6), ll.method  # log N(0; 0, I) = -log(2 pi)
    (-1.837877, 'exact')
    """
    from steinebm.evaluation.ais import ais_log_partition, hais_log_partition

    if method not in ("auto", "exact", "ais", "hais"):
        raise ValueError(f"method must be 'auto', 'exact', 'ais' or 'hais', got {method!r}")
    if x.shape[0] < 1:
        raise ValueError("log_likelihood needs at least one test point")
    n_hidden = int(getattr(model, "n_hidden", 0))
    if method == "auto":
        method = "exact" if n_hidden <= EXACT_MAX_HIDDEN else "ais"
    if method == "exact":
        ll, log_z = _exact(model, x)
        return LogLikelihood(ll, 0.0, "exact", log_z)
    if not hasattr(model, "B"):
        raise TypeError(f"AIS is implemented for the Gaussian-Bernoulli RBM, not {type(model).__name__}")
    if method == "hais":
        h = hais_log_partition(model, hais_groups, ais_chains, ais_steps, generator=generator)  # type: ignore[arg-type]
        ll = mean_negative_energy(model, x) - h.log_z
        return LogLikelihood(ll, h.stderr, "hais", h.log_z)
    est = ais_log_partition(model, n_chains=ais_chains, n_betas=ais_steps, generator=generator)  # type: ignore[arg-type]
    ll = mean_negative_energy(model, x) - est.log_z
    return LogLikelihood(ll, est.stderr, "ais", est.log_z)


@torch.no_grad()
def mean_negative_energy(model: nn.Module, x: Tensor, batch_size: int = 10_000) -> float:
    """Mean f(x) over the rows of x, summed in float64 batch by batch: with a log Z, the mean
    test log-likelihood is this minus log Z."""
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        f = model(xb.reshape(xb.shape[0], -1)).detach()
        total += float(f.to(float64_device(f.device), torch.float64).sum())
    return total / x.shape[0]


@torch.no_grad()
def mean_pairwise_distance(images: Tensor, max_n: int = 2000) -> float:
    """Mean Euclidean distance between distinct pairs of the first ``max_n`` images, in pixel
    space: a diversity measure that, unlike label histograms, also sees a collapse onto a few
    repeated pictures."""
    x = images[:max_n].reshape(min(max_n, images.shape[0]), -1)
    x = x.to(float64_device(x.device), torch.float64)
    n = x.shape[0]
    if n < 2:
        raise ValueError("mean_pairwise_distance needs at least 2 images")
    d = torch.cdist(x, x)
    return float(d.sum() / (n * (n - 1)))


def _nearest_neighbour_distances(images: Tensor, max_n: int) -> Tensor:
    """For each of the first ``max_n`` images, the distance to its nearest other image once every
    image is centred and scaled to unit length (so brightness and contrast do not count)."""
    n = min(max_n, images.shape[0])
    if n < 2:
        raise ValueError("nearest-neighbour measures need at least 2 images")
    z = images[:n].reshape(n, -1)
    z = z.to(float64_device(z.device), torch.float64)
    z = z - z.mean(1, keepdim=True)
    norm = z.norm(dim=1, keepdim=True)
    # a flat image has no shape: it sits at the origin, at distance 0 from every other flat one
    z = torch.where(norm > 1e-12, z / norm.clamp_min(1e-12), torch.zeros_like(z))
    d = torch.cdist(z, z)
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values


@torch.no_grad()
def nearest_neighbour_distance(images: Tensor, max_n: int = 2000) -> float:
    """Mean distance from each image to its nearest other image, images centred and scaled to
    unit length; 0 for a sample made of repeated pictures. Mode collapse onto a few shapes shows
    here even when the copies differ in brightness, which inflates plain pixel distances.
    Compare values at the same ``max_n`` (more images have closer neighbours), and with real
    images at that ``max_n``."""
    return float(_nearest_neighbour_distances(images, max_n).mean())


@torch.no_grad()
def near_duplicate_fraction(images: Tensor, threshold: float = 0.2, max_n: int = 2000) -> float:
    """Fraction of the first ``max_n`` images whose nearest other image lies within ``threshold``
    after centring and scaling each image to unit length (0.2 is a cosine similarity of 0.98):
    near 0 for real digits, near 1 for a generator collapsed onto a few pictures."""
    return float((_nearest_neighbour_distances(images, max_n) < threshold).double().mean())
