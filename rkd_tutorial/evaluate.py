"""The evaluation protocol: Recall@K for retrieval, accuracy for classification.

Recall@K (the RKD paper's metric-learning metric, Section 4.1): every test
image is a query against all the others; it counts as a hit when at least one
of its ``k`` nearest neighbours (Euclidean distance, the query itself
excluded) has its label. The test classes are unseen during training.
"""

from __future__ import annotations

from typing import Dict, Iterable, Sequence, Tuple

import torch

__all__ = ["recall_at_k", "accuracy", "embed"]


def _check_finite(name: str, x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum()) if x.dim() == 2 else int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{name}: {bad} of the {len(x)} {what} contain NaN or inf, so no neighbour or class can be "
            "trusted; the model diverged (lower the learning rate) or its input is broken"
        )


def _check_labels(name: str, labels: torch.Tensor, n: int) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or len(labels) != n:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{name}: expects {n} labels as a 1-D tensor, got {shape}; "
                         "flatten an N x 1 tensor with labels.view(-1)")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name}: labels must be integers (class ids), got {labels.dtype}")


def recall_at_k(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ks: Sequence[int] = (1, 2, 4, 8),
    chunk_size: int = 1024,
) -> Dict[int, float]:
    """Recall@K of every query against all other examples: ``{k: fraction in [0, 1]}``.

    Computed ``chunk_size`` queries at a time, so 60k x 512 embeddings never
    build the whole ``N x N`` distance matrix, only ``chunk_size x N`` of it.
    The embeddings are centred and the squared distances computed in float64,
    so a large common offset (say ``1e4``) changes no neighbour. NaN or inf
    embeddings raise ``ValueError`` instead of giving a meaningless recall.
    """
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
        raise ValueError(f"recall_at_k expects N x D embeddings, got "
                         f"{tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__}")
    n = len(embeddings)
    _check_labels("recall_at_k", labels, n)
    if int(chunk_size) < 1:
        raise ValueError(f"recall_at_k: chunk_size must be a positive number of queries, got {chunk_size}")
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1 or ks[-1] > n - 1:
        raise ValueError(f"recall_at_k: every k must be in 1..N-1 = 1..{n - 1}, got {ks}")
    _check_finite("recall_at_k", embeddings, "embeddings")
    x = embeddings.double()
    x = x - x.mean(dim=0, keepdim=True)
    labels = labels.to(x.device)
    sq = x.pow(2).sum(1)
    hits = torch.zeros(len(ks), dtype=torch.long, device=x.device)
    for start in range(0, n, int(chunk_size)):
        q = slice(start, min(n, start + int(chunk_size)))
        d2 = sq[q, None] + sq[None, :] - 2.0 * (x[q] @ x.t())
        rows = torch.arange(q.start, q.stop, device=x.device)
        d2[rows - start, rows] = float("inf")                       # the query is not its own neighbour
        nearest = d2.topk(ks[-1], dim=1, largest=False).indices      # sorted, nearest first
        match = labels[nearest] == labels[q, None]
        first_hit = torch.where(match.any(1), match.float().argmax(1), torch.full_like(rows, ks[-1]))
        for i, k in enumerate(ks):
            hits[i] += (first_hit < k).sum()
    return {k: float(h) / n for k, h in zip(ks, hits.tolist())}


@torch.no_grad()
def embed(model: torch.nn.Module, data: Iterable[Tuple[torch.Tensor, torch.Tensor]], device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` in eval mode over ``data`` (batches of ``(x, y)``): ``(embeddings, labels)`` on the CPU."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    out_e, out_y = [], []
    for x, y in data:
        out_e.append(model(x.to(device)).embedding.float().cpu())
        out_y.append(y.cpu())
    model.train(was_training)
    if not out_e:
        raise ValueError("embed: the data yielded no examples")
    return torch.cat(out_e), torch.cat(out_y)


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: Iterable[Tuple[torch.Tensor, torch.Tensor]], device=None) -> float:
    """Top-1 accuracy of a classifier (its ``Output.logits``) over ``data``.

    Raises ``ValueError`` for labels that are not one class id per example
    (e.g. ``N x 1``), for logits of another batch size, and for NaN or inf logits.
    """
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    correct = total = 0
    try:
        for x, y in data:
            logits = model(x.to(device)).logits
            if logits is None or logits.dim() != 2:
                raise ValueError("accuracy: the model has no N x classes logits; is it a Classifier?")
            _check_labels("accuracy", y, len(logits))
            _check_finite("accuracy", logits, "logit rows")
            correct += (logits.argmax(1) == y.to(device)).sum().item()
            total += len(y)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("accuracy: the data yielded no examples")
    return correct / total
