"""One training loop for every method: a weighted list of loss terms.

Training a teacher and distilling a student are the same loop; only the terms
change::

    fit(teacher, loader, [triplet()], config)                       # metric-learning teacher
    fit(student, loader, [rkd(1, 2)], config, teacher=teacher)      # RKD-DA student (paper: no task loss)
    fit(classifier, loader, [ce()], config)                         # classification baseline
    fit(student, loader, [ce(), hkd(1, 4), rkd(25, 50)], config, teacher=teacher_clf)

Each :class:`Term` maps ``(student_output, teacher_output, labels)`` to a
scalar; the total loss is ``sum(weight * term)``, the RKD paper's Eq. (8)
(``L_task + lambda_KD * L_KD``). Terms with parameters of their own (the
FitNet regressor) are trained with the student.

The loop returns a :class:`History` (per-epoch loss of every term and any
metric ``evaluate`` returns) and, given a checkpoint path, saves its whole
state after every epoch, atomically, and resumes from it: a resumed run ends
where an uninterrupted one would.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .losses import FitNetHint, HardDarkRank, RKDLoss, attention_loss, hkd_loss, triplet_loss
from .models import Output
from .provenance import write_atomic

__all__ = [
    "Term", "TrainConfig", "History", "fit", "seed_everything", "save_atomic",
    "ce", "triplet", "rkd", "hkd", "fitnet", "attention", "darkrank",
]


# ----------------------------------------------------------------------------- loss terms

@dataclass
class Term:
    """``weight * fn(student_output, teacher_output, labels)``; ``module`` holds trainable extras."""

    name: str
    weight: float
    fn: Callable[[Output, Optional[Output], torch.Tensor], torch.Tensor]
    module: Optional[nn.Module] = None
    needs_teacher: bool = True
    teacher_fields: Tuple[str, ...] = ("embedding",)   # what of the teacher's Output it reads


def ce(weight: float = 1.0) -> Term:
    """Cross-entropy on the student's logits (the classification task loss)."""
    return Term("ce", weight, lambda s, t, y: F.cross_entropy(s.logits, y), needs_teacher=False)


def triplet(weight: float = 1.0, margin: float = 0.2) -> Term:
    """Triplet loss with distance-weighted sampling on the embedding (the metric-learning task loss)."""
    return Term("triplet", weight, lambda s, t, y: triplet_loss(s.embedding, y, margin), needs_teacher=False)


def rkd(distance_weight: float = 1.0, angle_weight: float = 2.0) -> Term:
    """RKD-D and/or RKD-A on the embedding (Eq. 8); weights as in :class:`~rkd_tutorial.losses.RKDLoss`."""
    loss = RKDLoss(distance_weight, angle_weight)
    name = "rkd-" + ("d" if distance_weight else "") + ("a" if angle_weight else "")
    return Term(name, 1.0, lambda s, t, y: loss(s.embedding, t.embedding))


def hkd(weight: float = 1.0, temperature: float = 4.0) -> Term:
    """Hinton KD on the logits."""
    return Term("hkd", weight, lambda s, t, y: hkd_loss(s.logits, t.logits, temperature), teacher_fields=("logits",))


def fitnet(weight: float, student_channels: int, teacher_channels: int, stage: int = -1) -> Term:
    """FitNet hint on one stage's feature maps, through a learnable 1x1-conv regressor."""
    hint = FitNetHint(student_channels, teacher_channels, spatial=True)
    return Term("fitnet", weight, lambda s, t, y: hint(s.stages[stage], t.stages[stage]), module=hint,
                teacher_fields=("stages",))


def attention(weight: float, stages: Sequence[int] = (-3, -2, -1)) -> Term:
    """Attention transfer on several stages (matched from the last one backwards)."""
    return Term("attention", weight, lambda s, t, y: attention_loss(
        [s.stages[i] for i in stages], [t.stages[i] for i in stages]), teacher_fields=("stages",))


def darkrank(weight: float = 1.0, alpha: float = 2.0, beta: float = 3.0, list_length: int = 4) -> Term:
    """HardDarkRank on the embedding (official run defaults: alpha 2, beta 3, list length 4)."""
    loss = HardDarkRank(alpha, beta, list_length)
    return Term("darkrank", weight, lambda s, t, y: loss(s.embedding, t.embedding))


# ----------------------------------------------------------------------------- the loop

@dataclass
class TrainConfig:
    """Optimisation settings. ``optimizer``: "adam" or "sgd"; ``milestones``: epochs where ``lr *= gamma``."""

    epochs: int = 10
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    milestones: Sequence[int] = ()
    gamma: float = 0.1
    seed: int = 0
    autocast: Optional[torch.dtype] = None     # e.g. torch.bfloat16 on a GPU


@dataclass
class History:
    """Per-epoch records: ``[{'epoch': 1, 'loss': ..., 'rkd-da': ..., 'recall@1': ...}, ...]``."""

    records: List[Dict[str, float]] = field(default_factory=list)

    def series(self, key: str) -> List[float]:
        """One column, e.g. ``history.series('loss')``."""
        return [r[key] for r in self.records if key in r]

    def __len__(self) -> int:
        return len(self.records)


def seed_everything(seed: int) -> None:
    """Seed Python, and torch on every device."""
    random.seed(seed)
    torch.manual_seed(seed)


def save_atomic(obj, path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def _optimizer(params, config: TrainConfig):
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise ValueError(f"TrainConfig.optimizer must be 'adam' or 'sgd', got {config.optimizer!r}")


def fit(
    model: nn.Module,
    loader,
    terms: Sequence[Term],
    config: TrainConfig,
    teacher: Optional[nn.Module] = None,
    evaluate: Optional[Callable[[nn.Module], Dict[str, float]]] = None,
    checkpoint: Optional[os.PathLike] = None,
    progress: bool = True,
    desc: str = "train",
    teacher_cache: bool = True,
) -> History:
    """Train ``model`` on ``loader`` (batches of ``(x, y)``) to minimise the weighted ``terms``.

    Args:
        teacher: a frozen network whose :class:`~rkd_tutorial.models.Output` the
            distillation terms compare with (run in eval mode, without gradient).
        evaluate: called with the model after each epoch; its dict is added to the history.
        checkpoint: a file path; if it exists, training resumes from it, and it is
            rewritten (atomically) after every epoch.
        teacher_cache: when the loader holds its data on the device without
            augmentation (a :class:`~rkd_tutorial.data.DeviceLoader` with
            ``augment=None``) and the terms read only the teacher's embedding or
            logits, run the frozen teacher once over the data before training and
            look its outputs up per batch, instead of a teacher forward pass per
            step. The result is the same; the teacher's cost is paid once.
    """
    if not terms:
        raise ValueError("fit: give at least one loss term, e.g. [ce()] or [triplet()]")
    if teacher is None and any(t.needs_teacher for t in terms):
        names = [t.name for t in terms if t.needs_teacher]
        raise ValueError(f"fit: the terms {names} distil from a teacher; pass teacher=...")
    if not any(t.needs_teacher for t in terms):
        teacher = None  # e.g. a triplet-only student: no term reads the teacher, so never run it
    device = next(model.parameters()).device
    extras = nn.ModuleList([t.module for t in terms if t.module is not None]).to(device)
    params = list(model.parameters()) + list(extras.parameters())
    optimizer = _optimizer(params, config)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    history, start = History(), 0
    seed_everything(config.seed)

    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        extras.load_state_dict(state["extras"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start = History(state["history"]), state["epoch"]
        torch.set_rng_state(state["rng"].cpu())
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu())

    autocast = torch.autocast(device.type, dtype=config.autocast, enabled=config.autocast is not None)
    cache = None
    if teacher is not None:
        teacher.eval()
        if teacher_cache and _cacheable(loader, terms):
            cache = _teacher_outputs(teacher, loader.images, autocast)
    model.train()
    for epoch in range(start, config.epochs):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        sums = torch.zeros(len(terms) + 1, device=device)
        steps = 0
        batches = loader.iter_with_index() if cache is not None else ((None, x, y) for x, y in loader)
        for index, x, y in tqdm(batches, total=len(loader), desc=f"{desc} {epoch + 1}/{config.epochs}",
                                disable=not progress, leave=False):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast:
                t_out = None
                if cache is not None:
                    t_out = Output(cache.embedding[index], None if cache.logits is None else cache.logits[index], cache.pooled[index], [])
                elif teacher is not None:
                    with torch.no_grad():
                        t_out = teacher(x)
                s_out = model(x)
            values = [t.fn(_float(s_out), _float(t_out), y) for t in terms]
            loss = sum(t.weight * v for t, v in zip(terms, values))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += torch.stack([loss.detach()] + [v.detach().float() for v in values])
            steps += 1
        scheduler.step()
        if steps == 0:
            raise ValueError("fit: the loader yielded no batch; is the dataset smaller than one batch?")
        means = (sums / steps).tolist()                         # one host synchronisation per epoch
        if not all(math.isfinite(m) for m in means):
            bad = [n for n, m in zip(["loss"] + [t.name for t in terms], means) if not math.isfinite(m)]
            raise FloatingPointError(
                f"fit: the loss became NaN or inf in epoch {epoch + 1} ({', '.join(bad)}); lower the "
                "learning rate or the loss weights, or check the inputs (no checkpoint was written "
                "for this epoch)"
            )
        record = {"epoch": epoch + 1, "loss": means[0], **{t.name: m for t, m in zip(terms, means[1:])}}
        if evaluate is not None:
            record.update(evaluate(model))
            model.train()
        history.records.append(record)
        if checkpoint is not None:
            save_atomic({
                "model": model.state_dict(), "extras": extras.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "history": history.records, "epoch": epoch + 1, "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            }, checkpoint)
    model.eval()
    return history


def _cacheable(loader, terms: Sequence[Term]) -> bool:
    fields = {f for t in terms if t.needs_teacher for f in t.teacher_fields}
    return (hasattr(loader, "iter_with_index") and getattr(loader, "augment", True) is None
            and "stages" not in fields)


@torch.no_grad()
def _teacher_outputs(teacher: nn.Module, images: torch.Tensor, autocast, batch_size: int = 1024) -> Output:
    """The teacher's embedding, logits and pooled features for every stored image (no stages)."""
    outs = []
    for i in range(0, len(images), batch_size):
        with autocast:
            o = teacher(images[i:i + batch_size])
        outs.append(_float(o))
    cat = lambda xs: None if xs[0] is None else torch.cat(xs)
    return Output(cat([o.embedding for o in outs]), cat([o.logits for o in outs]), cat([o.pooled for o in outs]), [])


def _float(out: Optional[Output]) -> Optional[Output]:
    """Losses are computed in float32 even under bf16 autocast (every field, each on its own:
    an L2-normalised embedding comes out of autocast in float32 while the stages do not)."""
    if out is None:
        return out
    f = lambda t: None if t is None else t.float()
    return Output(f(out.embedding), f(out.logits), f(out.pooled), [f(s) for s in out.stages])
