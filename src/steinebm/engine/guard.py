"""The divergence guard: what makes the loop call a run diverged.

A step is diverged when a loss or a parameter is not finite, or when a part's parameters have
grown past ``diverge_growth`` times their size at initialisation (a finite blow-up: lr far too
high gives a test log-likelihood of -1e16 with every number finite). The finiteness checks stay
on the device (:class:`~steinebm.learners.rules.DivergenceWatch`); the loop reads them, and
measures the growth, only where it logs or saves: one host read per logging interval.

>>> import torch
>>> from torch import nn
>>> net = nn.Linear(2, 1)
>>> guard = DivergenceGuard({"model": net}, growth=1000.0)
>>> guard.at_step(1)
>>> with torch.no_grad():
...     _ = net.weight.fill_(float("nan"))
>>> guard.after_update()
>>> guard.check()
Traceback (most recent call last):
...
steinebm.errors.DivergenceError: non-finite parameters after the update
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from steinebm.core.distributed import SINGLE, Ranks
from steinebm.errors import DivergenceError
from steinebm.learners.rules import DivergenceWatch

__all__ = ["DivergenceGuard", "norms", "check_growth", "all_finite"]


def norms(modules: dict[str, nn.Module]) -> dict[str, Tensor]:
    """The L2 norm of each module's parameters (0-d tensors on their device: no host read)."""
    out = {}
    for name, mod in modules.items():
        params = [p.detach() for p in mod.parameters()]
        if params:
            out[name] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p) for p in params]))
    return out


def check_growth(modules: dict[str, nn.Module], init: dict[str, Tensor], growth: float) -> None:
    """Raise if some part's parameter norm exceeds ``growth`` times its norm at initialisation
    (at least 1): the shipped configs' runs stay within a few times theirs, an exploded run passes
    it by many orders of magnitude. ``growth`` 0 turns the check off."""
    if not growth:
        return
    now = norms(modules)
    names = list(init)
    if not names:
        return
    ratios = torch.stack([now[k] / init[k].clamp(min=1.0) for k in names]).tolist()  # one host read
    r, worst = max(zip(ratios, names))
    if r > growth:
        raise DivergenceError(
            f"the {worst}'s parameter norm grew to {r:.3g} times its initial one (diverge_growth={growth:g})"
        )


def all_finite(modules: dict[str, nn.Module]) -> Tensor:
    """Whether every parameter is finite, as a 0-d bool tensor on the device (no host read).

    A real parameter's smallest and largest entries are finite exactly when all its entries are
    (``aminmax`` propagates NaN, and an infinity is an extreme): one reading pass per
    parameter, about 15 times cheaper on the CPU than ``isfinite(p).all()``, which writes
    temporaries of the parameter's size on every step. (No float64: MPS has none.)"""
    flags = [
        torch.isfinite(p).all() if p.is_complex() else torch.isfinite(torch.stack(torch.aminmax(p.detach()))).all()
        for mod in modules.values()
        for p in mod.parameters()
        if p.numel()
    ]
    return torch.stack(flags).all() if flags else torch.tensor(True)


class DivergenceGuard:
    """The checks of one run's parts. ``watch`` is the rule's own (it records its losses'
    checks there); the guard adds the parameters' finiteness after each update and their growth
    against the norms measured when it was made (from the seed, before any resume, so a resumed
    run judges growth as an uninterrupted one does)."""

    def __init__(self, modules: dict[str, nn.Module], growth: float, watch: DivergenceWatch | None = None) -> None:
        self.modules, self.growth = modules, growth
        self.watch = watch if watch is not None else DivergenceWatch()
        self.init_norms = norms(modules)

    def at_step(self, step: int) -> None:
        """The step the next checks belong to (the one a failure will be named by)."""
        self.watch.at_step(step)

    def after_update(self) -> None:
        """Record, on the device, whether the update left every parameter finite."""
        self.watch.check(all_finite(self.modules), "non-finite parameters after the update")

    def check(self, ranks: Ranks = SINGLE) -> None:
        """Raise the first recorded failure on any rank (its ``step`` attribute says when), or a
        growth past the limit; called before anything is logged or saved."""
        self.watch.raise_if_failed(ranks)
        check_growth(self.modules, self.init_norms, self.growth)

    def clear(self) -> None:
        """Forget recorded failures (a rollback undoes the steps that failed)."""
        self.watch.clear()
