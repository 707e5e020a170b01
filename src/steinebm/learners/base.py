"""The interface every learning rule implements."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from steinebm.core.distributed import SINGLE, Ranks

__all__ = ["Learner", "Stat", "contrastive_loss", "stacked_batch", "stacked_contrastive_loss"]

# A number for the log: a Python float, or a 0-d tensor that stays on its device until the loop
# writes a log line (reading it at every step would stall a GPU step on the host).
Stat = float | Tensor


class Learner:
    """One step of a learning rule = one surrogate loss on one data batch.

    ``loss(energy, x_pos, generator)`` returns ``(loss, stats)``: ``loss`` is a scalar whose
    gradient in the energy's parameters is minus the update of the paper (averaged over the
    batch), and ``stats`` a dict of numbers for the log (floats, or 0-d tensors read only when
    the loop writes a log line). Random draws use ``generator``.

    ``ranks`` says which processes train together (:class:`~steinebm.learners.rules.EnergyRule`
    sets it): a rule built on SVGD's phi computes it over all of their particles.
    """

    name = "learner"
    ranks: Ranks = SINGLE

    def loss(
        self, energy: nn.Module, x_pos: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Stat]]:
        raise NotImplementedError


def contrastive_loss(energy: nn.Module, x_pos: Tensor, x_neg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``-(mean f(x+) - mean f(x-))``: its theta-gradient is minus Eq. 11/13's update.

    Positives and negatives go through the model in one batch (one forward, one backward).
    """
    return stacked_contrastive_loss(energy, torch.cat([x_pos, x_neg.detach()]), x_pos.shape[0])


def stacked_batch(x_pos: Tensor) -> tuple[Tensor, Tensor]:
    """A (2m, ...) batch whose first half holds ``x_pos``, and its empty second half, where a
    learner writes its negatives: one forward pass scores both, with no concatenation."""
    m = x_pos.shape[0]
    both = torch.empty((2 * m, *x_pos.shape[1:]), dtype=x_pos.dtype, device=x_pos.device)
    both[:m] = x_pos.detach()
    return both, both[m:]


def stacked_contrastive_loss(energy: nn.Module, both: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`contrastive_loss` for positives ``both[:m]`` and negatives ``both[m:]``."""
    f = energy(both)
    f_pos, f_neg = f[:m], f[m:]
    return f_neg.mean() - f_pos.mean(), f_pos, f_neg
