"""The methods the experiments compare: each is a list of weighted loss terms.

Metric learning (:data:`METRIC_METHODS`). The baselines add their term to the
triplet loss, as the official code runs them, so they use the labels; the
RKD students use RKD alone (weights 1 and 2) and never see a label. The
official weights: FitNet 1, attention 50 (summed over three stages), DarkRank 1.

Classification (:data:`CLASSIFY_METHODS`): cross-entropy plus each term, as
the official classification code (``run_distill_classification.py`` on the
official repository's ``classification`` branch) runs them: RKD with weights
25 (distance) and 50 (angle) on the L2-normalised pooled penultimate
features of both networks (:func:`rkd_pooled`); Hinton KD with ``T = 4`` and
weight 1 on ``T^2 KL`` (:func:`~rkd_tutorial.train.hkd`). The official code
writes the latter as ``16 * KL`` with no ``T^2`` inside, and ``16 = T^2``: the
same loss.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch.nn.functional as F

from ..losses import RKDLoss
from ..models import Classifier, EmbeddingNet
from ..train import Term, attention, ce, darkrank, fitnet, hkd, rkd, triplet

__all__ = [
    "METRIC_METHODS",
    "CLASSIFY_METHODS",
    "metric_terms",
    "classify_terms",
    "ce_labelled",
    "rkd_pooled",
]

#: Metric learning; ``triplet`` is the student trained without the teacher.
METRIC_METHODS = (
    "triplet",
    "fitnet",
    "attention",
    "darkrank",
    "rkd-d",
    "rkd-a",
    "rkd-da",
)

#: Methods that use the labels (the triplet loss) besides the teacher.
USES_LABELS = ("triplet", "fitnet", "attention", "darkrank")

#: Classification; ``baseline`` (cross-entropy alone) is the student trained without the teacher.
CLASSIFY_METHODS = (
    "baseline",
    "hkd",
    "fitnet",
    "attention",
    "rkd-d",
    "rkd-da",
    "hkd+rkd-da",
)


def metric_terms(
    method: str, student: EmbeddingNet, teacher: EmbeddingNet
) -> List[Term]:
    """The loss terms of a metric-learning method.

    See :data:`METRIC_METHODS`.
    """
    table: Dict[str, Callable[[], List[Term]]] = {
        "triplet": lambda: [triplet()],
        "fitnet": lambda: [
            triplet(),
            fitnet(
                1.0,
                student.backbone.out_channels,
                teacher.backbone.out_channels,
            ),
        ],
        "attention": lambda: [triplet(), attention(50.0)],
        "darkrank": lambda: [triplet(), darkrank(1.0)],
        "rkd-d": lambda: [rkd(1.0, 0.0)],
        "rkd-a": lambda: [rkd(0.0, 2.0)],
        "rkd-da": lambda: [rkd(1.0, 2.0)],
    }
    if method not in table:
        raise ValueError(
            f"unknown metric method {method!r}; choose from "
            f"{', '.join(METRIC_METHODS)}"
        )
    return table[method]()


def ce_labelled(weight: float = 1.0) -> Term:
    """Cross-entropy over the labelled examples of a batch only (label ``-1``: unlabelled).

    The mean runs over the labelled examples; a batch without any gives 0.
    """

    def fn(s, t, y):
        labelled = (y >= 0).sum().clamp_min(1)
        return (
            F.cross_entropy(s.logits, y, ignore_index=-1, reduction="sum")
            / labelled
        )

    return Term("ce", weight, fn, needs_teacher=False)


def rkd_pooled(
    distance_weight: float = 25.0, angle_weight: float = 50.0
) -> Term:
    """RKD on the L2-normalised pooled penultimate features of student and teacher.

    What the official classification code distils (``F.normalize`` of the
    globally pooled last feature map, both networks), with its weights 25 and 50.
    """
    loss = RKDLoss(distance_weight, angle_weight)
    name = (
        "rkd-"
        + ("d" if distance_weight else "")
        + ("a" if angle_weight else "")
    )
    return Term(
        name,
        1.0,
        lambda s, t, y: loss(
            F.normalize(s.pooled, dim=1), F.normalize(t.pooled, dim=1)
        ),
        teacher_fields=("pooled",),
    )


def classify_terms(
    method: str,
    student: Classifier,
    teacher: Classifier,
    partial_labels: bool = False,
) -> List[Term]:
    """The loss terms of a classification method (:data:`CLASSIFY_METHODS`).

    ``partial_labels``: some labels are ``-1`` (unlabelled); the
    cross-entropy then skips them (:func:`ce_labelled`) while the
    distillation terms use every image.
    """
    task = ce_labelled() if partial_labels else ce()
    table: Dict[str, Callable[[], List[Term]]] = {
        "baseline": lambda: [task],
        "hkd": lambda: [task, hkd(1.0, 4.0)],
        "fitnet": lambda: [
            task,
            fitnet(
                1.0,
                student.backbone.out_channels,
                teacher.backbone.out_channels,
            ),
        ],
        "attention": lambda: [task, attention(50.0)],
        "rkd-d": lambda: [task, rkd_pooled(25.0, 0.0)],
        "rkd-da": lambda: [task, rkd_pooled(25.0, 50.0)],
        "hkd+rkd-da": lambda: [task, hkd(1.0, 4.0), rkd_pooled(25.0, 50.0)],
    }
    if method not in table:
        raise ValueError(
            f"unknown classification method {method!r}; choose from "
            f"{', '.join(CLASSIFY_METHODS)}"
        )
    return table[method]()
