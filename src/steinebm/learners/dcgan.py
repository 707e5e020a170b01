"""The DCGAN baseline's losses (Section 5): the non-saturating GAN objective on a discriminator's
logits, which :class:`~steinebm.learners.rules.DCGANRule` trains the baseline with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DCGANLoss"]


class DCGANLoss:
    """The DCGAN baseline (non-saturating GAN losses on a discriminator's logits)."""

    @staticmethod
    def discriminator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy_with_logits(
            d_fake, torch.zeros_like(d_fake)
        )

    @staticmethod
    def generator_loss(d_fake: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
