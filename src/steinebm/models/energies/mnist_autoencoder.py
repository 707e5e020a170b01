"""The authors' MNIST autoencoder (``mnist_steingan.py``): a convolutional encoder and a decoder
that reuses the encoder's weights, transposed (tied weights), for the joint energy of Eq. 25 on
28 x 28 images. Every BatchNorm normalises by the batch's own statistics, in training and at
evaluation alike (the authors' ``batchnorm`` keeps no running averages), with their eps 1e-8."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steinebm.models.common import init_seeded
from steinebm.shapes import MNIST_SHAPE

__all__ = ["MNISTTiedEncoder", "MNISTTiedDecoder"]

BN_EPS = 1e-8  # the authors' batchnorm epsilon


def _bn(n: int, affine: bool, dims: int) -> nn.Module:
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(n, eps=BN_EPS, affine=affine, track_running_stats=False)


class MNISTTiedEncoder(nn.Module):
    """E(x): 28 x 28 images -> codes (m, code_dim).

    Two 5 x 5 stride-2 convolutions without biases (1 -> ``width`` at 14 x 14, ReLU; ``width`` ->
    2 ``width`` at 7 x 7, BatchNorm with scale and shift, ReLU), then a linear map to the code
    (no bias, BatchNorm without scale and shift, ReLU). The authors' widths: 64 and code 512.

    >>> E = MNISTTiedEncoder(width=4, code_dim=6)
    >>> E(torch.rand(3, 1, 28, 28)).shape
    torch.Size([3, 6])
    """

    def __init__(self, width: int = 64, code_dim: int = 512, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.width, self.code_dim, self.image_shape = width, code_dim, MNIST_SHAPE
        self.conv1 = nn.Conv2d(1, width, 5, stride=2, padding=2, bias=False)  # m w 14 14
        self.conv2 = nn.Conv2d(width, 2 * width, 5, stride=2, padding=2, bias=False)  # m 2w 7 7
        self.bn2 = _bn(2 * width, True, 2)
        self.fc = nn.Linear(2 * width * 49, code_dim, bias=False)  # m code
        self.bn_fc = _bn(code_dim, False, 1)
        init_seeded(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.conv1(x.reshape(-1, *MNIST_SHAPE)))
        h = F.relu(self.bn2(self.conv2(h)))
        return F.relu(self.bn_fc(self.fc(h.flatten(1))))


class MNISTTiedDecoder(nn.Module):
    """D(z): codes -> 28 x 28 images in (0, 1), the transpose of an :class:`MNISTTiedEncoder`.

    The code goes back through the encoder's linear map transposed (BatchNorm without scale and
    shift, ReLU), then through its two convolutions transposed, the adjoint maps of the same
    weights (2 ``width`` -> ``width`` at 14 x 14 with its own BatchNorm scale and shift and a
    ReLU; ``width`` -> 1 at 28 x 28, sigmoid). Its only own parameters are that BatchNorm's; the
    encoder is held without being registered, so each weight is one parameter of the energy.

    >>> E = MNISTTiedEncoder(width=4, code_dim=6)
    >>> D = MNISTTiedDecoder(E)
    >>> D(E(torch.rand(3, 1, 28, 28))).shape, sum(p.numel() for p in D.parameters())
    (torch.Size([3, 1, 28, 28]), 8)
    """

    def __init__(self, encoder: MNISTTiedEncoder, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self._encoder = (encoder,)  # a tuple: not a submodule, its weights are counted once
        self.bn_fc = _bn(2 * encoder.width * 49, False, 1)
        self.bn1 = _bn(encoder.width, True, 2)
        init_seeded(self, generator)  # the scale N(1, 0.02), the shift 0

    def forward(self, z: Tensor) -> Tensor:
        enc = self._encoder[0]
        h = F.relu(self.bn_fc(F.linear(z, enc.fc.weight.t())))  # m 2w*49
        h = h.view(-1, 2 * enc.width, 7, 7)
        h = F.relu(self.bn1(F.conv_transpose2d(h, enc.conv2.weight, stride=2, padding=2, output_padding=1)))
        return torch.sigmoid(F.conv_transpose2d(h, enc.conv1.weight, stride=2, padding=2, output_padding=1))
