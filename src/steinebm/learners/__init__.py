"""Learning rules for any energy model. Each learner turns a batch of data into a surrogate
loss whose gradient in theta is minus the paper's update direction, so any torch optimizer
(Adam in the paper) applies the update: ``loss.backward(); optimizer.step()``."""

from .base import Learner
from .cd import CD
from .score_matching import HyvarinenScoreMatching, SteinScoreMatching
from .steincd import SteinCD, SymmetricSteinCD

__all__ = [
    "Learner",
    "CD",
    "SteinCD",
    "SymmetricSteinCD",
    "SteinScoreMatching",
    "HyvarinenScoreMatching",
]
