"""Samplers that move particles toward p(x) ∝ exp(f(x)): Langevin dynamics (for CD-k)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from steinebm.core.score import score

__all__ = ["langevin"]


def langevin(
    energy: nn.Module,
    x: Tensor,
    n_steps: int,
    step_size: float,
    noise_scale: float = 1.0,
    generator: torch.Generator | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """Unadjusted Langevin dynamics on ``p ∝ exp(f)``; returns the moved particles (detached).

    ``x <- x + (step_size / 2) grad_x f(x) + noise_scale * sqrt(step_size) * N(0, I)``

    With ``noise_scale=1`` this is the discretised Langevin diffusion whose stationary law
    tends to p as step_size -> 0; ``noise_scale=0`` gives plain gradient ascent on f.
    ``out`` (x's shape) receives the particles instead of a new tensor, e.g. the second half of
    a batch that also holds the data, so CD scores both without concatenating them.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    x = x.detach().clone() if out is None else out.copy_(x.detach())
    sd = noise_scale * math.sqrt(step_size)
    noise = torch.empty_like(x) if sd > 0 else None
    for _ in range(n_steps):
        x.add_(score(energy, x), alpha=0.5 * step_size)
        if noise is not None:
            x.add_(noise.normal_(generator=generator), alpha=sd)
    return x
