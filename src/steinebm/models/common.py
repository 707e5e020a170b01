"""What the MNIST and DCGAN networks share: the paper's noise prior, its N(0, 0.02)
initialisation, the parameter count of Table 1, the label sampler of the class-conditional
generators, and drawing images from any generator (a grid's worth, or a latent random walk).

Any ``nn.Module`` mapping noise (m, noise_dim) to samples works as a generator; it only needs
``noise_dim`` and, optionally, ``sample_noise`` (and ``n_classes`` with a second argument, the
labels, when it is class-conditional)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steinebm.precision import wide_dtype

__all__ = [
    "uniform_noise",
    "init_normal_002",
    "seeded",
    "init_seeded",
    "count_parameters",
    "LabelSampler",
    "draw_samples",
    "latent_walk",
]


def uniform_noise(
    m: int, dim: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """xi ~ U(-1, 1)^dim, (m, dim): the paper's noise prior."""
    return torch.rand(m, dim, generator=generator, device=device) * 2.0 - 1.0


def init_normal_002(module: nn.Module) -> None:
    """Weights N(0, 0.02) (Section 5.2), BatchNorm scales N(1, 0.02), biases 0."""
    for mod in module.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(mod.weight, 0.0, 0.02)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)) and mod.affine:
            nn.init.normal_(mod.weight, 1.0, 0.02)
            nn.init.zeros_(mod.bias)


@contextmanager
def seeded(generator: torch.Generator | None) -> Iterator[None]:
    """Builds and initialises a network from ``generator``'s stream: the layers' default init
    and the N(0, 0.02) one run on a forked global RNG seeded from it, so the global stream is
    left as it was. Without a generator they draw from (and advance) the global stream."""
    if generator is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        yield


def init_seeded(module: nn.Module, generator: torch.Generator | None) -> None:
    """:func:`init_normal_002` on a forked global random stream, seeded from ``generator`` when
    one is given: the global stream is left as it was either way."""
    with torch.random.fork_rng(devices=[]):
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        init_normal_002(module)


def count_parameters(module: nn.Module) -> int:
    """The number of parameter values of ``module`` (trainable or not), as Table 1 counts them."""
    return sum(p.numel() for p in module.parameters())


class LabelSampler(nn.Module):
    """Labels for a class-conditional generator, drawn "according to the empirical counts in
    the dataset" (Section 5.2): ``class_probs`` is a buffer (saved with the model), uniform until
    :meth:`set_class_counts` is given the training set's counts."""

    class_probs: Tensor
    n_classes: int

    def _init_labels(self, n_classes: int, class_counts: Sequence[float] | Tensor | None = None) -> None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be positive, got {n_classes}")
        self.n_classes = n_classes
        self.register_buffer("class_probs", torch.full((n_classes,), 1.0 / n_classes))
        if class_counts is not None:
            self.set_class_counts(class_counts)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def set_class_counts(self, class_counts: Sequence[float] | Tensor) -> None:
        """Draw labels with frequencies proportional to ``class_counts`` (length n_classes)."""
        c = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
        if c.numel() != self.n_classes or not bool((c >= 0).all()) or not float(c.sum()) > 0:
            raise ValueError(f"class_counts must be {self.n_classes} non-negative numbers, not all 0")
        self.class_probs.copy_((c / c.sum()).to(self.class_probs))

    def sample_labels(self, m: int, generator: torch.Generator | None = None) -> Tensor:
        """y ~ class_probs, (m,) int64 on the generator's device (drawn on ``generator``'s device)."""
        gdev = generator.device if generator is not None else torch.device("cpu")
        probs = self.class_probs.detach().to(gdev, wide_dtype(gdev))
        y = torch.multinomial(probs, m, replacement=True, generator=generator)
        return y.to(self._device())

    def one_hot(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        """Integer labels (m,) as one-hot rows (m, n_classes); float labels pass as they are."""
        if y.dim() == 1:
            y = F.one_hot(y.long(), self.n_classes)
        return y.to(dtype)


@torch.no_grad()
def draw_samples(G: nn.Module, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """``n`` images from a generator, and a grid width. A class-conditional generator (one with
    ``n_classes``) draws ``n // n_classes`` images of each class, class by class, so a grid of
    that width shows one class per row."""
    gen: Any = G
    device = next(G.parameters()).device
    n_classes = getattr(G, "n_classes", 0)
    if n_classes:
        per = max(1, n // n_classes)
        y = torch.arange(n_classes).repeat_interleave(per).to(device)
        xi = uniform_noise(len(y), gen.noise_dim, generator).to(device)
        return gen(xi, y), per
    xi = uniform_noise(n, gen.noise_dim, generator).to(device)
    return gen(xi), max(1, int(math.ceil(math.sqrt(n))))


@torch.no_grad()
def latent_walk(
    G: nn.Module, steps: int, step_size: float = 0.01, n_chains: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """Images along random walks in the noise space, ``xi <- xi + step_size * U(-1, 1)``
    (Section 5.2's check that the generator's output moves smoothly), (steps, n_chains, ...).
    A conditional generator keeps one random label per chain."""
    gen: Any = G
    device = next(G.parameters()).device
    xi = uniform_noise(n_chains, gen.noise_dim, generator)
    y = None
    if getattr(G, "n_classes", 0):
        y = torch.randint(0, gen.n_classes, (n_chains,), generator=generator).to(device)
    frames = []
    for _ in range(steps):
        x = gen(xi.to(device), y) if y is not None else gen(xi.to(device))
        frames.append(x.cpu())
        xi = xi + step_size * uniform_noise(n_chains, gen.noise_dim, generator)
    return torch.stack(frames)
