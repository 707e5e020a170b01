"""steinebm: learning deep energy models with Stein methods (Liu & Wang, 2017)."""

from steinebm.core.kernels import IMQ, RBF, ConstantKernel, FeatureKernel, Kernel, median_bandwidth
from steinebm.core.samplers import langevin
from steinebm.core.svgd import SVGD, amortized_svgd_loss, svgd_direction
from steinebm.evaluation.ais import ais_log_partition
from steinebm.evaluation.classifiers import inception_score, load_classifier, mode_coverage
from steinebm.evaluation.likelihood import LogLikelihood, log_likelihood
from steinebm.learners import CD, HyvarinenScoreMatching, Learner, SteinCD, SteinScoreMatching, SymmetricSteinCD
from steinebm.learners.dcgan import DCGANLoss
from steinebm.learners.steingan import AmortizedSVGD, SteinGAN
from steinebm.models.energies import GaussianBernoulliRBM, score
from steinebm.models.mnist_nets import MNISTDiscriminator, MNISTGenerator

__version__ = "0.1.0"


def load(run_dir: str):  # type: ignore[no-untyped-def]
    """The trained energy model of a run folder (see :func:`steinebm.engine.build.load`)."""
    from steinebm.engine.build import load as _load

    return _load(run_dir)


def load_generator(run_dir: str):  # type: ignore[no-untyped-def]
    """The trained generator of a run folder (see :func:`steinebm.engine.build.load_generator`)."""
    from steinebm.engine.build import load_generator as _load_generator

    return _load_generator(run_dir)


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
    "log_likelihood",
    "LogLikelihood",
    "ais_log_partition",
    "AmortizedSVGD",
    "SteinGAN",
    "DCGANLoss",
    "MNISTGenerator",
    "MNISTDiscriminator",
    "inception_score",
    "mode_coverage",
    "load_classifier",
    "load",
    "load_generator",
]
