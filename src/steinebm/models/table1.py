"""The sizes of the paper-sized networks, Table 1's comparison (SteinGAN's energy against the
DCGAN discriminator it replaces)."""

from __future__ import annotations

import torch

from steinebm.models.common import count_parameters
from steinebm.models.dcgan_nets import ConditionalDCGANGenerator, DCGANDiscriminator, DCGANGenerator
from steinebm.models.energies.autoencoder import AutoencoderEnergy
from steinebm.models.energies.joint import JointAutoencoderEnergy

__all__ = ["table1_parameter_counts"]


def table1_parameter_counts(channels: int = 3, n_classes: int = 10, noise_dim: int = 100) -> dict[str, dict[str, int]]:
    """Parameter counts of the paper-sized networks, the comparison of Table 1.

    Per image size (``"cifar10"``: 32 px, the joint energy of Eq. 25 with ``n_classes``;
    ``"celeba_lsun"``: 64 px, the autoencoder energy of Eq. 24): the energy, the DCGAN
    discriminator it replaces, and the generator (conditional at 32 px). The paper reports
    ~17m for DCGAN at both sizes, ~10m for SteinGAN on CIFAR-10, ~2.5m on CelebA/LSUN.
    The networks are built on the meta device (no memory, no initialisation).

    >>> c = table1_parameter_counts()
    >>> {k: v["energy"] for k, v in c.items()}
    {'cifar10': 9854269, 'celeba_lsun': 2976491}
    >>> {k: v["dcgan_discriminator"] for k, v in c.items()}
    {'cifar10': 17220609, 'celeba_lsun': 17232897}
    >>> {k: v["generator"] for k, v in c.items()}
    {'cifar10': 5023875, 'celeba_lsun': 18885763}
    """
    with torch.device("meta"):
        joint = JointAutoencoderEnergy.dcgan(32, channels, n_classes)
        ae64 = AutoencoderEnergy.dcgan(64, channels)
        counts = {
            "cifar10": {
                "energy": count_parameters(joint),
                "dcgan_discriminator": count_parameters(DCGANDiscriminator(32, channels)),
                "generator": count_parameters(ConditionalDCGANGenerator(32, channels, n_classes, noise_dim)),
            },
            "celeba_lsun": {
                "energy": count_parameters(ae64),
                "dcgan_discriminator": count_parameters(DCGANDiscriminator(64, channels)),
                "generator": count_parameters(DCGANGenerator(64, channels, noise_dim)),
            },
        }
    return counts
