"""Individual knowledge distillation: the student mimics each example's output.

The three baselines the RKD paper compares with (Section 4):

* Hinton KD (HKD): Hinton, Vinyals, Dean, *Distilling the Knowledge in a Neural
  Network*, 2015. KL divergence between temperature-softened class
  distributions, Eq. (2) of the RKD paper with ``psi = softmax(f / T)``.
* FitNets: Romero et al., *FitNets: Hints for Thin Deep Nets*, ICLR 2015. A
  learnable regressor maps the student's features to the teacher's width; the
  hint loss is the squared error between them.
* Attention transfer (AT): Zagoruyko, Komodakis, *Paying More Attention to
  Attention*, ICLR 2017. Spatial attention maps (the channel mean of
  ``|activation|^p``, L2-normalised) of several stages, compared with squared
  error and summed over the stages, as the official RKD code, RepDistiller
  and torchdistill do.

All of them compare student and teacher example by example; none looks at how
examples relate to each other. That is what RKD (``relational.py``) adds.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "hkd_loss",
    "HKDLoss",
    "FitNetHint",
    "attention_map",
    "attention_loss",
    "AttentionLoss",
]


def hkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Hinton KD: ``T^2 * KL(softmax(t / T) || softmax(s / T))``.

    Averaged over the batch. The factor ``T^2`` keeps the gradient's scale
    independent of ``T`` (Hinton et al., Section 2), so the loss can be
    mixed with cross-entropy unchanged. The teacher side carries no
    gradient.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"hkd_loss: student and teacher logits must have the same "
            f"shape (N x classes), got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}"
        )
    if not temperature > 0:
        raise ValueError(
            f"hkd_loss: temperature must be > 0, got {temperature}"
        )
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return (
        F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
        * temperature**2
    )


class HKDLoss(nn.Module):
    """Module form of :func:`hkd_loss` with a fixed temperature."""

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = temperature

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor
    ) -> torch.Tensor:
        return hkd_loss(student_logits, teacher_logits, self.temperature)


class FitNetHint(nn.Module):
    """FitNet hint loss with a learnable regressor: ``||r(s) - t||^2``, mean.

    The regressor ``r`` is a 1x1 convolution for feature maps
    (``N x C x H x W``) or a linear layer for vectors (``N x D``), without a
    bias (as in the official code). Its parameters belong to this module:
    give them to the student's optimizer (``train.fit`` does). Feature maps
    of different sizes are matched by adaptive average pooling of the
    student's to the teacher's spatial size.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        spatial: bool = True,
    ):
        super().__init__()
        if spatial:
            self.regressor = nn.Conv2d(
                student_channels, teacher_channels, kernel_size=1, bias=False
            )
        else:
            self.regressor = nn.Linear(
                student_channels, teacher_channels, bias=False
            )
        self.spatial = spatial

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor
    ) -> torch.Tensor:
        want = 4 if self.spatial else 2
        if student.dim() != want or teacher.dim() != want:
            raise ValueError(
                f"FitNetHint(spatial={self.spatial}) expects {want}-D "
                f"student and teacher features, got shapes "
                f"{tuple(student.shape)} and {tuple(teacher.shape)}"
            )
        if self.spatial and student.shape[-2:] != teacher.shape[-2:]:
            student = F.adaptive_avg_pool2d(student, teacher.shape[-2:])
        return F.mse_loss(self.regressor(student), teacher.detach())


def attention_map(features: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Spatial attention of a feature map: ``normalize(mean_c |A_c|^p)``.

    Flattened to ``N x HW`` (Eq. 2 of AT). ``|A_c|^p`` as in the AT paper;
    the official code writes ``A.pow(p)``, the same for the paper's
    ``p = 2`` (and for post-ReLU features at any ``p``).
    """
    if features.dim() != 4:
        raise ValueError(
            f"attention_map expects N x C x H x W features, got shape "
            f"{tuple(features.shape)}"
        )
    return F.normalize(features.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def attention_loss(
    student_features: Sequence[torch.Tensor],
    teacher_features: Sequence[torch.Tensor],
    p: int = 2,
) -> torch.Tensor:
    """Attention transfer: the **sum** over stages of ``mean((Q_s - Q_t)^2)``.

    ``student_features`` and ``teacher_features`` list the feature maps of
    matching stages; their channel counts may differ, the attention maps do
    not have channels. Student maps are pooled to the teacher's spatial size
    where they differ. Summed over stages like the official RKD code
    (``at_ratio * (AT(b2) + AT(b3) + AT(b4))``), RepDistiller and torchdistill,
    so a weight means the same as theirs (the official metric runs use 50).
    """
    if (
        len(student_features) != len(teacher_features)
        or not student_features
    ):
        raise ValueError(
            f"attention_loss needs the same non-zero number of stages on both sides, got "
            f"{len(student_features)} (student) and {len(teacher_features)} (teacher)"
        )
    total = 0.0
    for s, t in zip(student_features, teacher_features):
        if s.shape[-2:] != t.shape[-2:]:
            s = F.adaptive_avg_pool2d(s, t.shape[-2:])
        total = (
            total
            + (attention_map(s, p) - attention_map(t.detach(), p))
            .pow(2)
            .mean()
        )
    return total


class AttentionLoss(nn.Module):
    """Module form of :func:`attention_loss`."""

    def __init__(self, p: int = 2):
        super().__init__()
        self.p = p

    def forward(self, student_features, teacher_features) -> torch.Tensor:
        return attention_loss(student_features, teacher_features, self.p)
