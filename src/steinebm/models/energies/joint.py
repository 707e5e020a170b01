"""The joint image-label energy of Section 5.2 (Eq. 25)::

    p(x, y | theta) ∝ exp{ -||x - D(E(x; theta); theta)|| - max[m, sigma(y, E(x; theta))] }

with sigma the cross entropy of a fully connected output layer on the code E(x), and m = 1 for
CIFAR-10 (Figure 2's caption)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steinebm.models.common import init_normal_002, seeded
from steinebm.models.energies.autoencoder import DEFAULT_WIDTH, AutoencoderEnergy, reconstruction_norm
from steinebm.models.energies.mnist_autoencoder import MNISTTiedDecoder, MNISTTiedEncoder
from steinebm.shapes import MNIST_SHAPE

__all__ = ["JointAutoencoderEnergy", "LabelledEnergy", "cross_entropy"]


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """sigma(y, logits) per sample, (m,): ``-log softmax(logits)[y]`` for integer labels (m,),
    ``-sum_k y_k log softmax(logits)_k`` for one-hot or soft labels (m, K)."""
    if y.dim() == 1:
        return F.cross_entropy(logits, y.long(), reduction="none")
    return -(y.to(logits.dtype) * F.log_softmax(logits, 1)).sum(1)


class JointAutoencoderEnergy(nn.Module):
    """f(x, y; theta) = -||x - D(E(x))|| - max(m, sigma(y, h(E(x)))): the negative energy of Eq. 25.

    ``h`` is a linear layer (``code_dim -> n_classes``, the paper's "fully connected output
    layer") on the encoder's code and sigma the cross entropy of its softmax. This is the
    paper's formula as written, and the authors' CIFAR-10 code (``mse + maximum(margin,
    neg_lik)``, margin = 1, mse the unsquared norm): the label term is a hinge at the margin m.
    While the classifier already gives y a cross entropy below m (softmax probability above
    e^-m), the term is the constant m, and neither the head nor x gets a gradient from it; above
    m it is the cross entropy itself. The reconstruction term is :class:`AutoencoderEnergy`'s.

    How labels enter: ``forward(x, y)`` takes y as integer labels (m,) or as one-hot / soft
    labels (m, n_classes), paired row by row with x. Everything written for one-argument
    energies (``score``, SVGD, the SteinGAN energy step) uses :meth:`given`, which binds a
    batch's labels: ``energy.given(y)(x) == energy(x, y)``. For SteinGAN, the generator step
    uses ``energy.given(y_gen)`` on x_gen (labels drawn by
    :class:`~steinebm.models.dcgan_nets.ConditionalDCGANGenerator`), and the energy step
    ``energy.given(torch.cat([y_pos, y_gen]))`` on ``torch.cat([x_pos, x_gen])``.

    Classification: :meth:`classifier_log_probs` is the head's softmax, :meth:`log_prob_y` the
    model's own conditional ``p(y | x) ∝ exp(-max(m, sigma(y, h(E(x)))))`` (the reconstruction
    term cancels), and :meth:`predict` the head's argmax (also a mode of p(y | x), since the
    hinge is non-decreasing in sigma). :meth:`marginal` is ``log sum_y exp f(x, y)``.

    Dropout (training mode only; neither is in the paper's text): ``input_dropout`` on the
    encoder's input (see :class:`AutoencoderEnergy`), ``head_dropout`` on the code before the
    head (the authors' MNIST code drops 30 % of both). :meth:`mnist` builds the authors' MNIST
    network, :meth:`dcgan` the paper-sized one for 32 / 64 px images.

    >>> import torch
    >>> enc, dec = nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)
    >>> _ = enc.weight.data.copy_(torch.eye(2)), dec.weight.data.copy_(torch.eye(2))  # D(E(x)) = x
    >>> joint = JointAutoencoderEnergy(enc, dec, n_classes=2, code_dim=2)
    >>> _ = joint.head.weight.data.zero_(), joint.head.bias.data.zero_()  # sigma = log 2 < m = 1
    >>> joint(torch.tensor([[1.0, 2.0]]), torch.tensor([0]))
    tensor([-1.], grad_fn=<SubBackward0>)
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        n_classes: int = 10,
        margin: float = 1.0,
        code_dim: int | None = None,
        image_shape: tuple[int, ...] | None = None,
        generator: torch.Generator | None = None,
        input_dropout: float = 0.0,
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        margin = float(margin)
        if not math.isfinite(margin):
            raise ValueError(f"margin must be finite, got {margin}")
        p = code_dim if code_dim is not None else getattr(encoder, "code_dim", None)
        if p is None:
            raise ValueError("code_dim is needed when the encoder has no code_dim attribute")
        self.n_classes, self.margin, self.code_dim = n_classes, margin, int(p)
        self.head_dropout = float(head_dropout)
        self.autoencoder = AutoencoderEnergy(encoder, decoder, image_shape, input_dropout)
        with seeded(generator):
            self.head = nn.Linear(self.code_dim, n_classes)  # m n_classes
            init_normal_002(self.head)

    @classmethod
    def dcgan(
        cls,
        image_size: int = 32,
        channels: int = 3,
        n_classes: int = 10,
        margin: float = 1.0,
        code_dim: int = 100,
        width: int | None = None,
        generator: torch.Generator | None = None,
        input_dropout: float = 0.0,
        head_dropout: float = 0.0,
    ) -> JointAutoencoderEnergy:
        """The DCGAN encoder/decoder of :meth:`AutoencoderEnergy.dcgan` plus the linear head
        (widths default to :data:`~steinebm.models.energies.autoencoder.DEFAULT_WIDTH`)."""
        w = DEFAULT_WIDTH.get(image_size, 128) if width is None else width
        ae = AutoencoderEnergy.dcgan(image_size, channels, code_dim, w, generator)
        return cls(
            ae.encoder, ae.decoder, n_classes, margin, code_dim, ae.image_shape, generator, input_dropout, head_dropout
        )

    @classmethod
    def mnist(
        cls,
        n_classes: int = 10,
        margin: float = 0.2,
        code_dim: int = 512,
        width: int = 64,
        generator: torch.Generator | None = None,
        input_dropout: float = 0.0,
        head_dropout: float = 0.0,
    ) -> JointAutoencoderEnergy:
        """The authors' MNIST joint energy (``mnist_steingan.py``): the tied-weight autoencoder of
        :mod:`steinebm.models.energies.mnist_autoencoder` (widths 64 and code 512) and the linear head on
        the code. Their settings: margin 0.2 and dropout 0.3 on both the input and the code.

        >>> f = JointAutoencoderEnergy.mnist(width=4, code_dim=6)
        >>> f(torch.rand(3, 784), torch.tensor([0, 1, 2])).shape
        torch.Size([3])
        """
        enc = MNISTTiedEncoder(width, code_dim, generator)
        dec = MNISTTiedDecoder(enc, generator)
        return cls(enc, dec, n_classes, margin, code_dim, MNIST_SHAPE, generator, input_dropout, head_dropout)

    @property
    def encoder(self) -> nn.Module:
        return self.autoencoder.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.autoencoder.decoder

    def encode(self, x: Tensor, corrupt: bool = False) -> Tensor:
        """E(x) as flat codes (m, code_dim): the features of Section 5.2's kernel (``corrupt``:
        see :meth:`AutoencoderEnergy.encode`)."""
        return self.autoencoder.encode(x, corrupt)

    def _parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(||x - D(E(x))|| (m,), logits h(E(x)) (m, n_classes)) from one pass of the encoder."""
        xi = self.autoencoder._images(x)
        z = self.encoder(self.autoencoder.corrupt(xi))
        rec = reconstruction_norm(xi, self.decoder(z).reshape(xi.shape))
        code = z.reshape(x.shape[0], -1)
        if self.head_dropout > 0.0 and self.training:  # the authors' MNIST code drops 30 % of the code
            code = F.dropout(code, self.head_dropout, training=True)
        return rec, self.head(code)

    def reconstruction_error(self, x: Tensor) -> Tensor:
        """``||x - D(E(x))||`` per sample, (m,), the input dropped out in training mode."""
        return self.autoencoder.reconstruction_error(x)

    def label_term(self, logits: Tensor, y: Tensor) -> Tensor:
        """max(m, sigma(y, logits)) per sample, (m,)."""
        return cross_entropy(logits, y).clamp(min=self.margin)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """f(x, y; theta) for x (m, C, H, W) or (m, C*H*W) and y (m,) or (m, n_classes): returns (m,)."""
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {y.shape[0]} labels")
        rec, logits = self._parts(x)
        return -rec - self.label_term(logits, y)

    def given(self, y: Tensor) -> LabelledEnergy:
        """The one-argument energy x -> f(x, y) for this batch of labels y."""
        return LabelledEnergy(self, y)

    def classifier_log_probs(self, x: Tensor) -> Tensor:
        """log softmax(h(E(x))), (m, n_classes): the head as a plain classifier."""
        return F.log_softmax(self.head(self.encode(x)), 1)

    def _hinged(self, logits: Tensor) -> Tensor:
        """-max(m, sigma(k, logits)) for every class k, (m, n_classes)."""
        return -(-F.log_softmax(logits, 1)).clamp(min=self.margin)

    def log_prob_y(self, x: Tensor) -> Tensor:
        """log p(y | x; theta) under Eq. 25 for every y, (m, n_classes)."""
        return F.log_softmax(self._hinged(self.head(self.encode(x))), 1)

    def predict(self, x: Tensor) -> Tensor:
        """The most probable label, (m,) int64."""
        return self.head(self.encode(x)).argmax(1)

    def marginal(self, x: Tensor) -> Tensor:
        """log sum_y exp f(x, y; theta), (m,): the negative energy of x alone."""
        rec, logits = self._parts(x)
        return -rec + torch.logsumexp(self._hinged(logits), 1)


class LabelledEnergy(nn.Module):
    """x -> f(x, y) for a fixed batch of labels y (see :meth:`JointAutoencoderEnergy.given`).

    Shares the joint energy's parameters (it holds the module, no copy), so gradients reach
    theta; row i of x is paired with label y[i].
    """

    def __init__(self, joint: JointAutoencoderEnergy, y: Tensor) -> None:
        super().__init__()
        self.joint = joint
        self.y = y

    def forward(self, x: Tensor) -> Tensor:
        return self.joint(x, self.y)
