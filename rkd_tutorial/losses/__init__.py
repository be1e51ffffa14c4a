"""Distillation and task losses, one function per equation.

* ``relational``: RKD-D, RKD-A, :class:`RKDLoss` (Park et al., CVPR 2019).
* ``individual``: Hinton KD, FitNet hints, attention transfer.
* ``ranking``: HardDarkRank.
* ``triplet``: the metric-learning task loss with distance-weighted sampling.

Distillation losses share one calling convention: ``loss(student, teacher)``.
"""

from .individual import AttentionLoss, FitNetHint, HKDLoss, attention_loss, attention_map, hkd_loss
from .ranking import HardDarkRank, hard_darkrank_loss
from .relational import (
    RKDAngle,
    RKDDistance,
    RKDLoss,
    angle_potential,
    distance_potential,
    pairwise_distances,
    rkd_angle_loss,
    rkd_distance_loss,
)
from .triplet import TripletLoss, distance_weighted_negatives, triplet_loss

__all__ = [
    "rkd_distance_loss", "rkd_angle_loss", "RKDLoss", "RKDDistance", "RKDAngle",
    "distance_potential", "angle_potential", "pairwise_distances",
    "hkd_loss", "HKDLoss", "FitNetHint", "attention_map", "attention_loss", "AttentionLoss",
    "hard_darkrank_loss", "HardDarkRank",
    "triplet_loss", "TripletLoss", "distance_weighted_negatives",
]
