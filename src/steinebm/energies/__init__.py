"""Energy models: any ``nn.Module`` whose forward returns the negative energy f(x) per sample."""

from .base import score
from .rbm import GaussianBernoulliRBM

__all__ = ["score", "GaussianBernoulliRBM"]
