"""Stein variational gradient descent: the direction phi (Eq. 4/5), a particle sampler, and
the amortized-SVGD generator loss (Eq. 21)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor

from steinebm.core.distributed import SINGLE, Ranks
from steinebm.core.kernels import RBF, Kernel
from steinebm.core.score import score

__all__ = ["svgd_direction", "SVGD", "amortized_svgd_loss"]

Normalize = Literal["m", "kernel_sum"]


def svgd_direction(
    x: Tensor, score: Tensor, kernel: Kernel, normalize: Normalize = "m", ranks: Ranks = SINGLE
) -> Tensor:
    """The Stein variational gradient phi at each particle (Eq. 5).

    ``phi(x_i) = 1/m sum_j [k(x_j, x_i) score(x_j) + grad_{x_j} k(x_j, x_i)]``

    Args:
        x: particles, (m, ...) (flattened to (m, d) by the kernel).
        score: ``grad_x log p`` at each particle (here ``grad_x f``), same shape as x.
        kernel: a :class:`~steinebm.core.kernels.Kernel`.
        normalize: ``"m"`` divides by m (the paper's Eq. 5); ``"kernel_sum"`` divides
            particle i's sum by ``sum_j k(x_j, x_i)`` (the authors' RBM SteinGAN code).
        ranks: when several processes train together, ``x`` and ``score`` are this process's
            share of the particles; they are gathered from every process, and this process's
            rows of the global phi come back (the sums over j and the median bandwidth over all
            ``world * m`` particles, exactly the one-process phi).

    Returns:
        phi, same shape as x. For the RBF kernel this costs one (m x d) @ (d x m) product for
        the distances and one (m x m) @ (m x 2d) product; no (m, m, d) tensor is formed.
    """
    if score.shape != x.shape:
        raise ValueError(f"score has shape {tuple(score.shape)} but x has {tuple(x.shape)}")
    if ranks.active:  # every particle j, this process's particles i
        phi, ksum = kernel.stein_sum(ranks.gather_rows(x), ranks.gather_rows(score), ranks.rows(x.shape[0]))
        m = x.shape[0] * ranks.world
    else:
        phi, ksum = kernel.stein_sum(x, score)  # m d: sum_j [K[j,i] s_j + grad_j K[j,i]], m
        m = x.shape[0]
    if normalize == "m":
        phi.div_(m)
    elif normalize == "kernel_sum":
        phi.div_(ksum.unsqueeze(1))
    else:
        raise ValueError(f"normalize must be 'm' or 'kernel_sum', got {normalize!r}")
    return phi.view(x.shape)


class SVGD:
    """Moves a set of particles toward a differentiable log-density by Eq. 5.

    Args:
        log_prob: maps particles (m, ...) to unnormalised log-densities (m,), e.g. an energy
            model's forward (its negative energy f).
        kernel: the kernel (default: RBF with the paper's median rule).
        step_size: epsilon in ``x <- x + epsilon * phi(x)``.
        adagrad: scale each coordinate's step by a running RMS of phi (the original SVGD
            code's AdaGrad with momentum ``alpha``); plain steps when False.

    >>> import torch
    >>> torch.manual_seed(0) is not None
    True
    >>> sampler = SVGD(lambda x: -0.5 * ((x - 3.0) ** 2).sum(1), step_size=0.5)
    >>> x = sampler.run(torch.randn(200, 1), n_steps=500)  # target N(3, 1)
    >>> abs(float(x.mean()) - 3.0) < 0.05, abs(float(x.std()) - 1.0) < 0.05
    (True, True)
    """

    def __init__(
        self,
        log_prob: Callable[[Tensor], Tensor],
        kernel: Kernel | None = None,
        step_size: float = 1e-2,
        adagrad: bool = False,
        alpha: float = 0.9,
        normalize: Normalize = "m",
    ) -> None:
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        self.log_prob = log_prob
        self.kernel = kernel if kernel is not None else RBF()
        self.step_size = step_size
        self.adagrad = adagrad
        self.alpha = alpha
        self.normalize: Normalize = normalize
        self._hist: Tensor | None = None

    def step(self, x: Tensor) -> Tensor:
        """One SVGD update; returns the moved particles (a new tensor)."""
        phi = svgd_direction(x, score(self.log_prob, x), self.kernel, self.normalize)
        if self.adagrad:
            sq = phi * phi
            self._hist = sq if self._hist is None else self.alpha * self._hist + (1 - self.alpha) * sq
            phi = phi / (1e-6 + self._hist.sqrt())
        return x.detach() + self.step_size * phi

    def run(self, x0: Tensor, n_steps: int, callback: Callable[[int, Tensor], None] | None = None) -> Tensor:
        self._hist = None
        x = x0.detach().clone()
        for t in range(n_steps):
            x = self.step(x)
            if callback is not None:
                callback(t, x)
        return x


def amortized_svgd_loss(x_generated: Tensor, phi: Tensor, reduction: str = "mean") -> Tensor:
    """A surrogate whose gradient in the generator's parameters eta is
    ``-1/m sum_i dG(xi_i; eta)/d eta^T phi(x_i)`` (Eq. 21): minimising it moves G along phi.
    ``reduction="sum"`` drops the 1/m, as the authors' code does (under Adam nearly neutral; it
    changes the balance against an L2 term added to the gradient).

    ``phi`` is held constant (detached); ``x_generated = G(xi; eta)`` carries the graph.
    """
    total = -(x_generated * phi.detach()).sum()
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return total / x_generated.shape[0]
