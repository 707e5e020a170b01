"""Stein score matching (Eq. 15) and Hyvärinen's score matching (Eq. 18)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from steinebm.core.kernels import RBF, Kernel
from steinebm.core.score import score
from steinebm.core.svgd import Normalize, svgd_direction
from steinebm.learners.base import Learner, Stat

__all__ = ["SteinScoreMatching", "HyvarinenScoreMatching"]


class SteinScoreMatching(Learner):
    """Stein score matching: ``theta <- theta - mu E[grad_theta grad_x f(x; theta) phi(x)]`` (Eq. 15).

    The cross derivative is exact: the surrogate ``mean_i <grad_x f(x_i; theta), phi(x_i)>``
    with phi held fixed is differentiated in theta by double back-propagation.
    """

    name = "stein-score-matching"

    def __init__(self, kernel: Kernel | None = None, normalize: Normalize = "m") -> None:
        self.kernel = kernel if kernel is not None else RBF()
        self.normalize: Normalize = normalize

    def loss(
        self, energy: nn.Module, x_pos: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Stat]]:
        s = score(energy, x_pos, create_graph=True)  # m ..., differentiable in theta
        phi = svgd_direction(x_pos, s.detach(), self.kernel, self.normalize, self.ranks)
        m = x_pos.shape[0]
        loss = (s * phi).sum() / m
        return loss, {"stein_objective": loss.detach()}


class HyvarinenScoreMatching(Learner):
    """Hyvärinen's score matching: minimise ``E[1/2 ||grad_x f||^2 + tr(grad_x^2 f)]`` (Eq. 18).

    The Hessian trace is exact (d extra backward passes) when ``n_probes`` is 0, else
    Hutchinson's estimate with that many Rademacher probes drawn from ``generator``.
    """

    name = "score-matching"

    def __init__(self, n_probes: int = 1) -> None:
        if n_probes < 0:
            raise ValueError(f"n_probes must be >= 0, got {n_probes}")
        self.n_probes = n_probes

    def loss(
        self, energy: nn.Module, x_pos: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Stat]]:
        m = x_pos.shape[0]
        x = x_pos.detach().reshape(m, -1).requires_grad_(True)
        shape = x_pos.shape
        s = torch.autograd.grad(energy(x.view(shape)).sum(), x, create_graph=True)[0]  # m d
        if self.n_probes == 0:
            tr = x.new_zeros(m)
            for k in range(x.shape[1]):
                tr = tr + torch.autograd.grad(s[:, k].sum(), x, create_graph=True)[0][:, k]
        else:
            tr = x.new_zeros(m)
            for _ in range(self.n_probes):
                v = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
                hv = torch.autograd.grad((s * v).sum(), x, create_graph=True)[0]
                tr = tr + (hv * v).sum(1)
            tr = tr / self.n_probes
        obj = (0.5 * (s * s).sum(1) + tr).mean()
        return obj, {"fisher_objective": obj.detach()}
