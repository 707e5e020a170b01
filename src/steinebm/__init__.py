"""steinebm: learning deep energy models with Stein methods (Liu & Wang, 2017)."""

from .energies import GaussianBernoulliRBM, score
from .kernels import IMQ, RBF, ConstantKernel, FeatureKernel, Kernel, median_bandwidth
from .learners import CD, HyvarinenScoreMatching, Learner, SteinCD, SteinScoreMatching, SymmetricSteinCD
from .metrics import average_log_likelihood
from .samplers import langevin
from .svgd import SVGD, amortized_svgd_loss, svgd_direction

__version__ = "0.1.0"


def load(run_dir: str):  # type: ignore[no-untyped-def]
    """The trained model of a run folder (see :func:`steinebm.train.load`)."""
    from .train import load as _load

    return _load(run_dir)


__all__ = [
    "RBF",
    "IMQ",
    "ConstantKernel",
    "FeatureKernel",
    "Kernel",
    "median_bandwidth",
    "svgd_direction",
    "SVGD",
    "amortized_svgd_loss",
    "langevin",
    "score",
    "GaussianBernoulliRBM",
    "Learner",
    "CD",
    "SteinCD",
    "SymmetricSteinCD",
    "SteinScoreMatching",
    "HyvarinenScoreMatching",
    "average_log_likelihood",
    "load",
]
