"""The score of an energy model or of any log-density function: grad_x f(x), per sample."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["score"]


def score(energy: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool = False) -> Tensor:
    """``grad_x f(x; theta)`` for each sample, same shape as x: the score of an energy model, or
    of any function returning one log-density value per sample (the one score function).

    Uses the model's own closed form ``energy.score(x)`` when it has one and no graph through
    it is needed; otherwise autograd. With ``create_graph=True`` the result stays
    differentiable in theta (for the cross derivative of Stein score matching, Eq. 15).
    """
    # a closed form is a *method* named score on the model's class (not, say, a layer
    # that happens to be called score)
    if not create_graph and callable(getattr(type(energy), "score", None)):
        with torch.no_grad():
            closed_form: Tensor = type(energy).score(energy, x)  # type: ignore[attr-defined]
            return closed_form
    with torch.enable_grad():
        xg = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        f = energy(xg)
        (g,) = torch.autograd.grad(f.sum(), xg, create_graph=create_graph)
    return g
