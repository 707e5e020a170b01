"""Samplers that move particles toward p(x) ∝ exp(f(x)): Langevin dynamics (for CD-k)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .energies.base import score

__all__ = ["langevin"]


def langevin(
    energy: nn.Module,
    x: Tensor,
    n_steps: int,
    step_size: float,
    noise_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unadjusted Langevin dynamics on ``p ∝ exp(f)``; returns the moved particles (detached).

    ``x <- x + (step_size / 2) grad_x f(x) + noise_scale * sqrt(step_size) * N(0, I)``

    With ``noise_scale=1`` this is the discretised Langevin diffusion whose stationary law
    tends to p as step_size -> 0; ``noise_scale=0`` gives plain gradient ascent on f.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    x = x.detach().clone()
    sd = noise_scale * math.sqrt(step_size)
    for _ in range(n_steps):
        x.add_(score(energy, x), alpha=0.5 * step_size)
        if sd > 0:
            x.add_(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype), alpha=sd)
    return x
