"""The direct formulation of RKD, as the official code writes it: the yardstick.

These functions follow github.com/lenscloth/RKD (``metric/loss.py``): the
distance loss takes distances from the Gram matrix; the angle loss builds the ``N x N x D`` tensor of all pairwise
differences, normalises it, and multiplies it with itself into ``N x N x N``
potentials. That is the clearest way to read Eq. (6)-(7), and the most
expensive: 19 GiB of activations at N = 1024, D = 512 in float32.

The package's own losses (:mod:`.relational`) must equal these to rounding
error; ``python -m rkd_tutorial.bench losses`` measures both. They share the
package's conventions (mean distance over off-diagonal pairs, see
:mod:`.relational`), so the comparison is about cost alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["direct_distance_loss", "direct_angle_loss"]


def _pdist(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pairwise distances as the official ``pdist``: Gram matrix, clamp, sqrt, zero diagonal."""
    sq = e.pow(2).sum(dim=1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=eps).sqrt()
    d = d.clone()
    d[range(len(e)), range(len(e))] = 0
    return d


def direct_distance_loss(
    student: torch.Tensor, teacher: torch.Tensor
) -> torch.Tensor:
    """RKD-D written directly from Eq. (3)-(5)."""
    n = student.shape[0]
    with torch.no_grad():
        t_d = _pdist(teacher)
        t_d = t_d / (t_d.sum() / (n * (n - 1)))
    d = _pdist(student)
    d = d / (d.sum() / (n * (n - 1)))
    return F.smooth_l1_loss(d, t_d, reduction="mean")


def direct_angle_loss(
    student: torch.Tensor, teacher: torch.Tensor
) -> torch.Tensor:
    """RKD-A written directly from Eq. (6)-(7).

    Builds the N x N x D and N x N x N tensors."""
    with torch.no_grad():
        td = (
            teacher[None, :, :] - teacher[:, None, :]
        )  # td[a, b] = t_b - t_a
        norm_td = F.normalize(td, p=2, dim=2)
        t_angle = torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)
    sd = student[None, :, :] - student[:, None, :]
    norm_sd = F.normalize(sd, p=2, dim=2)
    s_angle = torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1)
    return F.smooth_l1_loss(s_angle, t_angle, reduction="mean")
