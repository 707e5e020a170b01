"""Learning rules for any energy model. Each learner turns a batch of data into a surrogate
loss whose gradient in theta is minus the paper's update direction, so any torch optimizer
(Adam in the paper) applies the update: ``loss.backward(); optimizer.step()``.

:mod:`steinebm.learners.rules` makes every rule of the paper one object (the parts it trains
and one update), and :mod:`steinebm.learners.registry` names each for the config's ``method``."""

from steinebm.learners.base import Learner
from steinebm.learners.cd import CD
from steinebm.learners.dcgan import DCGANLoss
from steinebm.learners.rules import (
    AlternatingSteinGANRule,
    AmortizedSVGDRule,
    DCGANRule,
    DivergenceWatch,
    EnergyRule,
    Rule,
    SteinGANRule,
)
from steinebm.learners.score_matching import HyvarinenScoreMatching, SteinScoreMatching
from steinebm.learners.steincd import SteinCD, SymmetricSteinCD
from steinebm.learners.steingan import AlternatingSchedule, AmortizedSVGD, SteinGAN

__all__ = [
    "Learner",
    "CD",
    "SteinCD",
    "SymmetricSteinCD",
    "SteinScoreMatching",
    "HyvarinenScoreMatching",
    "SteinGAN",
    "AmortizedSVGD",
    "DCGANLoss",
    "AlternatingSchedule",
    "Rule",
    "DivergenceWatch",
    "EnergyRule",
    "SteinGANRule",
    "AlternatingSteinGANRule",
    "AmortizedSVGDRule",
    "DCGANRule",
]
