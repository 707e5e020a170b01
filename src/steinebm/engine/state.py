"""The loop's state and the checkpoint dict.

A checkpoint is one dict: each part's ``state_dict`` under its name (``model``, ``generator``),
each optimizer's under its name (``optimizer``, ``gen_optimizer``, ...; their learning rates
included), and the loop's :class:`LoopState` (the step, the rollbacks made, the time trained, the
training-loss window since the last log line), every rank's random stream, the config and the
data's shape. Resuming restores all of it, so a resumed run ends bit-identical (on the CPU) to
one never interrupted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steinebm.core.distributed import Ranks
from steinebm.engine.checkpoint import VERSION
from steinebm.engine.config import Config
from steinebm.learners.rules import Rule

__all__ = ["LoopState", "rank_seed", "checkpoint_dict", "restore"]


@dataclass
class LoopState:
    """What the loop carries from step to step besides the parts."""

    step: int = 0
    rollbacks: int = 0  # of the whole run, resumes included: max_rollbacks bounds them all
    started: float = 0.0  # time.time() at the run's start, moved back by the time trained before a resume
    # the training loss summed since the last log line, kept on the device (a tensor after the
    # first step) and read once per log line; saved too, so a resumed run's next line averages
    # the same steps as an uninterrupted run's
    loss_sum: float | Tensor = 0.0
    loss_n: int = 0

    def add_loss(self, loss: Tensor) -> None:
        self.loss_sum = self.loss_sum + loss.detach()
        self.loss_n += 1

    def take_mean_loss(self) -> float:
        """The window's mean training loss (one host read), and a new window."""
        mean = float(self.loss_sum) / self.loss_n
        self.loss_sum, self.loss_n = 0.0, 0
        return mean

    def elapsed(self) -> float:
        """Seconds of training, across resumes."""
        return time.time() - self.started


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of a rank's random stream from ``step`` on: rank 0 of a fresh run draws exactly
    what a one-process run draws."""
    return seed + 1 + 1_000_003 * rank + 7_919 * step


def checkpoint_dict(
    parts: Rule,
    state: LoopState,
    rng: torch.Generator,
    ranks: Ranks,
    cfg: Config,
    dim: int,
    image_shape: tuple[int, ...],
) -> dict[str, Any] | None:
    """The checkpoint of the run as it stands, on rank 0 (None on the others). A collective:
    every rank calls it, since rank 0 keeps every rank's random stream and loss window."""
    gathered: list[Any] = ranks.gather_objects((rng.get_state(), float(state.loss_sum), state.loss_n))
    if not ranks.is_main:
        return None
    return {
        "version": VERSION,
        **{name: mod.state_dict() for name, mod in parts.modules.items()},
        **{name: opt.state_dict() for name, opt in parts.optimizers.items()},
        "step": state.step,
        "rng": rng.get_state(),
        "rng_ranks": [g[0] for g in gathered],
        "loss_windows": [[g[1], g[2]] for g in gathered],
        "rollbacks": state.rollbacks,
        "config": cfg.to_dict(),
        "dim": dim,
        "image_shape": list(image_shape),
        "elapsed": state.elapsed(),
    }


def restore(parts: Rule, ck: dict[str, Any], rng: torch.Generator, ranks: Ranks, state: LoopState, seed: int) -> None:
    """Load the modules and optimizers (learning rates included), this rank's random stream and
    loss window, and the step, from a checkpoint (the rollbacks and time are the caller's to take:
    a rollback keeps its own count)."""
    for name, mod in parts.modules.items():
        mod.load_state_dict(ck[name])
    for name, opt in parts.optimizers.items():
        opt.load_state_dict(ck[name])
    state.step = int(ck["step"])
    saved = ck.get("rng_ranks") or [ck["rng"]]
    if ranks.rank < len(saved):
        rng.set_state(saved[ranks.rank])
    else:  # more processes than when it was saved: a fresh stream for this rank
        rng.manual_seed(rank_seed(seed, ranks.rank, state.step))
    windows = ck.get("loss_windows") or []
    state.loss_sum, state.loss_n = (
        (float(windows[ranks.rank][0]), int(windows[ranks.rank][1])) if ranks.rank < len(windows) else (0.0, 0)
    )
