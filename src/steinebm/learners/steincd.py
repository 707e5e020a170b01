"""Stein contrastive divergence (Algorithm 1, Eq. 13) and its symmetric form (Eq. 17)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from steinebm.core.kernels import RBF, Kernel
from steinebm.core.score import score
from steinebm.core.svgd import Normalize, svgd_direction
from steinebm.learners.base import Learner, Stat, contrastive_loss, stacked_batch, stacked_contrastive_loss

__all__ = ["SteinCD", "SymmetricSteinCD"]


class SteinCD(Learner):
    """SteinCD: the negatives are one SVGD step from the data, ``x- = x+ + eps phi(x+)``.

    ``theta <- theta + mu/m sum_i (grad f(x+_i) - grad f(x-_i))`` (Algorithm 1). phi uses
    the batch itself as the particles (Eq. 5) and is held fixed in theta.
    """

    name = "steincd"

    def __init__(self, epsilon: float = 1e-2, kernel: Kernel | None = None, normalize: Normalize = "m") -> None:
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.epsilon = epsilon
        self.kernel = kernel if kernel is not None else RBF()
        self.normalize: Normalize = normalize

    def phi(self, energy: nn.Module, x: Tensor) -> Tensor:
        return svgd_direction(x, score(energy, x), self.kernel, self.normalize, self.ranks)

    def loss(
        self, energy: nn.Module, x_pos: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Stat]]:
        phi = self.phi(energy, x_pos)
        both, x_neg = stacked_batch(x_pos)  # x- = x+ + eps phi, written straight into the scored batch
        torch.add(x_pos.detach(), phi, alpha=self.epsilon, out=x_neg)
        loss, f_pos, f_neg = stacked_contrastive_loss(energy, both, x_pos.shape[0])
        return loss, {"f_pos": f_pos.detach().mean(), "f_neg": f_neg.detach().mean()}


class SymmetricSteinCD(SteinCD):
    """Symmetric SteinCD (Eq. 17): positives at ``x - eps phi``, negatives at ``x + eps phi``.

    Its update divided by 2 eps matches Stein score matching to second order in eps.
    """

    name = "symmetric-steincd"

    def loss(
        self, energy: nn.Module, x_pos: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Stat]]:
        phi = self.phi(energy, x_pos)
        step = self.epsilon * phi
        loss, f_pos, f_neg = contrastive_loss(energy, x_pos - step, x_pos + step)
        return loss, {"f_pos": f_pos.detach().mean(), "f_neg": f_neg.detach().mean()}
