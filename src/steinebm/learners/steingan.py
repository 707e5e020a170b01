"""Amortized SVGD (Eq. 21), Amortized MLE / SteinGAN (Algorithm 2) with the stabilisation of
Section 5.2, and SteinCD-GAN(alpha). The DCGAN baseline's losses are in
:mod:`steinebm.learners.dcgan`."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from steinebm.core.distributed import SINGLE, Ranks
from steinebm.core.kernels import RBF, Kernel
from steinebm.core.score import score
from steinebm.core.svgd import Normalize, amortized_svgd_loss, svgd_direction
from steinebm.learners.base import Stat
from steinebm.learners.steincd import SteinCD
from steinebm.precision import wide_dtype

__all__ = ["AmortizedSVGD", "SteinGAN", "AlternatingSchedule"]


class AmortizedSVGD:
    """Moves a generator along the SVGD direction of its own batch (Eq. 20-21).

    ``loss(energy, x_gen)`` returns a surrogate whose gradient in eta is
    ``-1/m sum_i dG(xi_i)/d eta^T phi(x_i)``, phi computed on the (detached) generated batch
    with ``energy``'s score. With one particle, or with :class:`~steinebm.ConstantKernel`
    (the paper's "without kernel" ablation, amortized MAP), phi is the score (mean score).

    On several processes (``ranks``) phi is computed over all their particles, and the summed
    loss is scaled by the number of processes, so that the gradients averaged over processes
    are the one-process gradient of the whole batch.
    """

    def __init__(
        self, kernel: Kernel | None = None, normalize: Normalize = "m", reduction: str = "mean", ranks: Ranks = SINGLE
    ) -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.kernel = kernel if kernel is not None else RBF()
        self.normalize: Normalize = normalize
        self.reduction = reduction  # "sum": the authors' code's generator loss (no 1/m)
        self.ranks = ranks

    def loss(self, energy: nn.Module, x_gen: Tensor) -> tuple[Tensor, dict[str, Stat]]:
        x = x_gen.detach()
        phi = svgd_direction(x, score(energy, x), self.kernel, self.normalize, self.ranks)
        loss = amortized_svgd_loss(x_gen, phi, self.reduction)
        if self.reduction == "sum" and self.ranks.active:  # the mean over ranks undoes the sum
            loss = loss * self.ranks.world
        return loss, {"phi_norm": phi.flatten(1).norm(dim=1).mean()}


class SteinGAN:
    """Amortized MLE (Algorithm 2), optionally mixed with SteinCD (SteinCD-GAN(alpha)).

    One iteration: draw x- = G(xi); update G by :class:`AmortizedSVGD`; update theta by
    ``theta <- theta + mu/m sum_i (grad f(x+_i) - (1 - gamma) grad f(x-_i))`` (Eq. 23 with the
    discount of Section 5.2). With ``gamma_adaptive`` set, gamma is raised to that value for
    the steps where ``gamma_raise_when`` holds:

    - ``"real_energy_higher"`` (default, the paper's text): the real batch's energy exceeds the
      generated batch's, mean f(x+) < mean f(x-);
    - ``"real_energy_lower"`` (the authors' CIFAR-10 code, whose weight on the generated batch
      is 0.1 while the real data's reconstruction error is the lower and 0.3 otherwise): mean
      f(x+) > mean f(x-), which is the usual state, so gamma_adaptive is in force most of the
      time and the push on generated images is strongest when they outscore the real ones.

    With probability ``alpha`` a step's negatives are SteinCD's ``x+ + eps phi(x+)`` instead (no
    discount then), so alpha = 1 is SteinCD and alpha = 0 SteinGAN.
    """

    def __init__(
        self,
        kernel: Kernel | None = None,
        gamma: float = 0.0,
        gamma_adaptive: float | None = None,
        alpha: float = 0.0,
        epsilon: float = 1e-2,
        cd_kernel: Kernel | None = None,
        normalize: Normalize = "m",
        gamma_raise_when: str = "real_energy_higher",
        gen_loss: str = "mean",
        ranks: Ranks = SINGLE,
    ) -> None:
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma}")
        if gamma_adaptive is not None and not gamma <= gamma_adaptive < 1.0:
            raise ValueError(f"gamma_adaptive must be in [gamma, 1), got {gamma_adaptive}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if gamma_raise_when not in ("real_energy_higher", "real_energy_lower"):
            raise ValueError(
                f"gamma_raise_when must be 'real_energy_higher' or 'real_energy_lower', got {gamma_raise_when!r}"
            )
        self.gamma_raise_when = gamma_raise_when
        self.generator_update = AmortizedSVGD(kernel, normalize, gen_loss, ranks)
        self.gamma, self.gamma_adaptive, self.alpha, self.epsilon = gamma, gamma_adaptive, alpha, epsilon
        self.steincd = SteinCD(epsilon, cd_kernel, normalize)  # the negatives of a SteinCD step
        self.steincd.ranks = self.ranks = ranks
        self.normalize: Normalize = normalize

    def generator_loss(self, energy: nn.Module, x_gen: Tensor) -> tuple[Tensor, dict[str, Stat]]:
        return self.generator_update.loss(energy, x_gen)

    def use_steincd(self, generator: torch.Generator | None = None) -> bool:
        """The step's coin: True with probability alpha (drawn from ``generator``)."""
        if self.alpha <= 0.0:
            return False
        if self.alpha >= 1.0:
            return True
        device = generator.device if generator is not None else None
        return bool(torch.rand((), generator=generator, device=device) < self.alpha)

    def energy_loss(
        self,
        energy: nn.Module,
        x_pos: Tensor,
        x_gen: Tensor,
        steincd: bool,
        energy_gen: nn.Module | None = None,
        gamma: float | None = None,
    ) -> tuple[Tensor, dict[str, Stat]]:
        """Surrogate whose theta-gradient is minus the energy update above; ``gamma``, where
        given, is the discount of this step (set by an :class:`AlternatingSchedule`) instead of
        the adaptive rule's.

        ``energy`` scores the real batch (and SteinCD's negatives, made from it); ``energy_gen``
        (default ``energy``) the generated batch, e.g. the joint energy given the generated
        labels. The two batches go through the energy in separate passes: an energy with
        BatchNorm then normalises the generated batch by its own statistics, exactly as when
        the generator's phi is computed on it, instead of by statistics pooled with the real
        batch (which let the energy tell the batches apart by their statistics alone).
        """
        if steincd:
            x_neg = (x_pos + self.epsilon * self.steincd.phi(energy, x_pos)).detach()
            f_neg = energy(x_neg).mean()
        else:
            x_neg = x_gen.detach().reshape(x_pos.shape)
            f_neg = (energy if energy_gen is None else energy_gen)(x_neg).mean()
        f_pos = energy(x_pos).mean()
        gamma_now: Stat
        if steincd:
            gamma_now = 0.0
            loss = f_neg - f_pos
        elif gamma is not None or self.gamma_adaptive is None:
            gamma_now = self.gamma if gamma is None else gamma
            loss = (1.0 - gamma_now) * f_neg - f_pos
        else:
            # The adaptive rule decides on the device (no host read, so a GPU step does not
            # stall): the batch means over every process, so all decide alike, as one would.
            means = self.ranks.mean_tensor(torch.stack([f_pos.detach(), f_neg.detach()]))
            raised = means[0] < means[1]  # the real batch's energy is the higher
            if self.gamma_raise_when == "real_energy_lower":
                raised = ~raised
            # float64 keeps gamma as the float it is; MPS has no float64 (the loop logs in float32 there)
            wide = wide_dtype(f_neg.device)
            pick = functools.partial(torch.tensor, dtype=wide, device=f_neg.device)
            gamma_now = torch.where(raised, pick(self.gamma_adaptive), pick(self.gamma))
            # 1 - gamma in float64, then in f_neg's precision: the weight a Python float would give
            weight = torch.where(raised, pick(1.0 - self.gamma_adaptive), pick(1.0 - self.gamma)).to(f_neg.dtype)
            loss = weight * f_neg - f_pos
        stats = {
            "f_pos": f_pos.detach(),
            "f_neg": f_neg.detach(),
            "gamma": gamma_now,
            "steincd": float(steincd),
        }
        return loss, stats


class AlternatingSchedule(nn.Module):
    """The step schedule of the authors' MNIST SteinGAN (``mnist_steingan.py``), with its state.

    Instead of Algorithm 2's generator step then energy step on every batch, each batch takes
    one of them, and three rules set the next step from the reconstruction costs
    ``c+ = mean ||x+ - D(E(x+))||`` and ``c- = mean ||x- - D(E(x-))||`` of the step's real and
    generated batches (measured after its update, as their code does):

    - alternation: a counter of updates; an even count is a generator step, an odd one an energy
      step. After every step, while ``c- > c+ + skip_margin`` the counter jumps to the next even
      number, so energy steps are skipped until the generator catches up;
    - discount: the energy step's weight on the generated batch is ``1 - gamma_raised`` (their
      0.1) when ``c+ <= c-``, else ``1 - gamma`` (their 0.3);
    - learning rate: when ``c+ > c-``, the energy's learning rate is ``lr_boost`` times its own
      (their 5).

    Its state (the counter and the last comparison) is saved in checkpoints as buffers.

    >>> s = AlternatingSchedule(gamma=0.7, gamma_raised=0.9, lr_boost=5.0, skip_margin=0.5)
    >>> s.generator_turn(), s.gamma_now(), s.energy_lr_factor()
    (True, 0.7, 1.0)
    >>> s.after(cost_real=3.0, cost_gen=2.0)  # real cost higher: boost, no raise
    >>> s.generator_turn(), s.gamma_now(), s.energy_lr_factor()
    (False, 0.7, 5.0)
    >>> s.after(cost_real=2.0, cost_gen=4.0)  # generated far worse: skip to a generator step
    >>> s.generator_turn(), s.gamma_now(), s.energy_lr_factor()
    (True, 0.9, 1.0)
    """

    updates: Tensor
    real_higher: Tensor

    def __init__(self, gamma: float, gamma_raised: float, lr_boost: float = 1.0, skip_margin: float | None = None):
        super().__init__()
        self.gamma, self.gamma_raised, self.lr_boost, self.skip_margin = gamma, gamma_raised, lr_boost, skip_margin
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        # c+ > c- at the last step; their code starts with the weight 0.3 and no boost
        self.register_buffer("real_higher", torch.zeros((), dtype=torch.bool))

    def generator_turn(self) -> bool:
        return int(self.updates) % 2 == 0

    def gamma_now(self) -> float:
        if int(self.updates) == 0:
            return self.gamma
        return self.gamma if bool(self.real_higher) else self.gamma_raised

    def energy_lr_factor(self) -> float:
        return self.lr_boost if bool(self.real_higher) else 1.0

    def after(self, cost_real: float, cost_gen: float) -> None:
        """Count the step just taken and set the next one from its batches' costs."""
        n = int(self.updates) + 1
        if self.skip_margin is not None and cost_gen > cost_real + self.skip_margin:
            n += 2 - n % 2
        self.updates.fill_(n)
        self.real_higher.fill_(cost_real > cost_gen)
