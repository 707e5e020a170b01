"""Generators G(xi; eta) that amortize sampling (Section 4), and the DCGAN baseline's
discriminator. Any ``nn.Module`` mapping noise (m, noise_dim) to samples works as a generator;
it only needs ``noise_dim`` and, optionally, ``sample_noise``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steinebm.shapes import MNIST_SHAPE

__all__ = [
    "MNISTGenerator",
    "MNISTDiscriminator",
    "MNISTConditionalGenerator",
    "MNISTConditionalDiscriminator",
    "LabelSampler",
    "uniform_noise",
    "init_normal_002",
    "count_parameters",
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
        probs = self.class_probs.detach().to(gdev, torch.float64)
        y = torch.multinomial(probs, m, replacement=True, generator=generator)
        return y.to(self._device())

    def one_hot(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        """Integer labels (m,) as one-hot rows (m, n_classes); float labels pass as they are."""
        if y.dim() == 1:
            y = F.one_hot(y.long(), self.n_classes)
        return y.to(dtype)


class MNISTGenerator(nn.Module):
    """The authors' MNIST generator: xi ~ U(-1, 1)^100 -> 28 x 28 image in [0, 1].

    The defaults are a PyTorch DCGAN generator of that shape. The authors' own network
    (``rbm_adv.py``) differs in three ways, each an option:

    - ``bias=False``: no bias in any linear or transposed-convolution layer;
    - ``batchnorm="plain"``: BatchNorm without the learnable scale and shift;
    - ``bn_stats="batch"``: BatchNorm always normalises by the batch's own statistics, at
      sampling time too (their ``batchnorm`` keeps no running averages), so a sample depends
      on the batch it is drawn with; ``bn_eps`` is their 1e-8 rather than torch's 1e-5.

    >>> import torch
    >>> G = MNISTGenerator()
    >>> G(G.sample_noise(3)).shape
    torch.Size([3, 1, 28, 28])
    >>> A = MNISTGenerator(bias=False, batchnorm="plain", bn_stats="batch", bn_eps=1e-8)
    >>> sum(p.numel() for p in A.parameters()) == 100 * 1024 + 1024 * 6272 + 128 * 64 * 25 + 64 * 25
    True
    """

    def __init__(
        self,
        noise_dim: int = 100,
        generator: torch.Generator | None = None,
        bias: bool = True,
        batchnorm: str = "affine",
        bn_stats: str = "running",
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        bn = _mnist_bn(batchnorm, bn_stats, bn_eps)
        self.noise_dim = noise_dim
        self.fc = nn.Sequential(
            nn.Linear(noise_dim, 1024, bias=bias),  # m 1024
            nn.BatchNorm1d(1024, **bn),
            nn.ReLU(inplace=True),
            nn.Linear(1024, 128 * 7 * 7, bias=bias),  # m 6272
            nn.BatchNorm1d(128 * 7 * 7, **bn),
            nn.ReLU(inplace=True),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 5, stride=2, padding=2, output_padding=1, bias=bias),  # m 64 14 14
            nn.BatchNorm2d(64, **bn),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 1, 5, stride=2, padding=2, output_padding=1, bias=bias),  # m 1 28 28
            nn.Sigmoid(),
        )
        _init_seeded(self, generator)

    def sample_noise(self, m: int, generator: torch.Generator | None = None) -> Tensor:
        device = next(self.parameters()).device
        return uniform_noise(m, self.noise_dim, generator, device)

    def forward(self, xi: Tensor) -> Tensor:
        h = self.fc(xi).view(-1, 128, 7, 7)
        return self.deconv(h)


class MNISTDiscriminator(nn.Module):
    """DCGAN discriminator for 28 x 28 images (the baseline), mirroring the generator:
    two 5 x 5 stride-2 convolutions (1 -> 64 -> 128 channels), then FC 1024 -> 1 logit."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 64, 5, stride=2, padding=2),  # m 64 14 14
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, 128, 5, stride=2, padding=2),  # m 128 7 7
            nn.BatchNorm2d(128),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
            nn.Linear(128 * 7 * 7, 1024),  # m 1024
            nn.BatchNorm1d(1024),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 1),  # m 1
        )
        _init_seeded(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(-1, *MNIST_SHAPE)).squeeze(1)


def _mnist_bn(batchnorm: str, bn_stats: str, bn_eps: float) -> dict[str, Any]:
    if batchnorm not in ("affine", "plain"):
        raise ValueError(f"batchnorm must be 'affine' or 'plain', got {batchnorm!r}")
    if bn_stats not in ("running", "batch"):
        raise ValueError(f"bn_stats must be 'running' or 'batch', got {bn_stats!r}")
    # without running statistics a BatchNorm uses the batch's own in eval mode too
    return dict(eps=bn_eps, affine=batchnorm == "affine", track_running_stats=bn_stats == "running")


def _init_seeded(module: nn.Module, generator: torch.Generator | None) -> None:
    with torch.random.fork_rng(devices=[]):
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        init_normal_002(module)


class MNISTConditionalGenerator(LabelSampler):
    """G(xi, y; eta): the authors' class-conditional MNIST generator (``mnist_steingan.py``).

    The one-hot label is concatenated to the input of every layer: to xi (100 + 10 -> 1024), to
    the 1024 hidden units (1034 -> 128 x 7 x 7), and as 10 constant planes to each feature map
    before the two 5 x 5 stride-2 transposed convolutions (138 -> 64 at 14 x 14, 74 -> 1 at
    28 x 28, sigmoid). ``bias``, ``batchnorm``, ``bn_stats`` and ``bn_eps`` are those of
    :class:`MNISTGenerator`; the authors' network has no biases and BatchNorm without scale and
    shift on batch statistics (eps 1e-8). Labels are drawn by :class:`LabelSampler`.

    >>> import torch
    >>> G = MNISTConditionalGenerator(bias=False, batchnorm="plain", bn_stats="batch")
    >>> xi, y = G.sample_noise(4, torch.Generator().manual_seed(0))
    >>> G(xi, y).shape
    torch.Size([4, 1, 28, 28])
    >>> sum(p.numel() for p in G.parameters()) == 110 * 1024 + 1034 * 6272 + 138 * 64 * 25 + 74 * 25
    True
    """

    def __init__(
        self,
        noise_dim: int = 100,
        n_classes: int = 10,
        generator: torch.Generator | None = None,
        bias: bool = True,
        batchnorm: str = "affine",
        bn_stats: str = "running",
        bn_eps: float = 1e-5,
        class_counts: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        bn = _mnist_bn(batchnorm, bn_stats, bn_eps)
        self.noise_dim = noise_dim
        K = n_classes
        self.fc1 = nn.Sequential(
            nn.Linear(noise_dim + K, 1024, bias=bias), nn.BatchNorm1d(1024, **bn), nn.ReLU()
        )  # m 1024
        self.fc2 = nn.Sequential(
            nn.Linear(1024 + K, 128 * 7 * 7, bias=bias), nn.BatchNorm1d(128 * 7 * 7, **bn), nn.ReLU()
        )  # m 6272
        self.up1 = nn.Sequential(
            nn.ConvTranspose2d(128 + K, 64, 5, stride=2, padding=2, output_padding=1, bias=bias),
            nn.BatchNorm2d(64, **bn),
            nn.ReLU(),
        )
        self.up2 = nn.ConvTranspose2d(64 + K, 1, 5, stride=2, padding=2, output_padding=1, bias=bias)
        self._init_labels(n_classes, class_counts)
        _init_seeded(self, generator)

    def sample_noise(self, m: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The pair (xi, y): xi ~ U(-1, 1)^noise_dim (m, noise_dim), y ~ class_probs (m,)."""
        xi = uniform_noise(m, self.noise_dim, generator, self._device())
        return xi, self.sample_labels(m, generator)

    def forward(self, xi: Tensor, y: Tensor) -> Tensor:
        y = self.one_hot(y, xi.dtype)  # m K
        h = self.fc1(torch.cat([xi, y], 1))  # m 1024
        h = self.fc2(torch.cat([h, y], 1)).view(-1, 128, 7, 7)  # m 128 7 7
        h = self.up1(_with_planes(h, y))  # m 64 14 14
        return torch.sigmoid(self.up2(_with_planes(h, y)))  # m 1 28 28


def _with_planes(h: Tensor, y: Tensor) -> Tensor:
    """Feature maps (m, C, S, S) with the labels (m, K) appended as K constant planes."""
    return torch.cat([h, y[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])], 1)


class MNISTConditionalDiscriminator(nn.Module):
    """D(x, y): the class-conditional DCGAN baseline's discriminator for 28 x 28 images, the
    label appended at every layer as :class:`MNISTConditionalGenerator` does (the conditional
    MNIST DCGAN of Radford et al.'s code): planes beside the image (1 + 10 -> 64, 5 x 5 stride
    2, LeakyReLU 0.2) and beside the first feature map (74 -> 128, BatchNorm), then the flat
    6272 + 10 -> 1024 (BatchNorm) and 1034 -> 1 logit.

    >>> import torch
    >>> MNISTConditionalDiscriminator()(torch.rand(2, 784), torch.tensor([3, 5])).shape
    torch.Size([2])
    """

    def __init__(self, n_classes: int = 10, generator: torch.Generator | None = None) -> None:
        super().__init__()
        K = self.n_classes = n_classes
        self.conv1 = nn.Sequential(nn.Conv2d(1 + K, 64, 5, stride=2, padding=2), nn.LeakyReLU(0.2))  # m 64 14 14
        self.conv2 = nn.Sequential(
            nn.Conv2d(64 + K, 128, 5, stride=2, padding=2), nn.BatchNorm2d(128), nn.LeakyReLU(0.2)
        )  # m 128 7 7
        self.fc = nn.Sequential(nn.Linear(128 * 7 * 7 + K, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2))  # m 1024
        self.out = nn.Linear(1024 + K, 1)  # m 1
        _init_seeded(self, generator)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if y.dim() == 1:
            y = F.one_hot(y.long(), self.n_classes)
        y = y.to(x.dtype)
        h = self.conv1(_with_planes(x.reshape(-1, *MNIST_SHAPE), y))
        h = self.conv2(_with_planes(h, y)).flatten(1)
        h = self.fc(torch.cat([h, y], 1))
        return self.out(torch.cat([h, y], 1)).squeeze(1)


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
