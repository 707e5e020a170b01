"""Contrastive divergence with k Langevin steps (Eq. 11)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from steinebm.core.samplers import langevin
from steinebm.learners.base import Learner, Stat, stacked_batch, stacked_contrastive_loss

__all__ = ["CD"]


class CD(Learner):
    """CD-k: negatives are k Langevin steps from the data batch (Eq. 10-11).

    ``theta <- theta + mu (mean grad f(x+) - mean grad f(x-))``, ``x- = Langevin^k(x+)``.
    """

    name = "cd"

    def __init__(self, k: int = 1, step_size: float = 1e-2, noise_scale: float = 1.0) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.step_size, self.noise_scale = k, step_size, noise_scale

    def loss(
        self, energy: nn.Module, x_pos: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Stat]]:
        both, x_neg = stacked_batch(x_pos)  # the negatives are written straight into the scored batch
        langevin(energy, x_pos, self.k, self.step_size, self.noise_scale, generator, out=x_neg)
        loss, f_pos, f_neg = stacked_contrastive_loss(energy, both, x_pos.shape[0])
        return loss, {"f_pos": f_pos.detach().mean(), "f_neg": f_neg.detach().mean()}
