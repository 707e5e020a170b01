"""Every learning rule as one object: the parts it trains and one update.

A :class:`Rule` holds the named modules it trains (``modules``, saved in checkpoints under those
names), their optimizers (``optimizers``), the parts it leaves as they are (``frozen``), and does
one update per call of :meth:`Rule.step` on a batch of data. The training loop sees nothing
else: it draws the batches, calls ``step``, logs, evaluates and saves. The rules of the paper:

- :class:`EnergyRule`: a :class:`~steinebm.learners.base.Learner`'s surrogate on the energy
  alone (CD-k, SteinCD, symmetric SteinCD, Stein and Hyvarinen score matching);
- :class:`SteinGANRule`: Amortized MLE (Algorithm 2) and SteinCD-GAN(alpha);
- :class:`AlternatingSteinGANRule`: SteinGAN on the step schedule of the authors' MNIST code;
- :class:`AmortizedSVGDRule`: a generator for a fixed energy (Eq. 20-21);
- :class:`DCGANRule`: the DCGAN baseline.

:mod:`steinebm.learners.registry` maps each ``method`` to the rule it builds; a new rule is one
class here (or in a module of its own) plus one :func:`~steinebm.learners.registry.register_rule`
(for a rule on the energy alone, a :class:`~steinebm.learners.base.Learner` and the entry,
which builds the :class:`EnergyRule` around it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from steinebm.core.distributed import SINGLE, Ranks
from steinebm.errors import DivergenceError, UserError
from steinebm.learners.base import Learner, Stat
from steinebm.learners.dcgan import DCGANLoss
from steinebm.learners.steingan import AlternatingSchedule, AmortizedSVGD, SteinGAN

__all__ = [
    "Rule",
    "StepOut",
    "Stat",
    "DivergenceWatch",
    "EnergyRule",
    "GeneratedBatch",
    "SteinGANRule",
    "AlternatingSteinGANRule",
    "AmortizedSVGDRule",
    "DCGANRule",
    "apply_update",
    "lr_scaled",
    "labelled",
]

StepOut = tuple[Tensor, dict[str, Stat]]  # (the step's loss, numbers for the log)


class DivergenceWatch:
    """Finiteness checks that stay on the device.

    ``check(ok, reason, value)`` records, without reading the device, the first failed check
    since the watch was last cleared: the step it came at (set by :meth:`at_step`), its reason
    and the offending value. :meth:`raise_if_failed` reads that record once (one host read, one
    collective on several processes) and raises the :class:`~steinebm.errors.DivergenceError`
    of the first failure. The training loop calls it only where it logs or saves, so a step
    makes no host read for its checks, and nothing is logged or saved after a failed step.

    >>> import torch
    >>> watch = DivergenceWatch()
    >>> for step, loss in enumerate([1.0, float("nan"), 2.0], start=1):
    ...     watch.at_step(step)
    ...     watch.check(torch.isfinite(torch.tensor(loss)), "non-finite energy loss", torch.tensor(loss))
    >>> watch.raise_if_failed()
    Traceback (most recent call last):
    ...
    steinebm.errors.DivergenceError: non-finite energy loss (nan on rank 0)
    """

    def __init__(self) -> None:
        self.step = 0
        self._reasons: list[str] = []
        self._record: Tensor | None = None  # (step, reason number, value); reason 0: none failed

    def at_step(self, step: int) -> None:
        """The step the next checks belong to."""
        self.step = step

    def check(self, ok: Tensor, reason: str, value: Tensor | None = None) -> None:
        """Record ``reason`` (and ``value``) at this step if ``ok`` (a 0-d bool tensor) is False
        and nothing failed before."""
        if reason not in self._reasons:
            self._reasons.append(reason)
        code = float(self._reasons.index(reason) + 1)
        v = value.detach().reshape(()).float() if value is not None else torch.zeros((), device=ok.device)
        new = torch.stack([torch.full_like(v, float(self.step)), torch.full_like(v, code), v])
        if self._record is None:
            self._record = torch.zeros(3, device=ok.device)
        take = ~ok.reshape(()) & (self._record[1] == 0)
        self._record = torch.where(take, new, self._record)

    def clear(self) -> None:
        """Forget what was recorded (after a rollback, the failed steps are undone)."""
        self._record = None

    def first_failure(self, ranks: Ranks = SINGLE) -> tuple[int, str] | None:
        """(step, message) of the earliest failure on any rank, else None: one host read."""
        rec = self._record if self._record is not None else torch.zeros(3)
        rows = ranks.gather_rows(rec.reshape(1, 3)) if ranks.active else rec.reshape(1, 3)
        failed = [(int(s), r, int(c), v) for r, (s, c, v) in enumerate(rows.tolist()) if c > 0]
        if not failed:
            return None
        step, rank, code, value = min(failed)
        reason = self._reasons[code - 1]
        return step, reason if reason.startswith("non-finite parameters") else f"{reason} ({value} on rank {rank})"

    def raise_if_failed(self, ranks: Ranks = SINGLE) -> None:
        """Raise the first recorded failure (its ``step`` attribute says when), else nothing."""
        found = self.first_failure(ranks)
        if found is not None:
            err = DivergenceError(found[1])
            err.step = found[0]  # type: ignore[attr-defined]
            raise err


def apply_update(
    loss: Tensor,
    opt: torch.optim.Optimizer,
    what: str,
    ranks: Ranks = SINGLE,
    watch: DivergenceWatch | None = None,
) -> None:
    """One optimizer step on one surrogate loss, its gradient averaged over ranks. A non-finite
    loss is recorded in ``watch`` (raised where the loop next logs or saves); without a watch it
    stops the run on every rank at once (one host read)."""
    if watch is not None:
        watch.check(torch.isfinite(loss), f"non-finite {what} loss", loss)
    elif not ranks.all_true(torch.isfinite(loss)):
        raise DivergenceError(f"non-finite {what} loss ({float(loss.detach())} on rank {ranks.rank})")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    ranks.average_gradients(p for group in opt.param_groups for p in group["params"])
    opt.step()


@contextmanager
def lr_scaled(opt: torch.optim.Optimizer, factor: float) -> Iterator[None]:
    """Every learning rate of ``opt`` times ``factor`` for one step, then back: a rule's or a
    schedule's factor leaves the rates a rollback lowered as they are."""
    if factor == 1.0:
        yield
        return
    saved = [group["lr"] for group in opt.param_groups]
    for group in opt.param_groups:
        group["lr"] = group["lr"] * factor
    try:
        yield
    finally:
        for group, lr in zip(opt.param_groups, saved):
            group["lr"] = lr


class Rule:
    """A learning rule: the named parts it trains, their optimizers, and one update per batch.

    ``step(x_pos, rng, y_pos)`` takes the real batch (m, ...), the rule's random stream and the
    batch's labels (m,) or None, updates the parts once and returns ``(loss, stats)``. Its
    updates go through :func:`apply_update` with the rule's ``watch``, which keeps the finiteness
    checks on the device until the loop reads them.
    """

    def __init__(
        self,
        modules: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        frozen: set[str] | None = None,
    ) -> None:
        self.modules, self.optimizers, self.frozen = modules, optimizers, set(frozen or ())
        self.watch = DivergenceWatch()

    def step(self, x_pos: Tensor, rng: torch.Generator, y_pos: Tensor | None = None) -> StepOut:
        raise NotImplementedError


class EnergyRule(Rule):
    """A :class:`Learner` on the energy alone: ``theta <- theta - lr * grad(surrogate)``."""

    def __init__(self, learner: Learner, model: nn.Module, opt: torch.optim.Optimizer, ranks: Ranks = SINGLE):
        super().__init__({"model": model}, {"optimizer": opt})
        learner.ranks = ranks  # phi over every process's particles
        self.learner, self.model, self.opt, self.ranks = learner, model, opt, ranks

    def step(self, x_pos: Tensor, rng: torch.Generator, y_pos: Tensor | None = None) -> StepOut:
        loss, stats = self.learner.loss(self.model, x_pos, rng)
        apply_update(loss, self.opt, "energy", self.ranks, self.watch)
        return loss, stats


def _need_labels(y_pos: Tensor | None) -> Tensor:
    if y_pos is None:
        raise UserError("the joint image-label energy needs a labelled dataset")
    return y_pos


class GeneratedBatch:
    """Draws x- = G(xi) (Algorithm 2, step 2) for a rule: ``m`` particles on this process, and
    for a class-conditional G (one with ``sample_labels``) the labels it was given, drawn from
    its label frequencies or (``labels="batch"``) the real batch's own."""

    def __init__(self, G: nn.Module, m: int, labels: str = "drawn") -> None:
        self.G, self.m, self.labels = G, m, labels
        self.conditional = hasattr(G, "sample_labels")

    def __call__(self, rng: torch.Generator, y_pos: Tensor | None) -> tuple[Tensor, Tensor | None]:
        gen: Any = self.G
        if self.conditional:
            xi, y = gen.sample_noise(self.m, rng)
            if self.labels == "batch":
                y = _need_labels(y_pos)
            return gen(xi, y), y
        return gen(gen.sample_noise(self.m, rng)), None


def labelled(model: nn.Module, y: Tensor | None) -> nn.Module:
    """The energy as a function of x alone: f(., y) for the joint energy, else the energy."""
    if y is None:
        return model
    return model.given(y)  # type: ignore[operator]


class SteinGANRule(Rule):
    """Amortized MLE (Algorithm 2), and SteinCD-GAN(alpha) when ``sg.alpha > 0``: per batch,
    the generator step on its samples, then the energy step on the same (pre-update) samples or,
    with probability alpha, a SteinCD step (through ``opt_cd``, its own Adam state if given)."""

    def __init__(
        self,
        sg: SteinGAN,
        model: nn.Module,
        G: nn.Module,
        opt: torch.optim.Optimizer,
        opt_g: torch.optim.Optimizer,
        draw: GeneratedBatch,
        ranks: Ranks = SINGLE,
        opt_cd: torch.optim.Optimizer | None = None,
    ) -> None:
        optimizers = {"optimizer": opt, "gen_optimizer": opt_g}
        if opt_cd is not None and opt_cd is not opt:
            optimizers["cd_optimizer"] = opt_cd
        super().__init__({"model": model, "generator": G}, optimizers)
        self.sg, self.model, self.opt, self.opt_g, self.draw, self.ranks = sg, model, opt, opt_g, draw, ranks
        self.opt_cd = opt_cd or opt

    def step(self, x_pos: Tensor, rng: torch.Generator, y_pos: Tensor | None = None) -> StepOut:
        x_gen, y_gen = self.draw(rng, y_pos)  # Algorithm 2, step 2
        g_loss, gstats = self.sg.generator_loss(labelled(self.model, y_gen), x_gen)  # step 3
        apply_update(g_loss, self.opt_g, "generator", self.ranks, self.watch)
        steincd = self.ranks.agree(self.sg.use_steincd(rng))  # every rank takes rank 0's coin
        # step 4; the joint energy sees each image with its own label
        energy_pos = labelled(self.model, None if y_gen is None else _need_labels(y_pos))
        e_loss, stats = self.sg.energy_loss(energy_pos, x_pos, x_gen, steincd, labelled(self.model, y_gen))
        apply_update(e_loss, self.opt_cd if steincd else self.opt, "energy", self.ranks, self.watch)
        return e_loss, {**stats, **gstats, "g_loss": g_loss.detach()}


class AlternatingSteinGANRule(Rule):
    """SteinGAN on the :class:`AlternatingSchedule` of the authors' MNIST code: each batch takes
    the generator step or the energy step (with the schedule's discount and learning-rate factor);
    the reconstruction costs of both batches then set the next step. The schedule is a part
    (``"schedule"``), so checkpoints keep its state."""

    def __init__(
        self,
        sg: SteinGAN,
        schedule: AlternatingSchedule,
        model: nn.Module,
        G: nn.Module,
        opt: torch.optim.Optimizer,
        opt_g: torch.optim.Optimizer,
        draw: GeneratedBatch,
        ranks: Ranks = SINGLE,
    ) -> None:
        if not hasattr(model, "reconstruction_error"):
            raise UserError("the alternating schedule compares reconstruction costs: use model=autoencoder or joint")
        super().__init__(
            {"model": model, "generator": G, "schedule": schedule}, {"optimizer": opt, "gen_optimizer": opt_g}
        )
        self.sg, self.schedule, self.model, self.opt, self.opt_g = sg, schedule, model, opt, opt_g
        self.draw, self.ranks = draw, ranks

    def step(self, x_pos: Tensor, rng: torch.Generator, y_pos: Tensor | None = None) -> StepOut:
        x_gen, y_gen = self.draw(rng, y_pos)  # one batch of samples, for whichever step this is
        if self.schedule.generator_turn():
            loss, stats = self.sg.generator_loss(labelled(self.model, y_gen), x_gen)
            apply_update(loss, self.opt_g, "generator", self.ranks, self.watch)
            stats["g_loss"] = loss.detach()
        else:
            energy_pos = labelled(self.model, None if y_gen is None else _need_labels(y_pos))
            gamma = self.schedule.gamma_now()
            loss, stats = self.sg.energy_loss(energy_pos, x_pos, x_gen, False, labelled(self.model, y_gen), gamma)
            with lr_scaled(self.opt, self.schedule.energy_lr_factor()):
                apply_update(loss, self.opt, "energy", self.ranks, self.watch)
        cost: Any = self.model.reconstruction_error
        with torch.no_grad():  # the next step's rules, from this step's batches (input dropout on)
            costs = torch.stack([cost(x_pos).mean(), cost(x_gen.detach()).mean()])
        c_real, c_gen = self.ranks.mean_tensor(costs).tolist()
        self.schedule.after(c_real, c_gen)
        return loss, {**stats, "cost_real": c_real, "cost_gen": c_gen}


class AmortizedSVGDRule(Rule):
    """A generator for a fixed energy (Eq. 20-21): the energy is a frozen part."""

    def __init__(
        self,
        amortized: AmortizedSVGD,
        model: nn.Module,
        G: nn.Module,
        opt_g: torch.optim.Optimizer,
        draw: GeneratedBatch,
        ranks: Ranks = SINGLE,
    ) -> None:
        super().__init__({"model": model, "generator": G}, {"gen_optimizer": opt_g}, frozen={"model"})
        self.amortized, self.model, self.opt_g, self.draw, self.ranks = amortized, model, opt_g, draw, ranks

    def step(self, x_pos: Tensor, rng: torch.Generator, y_pos: Tensor | None = None) -> StepOut:
        x_gen, y_gen = self.draw(rng, y_pos)
        g_loss, stats = self.amortized.loss(labelled(self.model, y_gen), x_gen)
        apply_update(g_loss, self.opt_g, "generator", self.ranks, self.watch)
        return g_loss, stats


class DCGANRule(Rule):
    """The DCGAN baseline: the discriminator step, then the generator step (non-saturating)."""

    def __init__(
        self,
        model: nn.Module,
        G: nn.Module,
        opt_d: torch.optim.Optimizer,
        opt_g: torch.optim.Optimizer,
        draw: GeneratedBatch,
        ranks: Ranks = SINGLE,
    ) -> None:
        super().__init__({"model": model, "generator": G}, {"optimizer": opt_d, "gen_optimizer": opt_g})
        self.model, self.opt_d, self.opt_g, self.draw, self.ranks = model, opt_d, opt_g, draw, ranks

    def step(self, x_pos: Tensor, rng: torch.Generator, y_pos: Tensor | None = None) -> StepOut:
        D = self.model
        x_gen, y_gen = self.draw(rng, y_pos)
        if y_gen is None:
            d_real, d_fake = D(x_pos), D(x_gen.detach())
        else:  # the conditional baseline: D sees each image with its label
            d_real, d_fake = D(x_pos, _need_labels(y_pos)), D(x_gen.detach(), y_gen)
        d_loss = DCGANLoss.discriminator_loss(d_real, d_fake)
        apply_update(d_loss, self.opt_d, "discriminator", self.ranks, self.watch)
        g_loss = DCGANLoss.generator_loss(D(x_gen) if y_gen is None else D(x_gen, y_gen))
        apply_update(g_loss, self.opt_g, "generator", self.ranks, self.watch)
        return d_loss, {"g_loss": g_loss.detach()}
