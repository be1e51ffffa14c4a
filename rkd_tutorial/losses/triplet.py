"""The metric-learning task loss: triplet margin loss with distance-weighted sampling.

The RKD paper's teachers are trained with the triplet loss (Schroff et al.,
*FaceNet*, 2015) on triplets chosen by distance-weighted sampling (Wu et al.,
*Sampling Matters in Deep Embedding Learning*, ICCV 2017), margin 0.2, as in
the official code. Batches come from a class-balanced sampler (``m`` examples
per class, :class:`rkd_tutorial.data.ClassBalancedBatchSampler`), so every
anchor has positives.

Every anchor-positive pair ``(a, p)`` of the batch gets one negative ``n``,
drawn with probability proportional to ``q(d_an)^-1``, where
``q(d) ∝ d^(D-2) (1 - d^2/4)^((D-3)/2)`` is the density of distances between
uniform points on the unit sphere in ``D`` dimensions (Wu et al., Eq. 4). The
distance is clipped below at ``cut_off = 0.5`` and negatives farther than
``nonzero_loss_cutoff = 1.4`` (which could not violate the margin) get weight 0.

The weights span hundreds of orders of magnitude when ``D`` is large
(``q(0.5)^-1 / q(1.4)^-1`` is about ``e^370`` at ``D = 512``), so they are
computed as logarithms and each row is shifted by its largest *candidate*
log-weight before exponentiating: the candidates' weights then lie in
``(0, 1]`` and never all underflow. The result is the official code's
distribution (``metric/pairsampler.py``, ``DistanceWeighted``); the official
code shifts by the row's largest log-weight over *all* columns, the anchor
itself and its positives included, which at large ``D`` can underflow every
negative's weight in float32 and silently turn the sampling uniform.

The sampling is written with fixed shapes (an ``N x N`` matrix of sampled
negatives and a mask of valid triplets) so that it never synchronises with the
GPU, unlike ``nonzero()``-based code.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .relational import pairwise_distances

__all__ = [
    "distance_weights",
    "distance_weighted_negatives",
    "triplet_loss",
    "TripletLoss",
]


def distance_weights(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    cut_off: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
) -> torch.Tensor:
    """The sampling distribution of negatives, one row per anchor: ``N x N``, rows sum to 1.

    ``w[a, n]`` is the probability of drawing ``n`` as the negative of anchor
    ``a``: proportional to ``q(max(d_an, cut_off))^-1`` (Wu et al., Eq. 4) over
    the negatives with ``d_an < nonzero_loss_cutoff``, on L2-normalised
    embeddings. A row without such a negative is uniform over all of the
    anchor's negatives (as in the official code). Computed in float64.
    """
    with torch.no_grad():
        dim = embeddings.shape[1]
        x = F.normalize(embeddings.double(), dim=1)
        dist = pairwise_distances(x).clamp_min(cut_off)
        log_w = (2.0 - dim) * dist.log() - ((dim - 3.0) / 2.0) * (
            1.0 - 0.25 * dist * dist
        ).clamp_min(1e-30).log()
        negative = labels[None, :] != labels[:, None]
        candidate = negative & (dist < nonzero_loss_cutoff)
        log_w = log_w.masked_fill(~candidate, float("-inf"))
        shift = log_w.amax(dim=1, keepdim=True).clamp_min(
            torch.finfo(log_w.dtype).min
        )  # finite in empty rows
        w = (log_w - shift).exp()  # 0 outside the candidates
        w = torch.where(
            candidate.any(1, keepdim=True), w, negative.double()
        )  # uniform fallback
        return w / w.sum(1, keepdim=True).clamp_min(1e-300)


def distance_weighted_negatives(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    cut_off: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample a negative for every (anchor, positive) pair: an ``N x N`` index matrix.

    ``neg[a, p]`` is an example of another class than ``a``, drawn from row
    ``a`` of :func:`distance_weights`. A batch of one class has no negatives;
    its entries are then arbitrary and :func:`triplet_loss` masks them out.
    """
    with torch.no_grad():
        n = embeddings.shape[0]
        cdf = distance_weights(
            embeddings, labels, cut_off, nonzero_loss_cutoff
        ).cumsum(dim=1)
        u = (
            torch.rand(
                n,
                n,
                device=embeddings.device,
                generator=generator,
                dtype=torch.float64,
            )
            * cdf[:, -1:]
        )
        return torch.searchsorted(cdf, u, right=True).clamp_max(n - 1)


def triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
    cut_off: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Triplet margin loss ``mean max(0, d_ap - d_an + margin)``.

    Over the distance-weighted triplets of the batch.

    Args:
        embeddings: ``N x D`` embeddings (the loss acts on them as given; the
            sampling looks at their L2-normalised version).
        labels: ``N`` class labels; the batch needs at least two classes and
            some class with two examples.
    """
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"triplet_loss expects N x D embeddings and N labels, got "
            f"shapes "
            f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    neg = distance_weighted_negatives(
        embeddings, labels, cut_off, nonzero_loss_cutoff, generator
    )
    d = pairwise_distances(embeddings)
    same = labels[None, :] == labels[:, None]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    valid = (same & ~eye) & ~same.gather(
        1, neg
    )  # a real positive and a real negative
    losses = F.relu(
        d - d.gather(1, neg) + margin
    )  # [a, p]: d_ap - d_a,neg[a,p] + margin
    return (losses * valid).sum() / valid.sum().clamp_min(1)


class TripletLoss(nn.Module):
    """Module form of :func:`triplet_loss`: ``TripletLoss(margin)(embeddings, labels)``."""

    def __init__(
        self,
        margin: float = 0.2,
        cut_off: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
    ):
        super().__init__()
        self.margin, self.cut_off, self.nonzero_loss_cutoff = (
            margin,
            cut_off,
            nonzero_loss_cutoff,
        )

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return triplet_loss(
            embeddings,
            labels,
            self.margin,
            self.cut_off,
            self.nonzero_loss_cutoff,
        )
