"""Energy models: any ``nn.Module`` whose forward returns the negative energy f(x) per sample."""

from steinebm.core.score import score
from steinebm.models.energies.autoencoder import AutoencoderEnergy
from steinebm.models.energies.joint import JointAutoencoderEnergy, LabelledEnergy
from steinebm.models.energies.rbm import GaussianBernoulliRBM

__all__ = [
    "score",
    "GaussianBernoulliRBM",
    "AutoencoderEnergy",
    "JointAutoencoderEnergy",
    "LabelledEnergy",
]
