"""DCGAN-style networks for 32 x 32 and 64 x 64 images (Section 5.2): the encoder and decoder of
the autoencoder energy (Eq. 24/25), the generator G(xi; eta), its class-conditional form, and
the DCGAN baseline's discriminator.

All images are in [0, 1] (the project's convention): the decoder and the generators end in a
sigmoid. Every network follows the DCGAN guidelines (Radford et al., 2015): stride-2 5 x 5
convolutions instead of pooling, BatchNorm everywhere but the discriminator's / encoder's
input layer and the output layers, LeakyReLU(0.2) going down, ReLU going up, and the paper's
N(0, 0.02) initialisation (:func:`~steinebm.models.common.init_normal_002`). A layer followed by
BatchNorm has no bias (the BatchNorm shift takes its place).

Widths follow the DCGAN reference code (``ngf = ndf = 128``), so the discriminator has about 17M
parameters at both sizes, as Table 1 of the paper reports for DCGAN; the autoencoder energies of
:mod:`steinebm.models.energies.autoencoder` are sized below it (see
:func:`~steinebm.models.table1.table1_parameter_counts`).

>>> import torch
>>> G = DCGANGenerator(32, channels=3, ngf=8)
>>> G(G.sample_noise(2)).shape
torch.Size([2, 3, 32, 32])
>>> DCGANDiscriminator(32, channels=3, ndf=8)(torch.rand(2, 3 * 32 * 32)).shape
torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steinebm.models.common import LabelSampler, init_normal_002, seeded, uniform_noise

__all__ = [
    "IMAGE_SIZES",
    "DCGANEncoder",
    "DCGANDecoder",
    "DCGANGenerator",
    "ConditionalDCGANGenerator",
    "DCGANDiscriminator",
    "ConditionalDCGANDiscriminator",
]

IMAGE_SIZES = (32, 64)
_K, _S, _P = 5, 2, 2  # 5 x 5 kernels, stride 2, padding 2: each layer halves / doubles the side


def _n_scales(image_size: int) -> int:
    """Number of stride-2 layers between the image and a 4 x 4 map: 3 for 32, 4 for 64."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
    return {32: 3, 64: 4}[image_size]


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")


def _up_stack(top: int, width: int, channels: int, n: int) -> list[nn.Module]:
    """n transposed convolutions from (top, 4, 4) to (channels, 4 * 2^n, 4 * 2^n), the last with
    a sigmoid: top -> top/2 -> ... -> width -> channels."""
    layers: list[nn.Module] = []
    c = top
    for _ in range(n - 1):
        layers += [
            nn.ConvTranspose2d(c, c // 2, _K, _S, _P, output_padding=1, bias=False),  # m c/2 2s 2s
            nn.BatchNorm2d(c // 2),
            nn.ReLU(inplace=True),
        ]
        c //= 2
    assert c == width
    layers += [nn.ConvTranspose2d(c, channels, _K, _S, _P, output_padding=1), nn.Sigmoid()]  # m C S S
    return layers


def _down_stack(channels: int, width: int, n: int) -> list[nn.Module]:
    """n stride-2 convolutions from (channels, S, S) to (width * 2^(n-1), S / 2^n, S / 2^n);
    no BatchNorm on the input layer."""
    layers: list[nn.Module] = [nn.Conv2d(channels, width, _K, _S, _P), nn.LeakyReLU(0.2, inplace=True)]  # m w S/2
    c = width
    for _ in range(n - 1):
        layers += [
            nn.Conv2d(c, 2 * c, _K, _S, _P, bias=False),  # m 2c s/2 s/2
            nn.BatchNorm2d(2 * c),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        c *= 2
    return layers


class _ImageModule(nn.Module):
    """Shared bookkeeping: the image shape, and reshaping flat rows (m, C*S*S) to images."""

    image_size: int
    channels: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def _as_images(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.image_shape)


class DCGANEncoder(_ImageModule):
    """E(x): image (m, C, S, S) or flat rows (m, C*S*S) -> code (m, code_dim).

    S = 32: C -> w (16 x 16) -> 2w (8 x 8) -> 4w (4 x 4); S = 64 adds 8w at 4 x 4. Stride-2 5 x 5
    convolutions, BatchNorm (not on the input layer), LeakyReLU(0.2); then a 4 x 4 valid
    convolution (a linear map of the 4 x 4 map) to the code. With ``code_norm`` (the default)
    the code goes through BatchNorm and ReLU, as in the authors' CIFAR-10 code: without it the
    code's scale is free, and the joint energy (Eq. 25) can then drive the generated images'
    cross-entropy, and their energy, without bound by scaling the code up.

    >>> import torch
    >>> DCGANEncoder(64, channels=1, code_dim=10, width=4)(torch.rand(2, 1, 64, 64)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        code_dim: int = 100,
        width: int = 128,
        generator: torch.Generator | None = None,
        code_norm: bool = True,
    ) -> None:
        super().__init__()
        n = _n_scales(image_size)
        _check_positive(channels=channels, code_dim=code_dim, width=width)
        self.image_size, self.channels, self.code_dim, self.width = image_size, channels, code_dim, width
        top = width * 2 ** (n - 1)
        with seeded(generator):  # every layer is built, so initialised, inside
            head: list[nn.Module] = (
                [nn.Conv2d(top, code_dim, 4, bias=False), nn.BatchNorm2d(code_dim), nn.ReLU(inplace=True)]
                if code_norm
                else [nn.Conv2d(top, code_dim, 4)]
            )  # m code_dim 1 1
            self.net = nn.Sequential(
                *_down_stack(channels, width, n),  # m top 4 4
                *head,
                nn.Flatten(),  # m code_dim
            )
            init_normal_002(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self._as_images(x))


class DCGANDecoder(_ImageModule):
    """D(z): code (m, code_dim) -> image (m, C, S, S) in [0, 1], the encoder's mirror.

    A 4 x 4 transposed convolution lifts the code to (top, 4, 4), top = 4w (S = 32) or 8w
    (S = 64), with BatchNorm and ReLU; stride-2 5 x 5 transposed convolutions halve the
    channels and double the side; the last one outputs C channels through a sigmoid.
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        code_dim: int = 100,
        width: int = 128,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        n = _n_scales(image_size)
        _check_positive(channels=channels, code_dim=code_dim, width=width)
        self.image_size, self.channels, self.code_dim, self.width = image_size, channels, code_dim, width
        top = width * 2 ** (n - 1)
        with seeded(generator):
            self.net = nn.Sequential(
                nn.ConvTranspose2d(code_dim, top, 4, bias=False),  # m top 4 4
                nn.BatchNorm2d(top),
                nn.ReLU(inplace=True),
                *_up_stack(top, width, channels, n),  # m C S S
            )
            init_normal_002(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.reshape(z.shape[0], self.code_dim, 1, 1))


class DCGANGenerator(_ImageModule):
    """G(xi; eta): xi ~ U(-1, 1)^noise_dim -> image (m, C, S, S) in [0, 1] (DCGAN's generator).

    A linear layer (BatchNorm, ReLU) to (top, 4, 4), top = 4 ngf for S = 32 (the usual CIFAR-10
    DCGAN) and 8 ngf for S = 64 (the DCGAN reference code for faces and LSUN), then stride-2
    5 x 5 transposed convolutions down to ngf channels and to C channels with a sigmoid (the
    reference code's tanh for [-1, 1] images becomes a sigmoid for [0, 1] ones).

    ``in_dim`` is the first layer's input width: noise_dim unless a subclass feeds more
    (:class:`ConditionalDCGANGenerator` appends the one-hot label).
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        noise_dim: int = 100,
        ngf: int = 128,
        generator: torch.Generator | None = None,
        in_dim: int | None = None,
    ) -> None:
        super().__init__()
        n = _n_scales(image_size)
        _check_positive(channels=channels, noise_dim=noise_dim, ngf=ngf)
        self.image_size, self.channels, self.noise_dim, self.ngf = image_size, channels, noise_dim, ngf
        self.top = ngf * 2 ** (n - 1)
        in_dim = noise_dim if in_dim is None else in_dim
        with seeded(generator):
            self.fc = nn.Sequential(
                nn.Linear(in_dim, self.top * 16, bias=False),  # m top*16
                nn.BatchNorm1d(self.top * 16),
                nn.ReLU(inplace=True),
            )
            self.deconv = nn.Sequential(*_up_stack(self.top, ngf, channels, n))  # m C S S
            init_normal_002(self)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def sample_noise(self, m: int, generator: torch.Generator | None = None) -> Tensor:
        """xi ~ U(-1, 1)^noise_dim, (m, noise_dim), on the generator's device."""
        return uniform_noise(m, self.noise_dim, generator, self._device())

    def forward(self, xi: Tensor) -> Tensor:
        h = self.fc(xi).view(-1, self.top, 4, 4)  # m top 4 4
        return self.deconv(h)


class ConditionalDCGANGenerator(DCGANGenerator, LabelSampler):
    """G(xi, y; eta): the generator of the joint model (Eq. 25), which takes the label with the noise.

    How the label enters: its one-hot code is concatenated to xi, so the first linear layer
    sees (m, noise_dim + n_classes); the rest is :class:`DCGANGenerator`. (The authors' CIFAR-10
    code also concatenated the one-hot label to every feature map; the paper only says y is
    passed "into a neural network together with" xi, which the input concatenation does.)

    Labels: the paper's sampler "first draws a label y randomly according to the empirical
    counts in the dataset". ``class_counts`` (any non-negative weights, e.g. the training
    set's label counts) sets those frequencies, uniform by default; it is a buffer, so it is
    saved with the model. :meth:`sample_labels` draws y from them with a ``torch.Generator``,
    and :meth:`sample_noise` draws the pair ``(xi, y)``. A training step is then::

        xi, y = G.sample_noise(m, rng)
        x = G(xi, y)                # (m, C, S, S)
        energy.given(y)(x)          # the joint energy's f(x, y), see JointAutoencoderEnergy

    ``forward`` also takes a float (m, n_classes) ``y`` (one-hot or soft labels) as it is.

    >>> import torch
    >>> G = ConditionalDCGANGenerator(32, channels=1, n_classes=3, ngf=4, class_counts=[0, 5, 0])
    >>> xi, y = G.sample_noise(4, torch.Generator().manual_seed(0))
    >>> y.tolist(), G(xi, y).shape
    ([1, 1, 1, 1], torch.Size([4, 1, 32, 32]))
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        n_classes: int = 10,
        noise_dim: int = 100,
        ngf: int = 128,
        class_counts: Sequence[float] | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_positive(n_classes=n_classes)
        super().__init__(image_size, channels, noise_dim, ngf, generator, in_dim=noise_dim + n_classes)
        self._init_labels(n_classes, class_counts)

    def sample_noise(self, m: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """The pair (xi, y): xi ~ U(-1, 1)^noise_dim (m, noise_dim), y ~ class_probs (m,)."""
        xi = super().sample_noise(m, generator)
        return xi, self.sample_labels(m, generator)

    def forward(self, xi: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        h = torch.cat([xi, self.one_hot(y, xi.dtype)], 1)  # m noise_dim+n_classes
        return super().forward(h)


class DCGANDiscriminator(_ImageModule):
    """The DCGAN baseline's discriminator: image -> one logit per sample, (m,).

    ``n_layers`` stride-2 5 x 5 convolutions, ndf -> 2 ndf -> 4 ndf -> 8 ndf (BatchNorm except on
    the input layer, LeakyReLU(0.2)), then a linear layer to the logit. As in the DCGAN reference
    code (ndf = 128, 4 layers) this has about 17.2M parameters at 64 x 64 (the map is 4 x 4)
    and at 32 x 32 (2 x 2): Table 1's "~17m" for both CIFAR-10 and CelebA/LSUN.
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        ndf: int = 128,
        n_layers: int = 4,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _n_scales(image_size)
        _check_positive(channels=channels, ndf=ndf, n_layers=n_layers)
        if image_size >> n_layers < 1:
            raise ValueError(f"{n_layers} stride-2 layers do not fit a {image_size} px image")
        self.image_size, self.channels, self.ndf, self.n_layers = image_size, channels, ndf, n_layers
        side = image_size >> n_layers  # 2 for 32 px, 4 for 64 px with 4 layers
        top = ndf * 2 ** (n_layers - 1)
        with seeded(generator):
            self.net = nn.Sequential(
                *_down_stack(channels, ndf, n_layers),  # m top side side
                nn.Flatten(),  # m top*side*side
                nn.Linear(top * side * side, 1),  # m 1
            )
            init_normal_002(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self._as_images(x)).squeeze(1)


class ConditionalDCGANDiscriminator(DCGANDiscriminator):
    """The class-conditional DCGAN baseline's discriminator (Figure 2 compares SteinGAN with a
    DCGAN conditional on each category): D(x, y), the one-hot label given as ``n_classes``
    constant image planes beside the colour channels (the conditional-GAN construction of
    Mirza & Osindero, 2014). Its image side is :attr:`channels` colours; the first layer sees
    ``channels + n_classes`` planes.

    >>> import torch
    >>> D = ConditionalDCGANDiscriminator(32, channels=3, n_classes=10, ndf=8)
    >>> D(torch.rand(2, 3 * 32 * 32), torch.tensor([1, 7])).shape
    torch.Size([2])
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        n_classes: int = 10,
        ndf: int = 128,
        n_layers: int = 4,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_positive(n_classes=n_classes)
        super().__init__(image_size, channels + n_classes, ndf, n_layers, generator)
        self.channels, self.n_classes = channels, n_classes  # the images' own channels

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        img = self._as_images(x)  # m C S S
        if y.dim() == 1:
            y = F.one_hot(y.long(), self.n_classes)
        planes = y.to(img.dtype)[:, :, None, None].expand(-1, -1, self.image_size, self.image_size)  # m K S S
        return self.net(torch.cat([img, planes], 1)).squeeze(1)
