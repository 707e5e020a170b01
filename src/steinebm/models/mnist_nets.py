"""The MNIST networks: the authors' generator G(xi; eta) that amortizes sampling (Section 4), its
class-conditional form, and the DCGAN baseline's discriminators for 28 x 28 images. What they
share with the DCGAN networks (the noise prior, the initialisation, the label sampler, drawing
samples) is in :mod:`steinebm.models.common`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steinebm.models.common import LabelSampler, init_seeded, uniform_noise
from steinebm.shapes import MNIST_SHAPE

__all__ = [
    "MNISTGenerator",
    "MNISTDiscriminator",
    "MNISTConditionalGenerator",
    "MNISTConditionalDiscriminator",
]


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
        init_seeded(self, generator)

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
        init_seeded(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(-1, *MNIST_SHAPE)).squeeze(1)


def _mnist_bn(batchnorm: str, bn_stats: str, bn_eps: float) -> dict[str, Any]:
    if batchnorm not in ("affine", "plain"):
        raise ValueError(f"batchnorm must be 'affine' or 'plain', got {batchnorm!r}")
    if bn_stats not in ("running", "batch"):
        raise ValueError(f"bn_stats must be 'running' or 'batch', got {bn_stats!r}")
    # without running statistics a BatchNorm uses the batch's own in eval mode too
    return dict(eps=bn_eps, affine=batchnorm == "affine", track_running_stats=bn_stats == "running")


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
        init_seeded(self, generator)

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
        init_seeded(self, generator)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if y.dim() == 1:
            y = F.one_hot(y.long(), self.n_classes)
        y = y.to(x.dtype)
        h = self.conv1(_with_planes(x.reshape(-1, *MNIST_SHAPE), y))
        h = self.conv2(_with_planes(h, y)).flatten(1)
        h = self.fc(torch.cat([h, y], 1))
        return self.out(torch.cat([h, y], 1)).squeeze(1)
