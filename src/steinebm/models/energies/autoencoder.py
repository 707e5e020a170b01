"""The autoencoder energy of Section 5.2 (Eq. 24): ``p(x | theta) ∝ exp(-||x - D(E(x; theta); theta)||)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steinebm.models.dcgan_nets import (
    DCGANDecoder,
    DCGANEncoder,
)

__all__ = ["AutoencoderEnergy", "DEFAULT_WIDTH", "reconstruction_norm"]

# Encoder/decoder widths of the paper-sized energies: about 9.9M parameters at 32 px (Table 1:
# "~10m" for CIFAR-10) and 3.0M at 64 px ("~2.5m" for CelebA/LSUN), both below the ~17.2M of
# the DCGAN discriminator they are compared with.
DEFAULT_WIDTH = {32: 128, 64: 32}


def reconstruction_norm(x: Tensor, x_rec: Tensor) -> Tensor:
    """``||x - x_rec||``, the Euclidean norm over all of a sample's pixels, (m,)."""
    return torch.linalg.vector_norm((x - x_rec).reshape(x.shape[0], -1), dim=1)


class AutoencoderEnergy(nn.Module):
    """f(x; theta) = -||x - D(E(x))||: the negative energy of Eq. 24, one value per sample.

    The paper's energy is the Euclidean **norm** of the reconstruction error over all pixels,
    not its square (Eq. 24; the authors' CIFAR-10 code computes ``sqrt(sum((X - rX)**2))`` the
    same way). Their CelebA/LSUN code adds an L1 term, ``sqrt(sum|X - rX|)``; that variant is
    not what the paper writes and is not used here. At a zero residual the norm has no
    gradient; autograd returns 0 there.

    Args:
        encoder: E, maps images to codes (m, p). Used as the feature map of Section 5.2's
            kernel ``k(x, x') = exp(-||E(x) - E(x')||^2 / h^2)`` through :meth:`encode`.
        decoder: D, maps codes back to images of x's shape.
        image_shape: (C, H, W) to which flat rows (m, C*H*W) are reshaped before E. By default
            the encoder's ``image_shape`` attribute if it has one; otherwise x is passed as given.

        input_dropout: in training mode, the probability with which each input value is zeroed
            before E (the rest scaled by 1 / (1 - p)); the residual is still taken against the
            clean x, so f is a denoising autoencoder's error. Not in the paper's text; the
            authors' CIFAR-10 code drops 20 % of the input. 0 (default) is Eq. 24 exactly, and
            evaluation (eval mode) is always exact. Draws from torch's global generator, which
            the training loop seeds at every step.

    :meth:`dcgan` builds the paper-sized DCGAN encoder/decoder pair for 32 or 64 px images.

    >>> import torch
    >>> enc, dec = nn.Linear(2, 1, bias=False), nn.Linear(1, 2, bias=False)
    >>> _ = enc.weight.data.zero_(), dec.weight.data.zero_()  # D(E(x)) = 0: f(x) = -||x||
    >>> AutoencoderEnergy(enc, dec)(torch.tensor([[3.0, 4.0]]))
    tensor([-5.], grad_fn=<NegBackward0>)
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        image_shape: tuple[int, ...] | None = None,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout}")
        self.encoder, self.decoder = encoder, decoder
        self.input_dropout = float(input_dropout)
        shape = image_shape if image_shape is not None else getattr(encoder, "image_shape", None)
        self.image_shape: tuple[int, ...] | None = None if shape is None else tuple(int(s) for s in shape)

    @classmethod
    def dcgan(
        cls,
        image_size: int = 32,
        channels: int = 3,
        code_dim: int = 100,
        width: int | None = None,
        generator: torch.Generator | None = None,
        input_dropout: float = 0.0,
    ) -> AutoencoderEnergy:
        """The DCGAN encoder/decoder pair (:mod:`steinebm.models.dcgan_nets`) for 32 or 64 px images.

        ``width`` (the first encoder layer's channels) defaults to :data:`DEFAULT_WIDTH`
        (128 at 32 px, 32 at 64 px), which keeps the energy below the DCGAN discriminator's
        parameter count, as Table 1 of the paper requires.
        """
        w = DEFAULT_WIDTH.get(image_size, 128) if width is None else width
        enc = DCGANEncoder(image_size, channels, code_dim, w, generator)
        dec = DCGANDecoder(image_size, channels, code_dim, w, generator)
        return cls(enc, dec, input_dropout=input_dropout)

    def _images(self, x: Tensor) -> Tensor:
        return x if self.image_shape is None else x.reshape(x.shape[0], *self.image_shape)

    def corrupt(self, xi: Tensor) -> Tensor:
        """The encoder's input: x with ``input_dropout`` applied in training mode, else x."""
        if self.input_dropout > 0.0 and self.training:
            return F.dropout(xi, self.input_dropout, training=True)
        return xi

    def encode(self, x: Tensor, corrupt: bool = False) -> Tensor:
        """E(x) as flat codes (m, p); x may be images or flat rows. ``corrupt``: the input
        dropped out first, as the energy's own pass does in training mode."""
        xi = self._images(x)
        return self.encoder(self.corrupt(xi) if corrupt else xi).reshape(x.shape[0], -1)

    def reconstruct(self, x: Tensor) -> Tensor:
        """D(E(x)), shaped like the encoder's input."""
        xi = self._images(x)
        return self.decoder(self.encoder(xi)).reshape(xi.shape)

    def reconstruction_error(self, x: Tensor) -> Tensor:
        """``||x - D(E(x))||`` per sample, (m,): the energy -f(x)."""
        xi = self._images(x)
        return reconstruction_norm(xi, self.decoder(self.encoder(self.corrupt(xi))).reshape(xi.shape))

    def forward(self, x: Tensor) -> Tensor:
        """f(x; theta) = -||x - D(E(x))|| for x of shape (m, C, H, W) or (m, C*H*W): returns (m,)."""
        return -self.reconstruction_error(x)
