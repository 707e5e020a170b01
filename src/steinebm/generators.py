"""Generators G(xi; eta) that amortize sampling (Section 4), and the DCGAN baseline's
discriminator. Any ``nn.Module`` mapping noise (m, noise_dim) to samples works as a generator;
it only needs ``noise_dim`` and, optionally, ``sample_noise``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "MNISTGenerator",
    "MNISTDiscriminator",
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
        if batchnorm not in ("affine", "plain"):
            raise ValueError(f"batchnorm must be 'affine' or 'plain', got {batchnorm!r}")
        if bn_stats not in ("running", "batch"):
            raise ValueError(f"bn_stats must be 'running' or 'batch', got {bn_stats!r}")
        self.noise_dim = noise_dim
        # without running statistics a BatchNorm uses the batch's own in eval mode too
        bn: dict[str, Any] = dict(eps=bn_eps, affine=batchnorm == "affine", track_running_stats=bn_stats == "running")
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
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            init_normal_002(self)

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
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            init_normal_002(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(-1, 1, 28, 28)).squeeze(1)


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
