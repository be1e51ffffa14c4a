"""DarkRank: distilling the teacher's ranking of examples (a relational baseline).

Chen, Wang, Zhang, *DarkRank: Accelerating Deep Metric Learning via Cross
Sample Similarities Transfer*, AAAI 2018. Each example of the batch is a
query; the others are ranked by the teacher's similarity ``-alpha * ||x_q - x_i||^beta``.
The student is trained to maximise the Plackett-Luce likelihood of the
teacher's ranking computed from its own similarities (HardRank).

Like RKD it transfers relations among examples, but only their order for each
query, and only the first few places. The official RKD code's defaults are used:
``alpha = 3`` and ``beta = 3`` in the class, list length 4; its runs pass
``alpha = 2``, which is the default here.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .relational import _pair, check_pair, pairwise_distances

__all__ = ["hard_darkrank_loss", "HardDarkRank"]


def _scores(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    d = pairwise_distances(x)
    return -alpha * d.pow(beta)


def hard_darkrank_loss(
    student: torch.Tensor, teacher: torch.Tensor, alpha: float = 2.0, beta: float = 3.0, list_length: int = 4
) -> torch.Tensor:
    """HardDarkRank: negative Plackett-Luce log-likelihood of the teacher's top list.

    For each query ``q`` the teacher's ``list_length`` nearest other examples
    ``pi_1 .. pi_k`` are taken in order; with the student's scores ``s``,
    ``-log P(pi) = sum_i [ log sum_{j >= i} exp(s_{pi_j}) - s_{pi_i} ]`` where
    the inner sum runs over the list's remaining members (Eq. 6 of DarkRank,
    as in the official RKD code). Averaged over queries.
    """
    check_pair(student, teacher, min_n=list_length + 1, name="hard_darkrank_loss")
    student, teacher = _pair(student, teacher)   # half precision upcast: d^3 overflows float16 at d > 30
    n = student.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=student.device)
    score_t = _scores(teacher, alpha, beta).masked_fill(eye, float("-inf"))
    score_s = _scores(student, alpha, beta)
    order = score_t.topk(list_length, dim=1).indices             # N x k, the teacher's list
    ordered = score_s.gather(1, order)                           # student's scores, in that order
    # log sum over the suffix j >= i: reverse cumulative logsumexp
    suffix = torch.logcumsumexp(ordered.flip(1), dim=1).flip(1)
    return (suffix - ordered).sum(1).mean()


class HardDarkRank(nn.Module):
    """Module form of :func:`hard_darkrank_loss`."""

    def __init__(self, alpha: float = 2.0, beta: float = 3.0, list_length: int = 4):
        super().__init__()
        self.alpha, self.beta, self.list_length = alpha, beta, list_length

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return hard_darkrank_loss(student, teacher, self.alpha, self.beta, self.list_length)
