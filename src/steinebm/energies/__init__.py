"""Energy models: any ``nn.Module`` whose forward returns the negative energy f(x) per sample."""

from .autoencoder import AutoencoderEnergy, table1_parameter_counts
from .base import score
from .joint import JointAutoencoderEnergy, LabelledEnergy
from .rbm import GaussianBernoulliRBM

__all__ = [
    "score",
    "GaussianBernoulliRBM",
    "AutoencoderEnergy",
    "JointAutoencoderEnergy",
    "LabelledEnergy",
    "table1_parameter_counts",
]
