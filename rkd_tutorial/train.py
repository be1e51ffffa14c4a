"""One training loop for every method: a weighted list of loss terms.

Training a teacher and distilling a student are the same loop; only the terms
change::

    # a metric-learning teacher
    fit(teacher, loader, [triplet()], config)
    # an RKD-DA student (the paper's: no task loss)
    fit(student, loader, [rkd(1, 2)], config, teacher=teacher)
    # a classification baseline, and a student of HKD + RKD-DA
    fit(classifier, loader, [ce()], config)
    fit(student, loader, [ce(), hkd(1, 4), rkd(25, 50)], config,
        teacher=teacher_clf)

Each :class:`Term` maps ``(student_output, teacher_output, labels)`` to a
scalar; the total loss is ``sum(weight * term)``, the RKD paper's Eq. (8)
(``L_task + lambda_KD * L_KD``). Terms with parameters of their own (the
FitNet regressor) are trained with the student.

The loop returns a :class:`History` (per-epoch loss of every term and any
metric ``evaluate`` returns, and the settings it ran with) and, given a
checkpoint path, saves its whole state after every epoch, atomically, and
resumes from it (:func:`fit` says when the resumed run is exact).

It is also the package's fast path: the one loop that the chapters, the
command line, the recipes and ``python -m rkd_tutorial.bench pipeline`` run.
What makes it fast, each switched by a :class:`TrainConfig` field whose
default is "where it pays" (the CPU runs the plain loop):

* no host synchronisation inside an epoch: the losses are summed on the
  device and read, and checked for NaN, once at its end;
* the frozen teacher is prepared for inference (batch norm folded, weights in
  the autocast dtype) and, where the data are not augmented, run once over
  the data before training (its outputs are looked up per batch);
* the precision the hardware runs natively (:func:`autocast_dtype`);
* the optimiser's fused kernel, ``channels_last`` convolutions, and
  optionally ``torch.compile`` (off by default).

Device-resident data is the loader's business
(:class:`~rkd_tutorial.data.DeviceLoader`); any loader of ``(x, y)`` batches works.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .losses import FitNetHint, HardDarkRank, RKDLoss, attention_loss, hkd_loss, triplet_loss
from .models import Output, fold_batchnorm
from .provenance import write_atomic

__all__ = [
    "Term", "TrainConfig", "History", "fit", "seed_everything", "save_atomic",
    "autocast_dtype", "make_optimizer", "prepare_teacher",
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
    """RKD-D and/or RKD-A on the embedding (Eq. 8).

    The weights are those of :class:`~rkd_tutorial.losses.RKDLoss`.
    """
    loss = RKDLoss(distance_weight, angle_weight)
    name = ("rkd-" + ("d" if distance_weight else "")
            + ("a" if angle_weight else ""))
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


# ----------------------------------------------------------------------------- configuration

@dataclass
class TrainConfig:
    """Optimisation settings, and the switches of the fast path.

    Optimisation: ``optimizer`` is "adam" or "sgd"; at each epoch listed in
    ``milestones`` the learning rate is multiplied by ``gamma``.

    Speed. Each switch changes how the numbers are computed, not what is
    computed: results agree up to rounding (``tests/test_train.py`` measures how
    closely). ``None`` means "where it pays", which is on a CUDA GPU:

    * ``autocast``: ``"auto"`` runs the networks in the precision the hardware
      runs natively (:func:`autocast_dtype`: bfloat16, float16 with a gradient
      scaler, or float32); or give a dtype (``torch.bfloat16``, or its name), or
      ``None`` for float32. The losses are always computed in float32.
    * ``fused``: the optimiser's fused kernel (one launch updates every parameter).
    * ``channels_last``: convolutions in NHWC layout, the one tensor cores use.
    * ``prepare_teacher``: run a copy of the frozen teacher made for inference
      (:func:`prepare_teacher`).
    * ``compile``: ``torch.compile`` the networks with this mode: ``"default"``,
      ``"reduce-overhead"`` (adds CUDA graphs: the step's kernels are launched
      as one), ``"max-autotune"``; ``None``: eager. Compiling takes a minute or
      more before the first step, so it is off unless asked for.
    """

    epochs: int = 10
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    milestones: Sequence[int] = ()
    gamma: float = 0.1
    seed: int = 0
    autocast: Union[str, torch.dtype, None] = "auto"
    fused: Optional[bool] = None
    channels_last: Optional[bool] = None
    prepare_teacher: Optional[bool] = None
    compile: Optional[str] = None


@dataclass
class History:
    """What a run of :func:`fit` produced and how.

    ``records``: one dict per epoch, ``[{'epoch': 1, 'loss': ..., 'rkd-da': ..., 'recall@1': ...}, ...]``.
    ``settings``: what the :class:`TrainConfig` switches resolved to on this
    device and loader (precision, optimiser, teacher, workers, whether a resume
    is exact), for the provenance of results.
    """

    records: List[Dict[str, float]] = field(default_factory=list)
    settings: Dict[str, object] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        """The precision the networks ran in, e.g. ``'float32'``, ``'bfloat16'`` or ``'float16 + GradScaler'``."""
        return self.settings.get("precision", "float32")

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


# ----------------------------------------------------------------------------- the switches, resolved

def autocast_dtype(device) -> Optional[torch.dtype]:
    """The autocast precision that ``device`` runs natively; None means float32.

    * CUDA, compute capability 8.0 or newer (A100, L4, H100, ...): bfloat16,
      which their tensor cores run, with float32's range.
    * Older CUDA GPUs (T4: 7.5, V100: 7.0): float16, the only half precision
      their tensor cores run. Its narrow range can flush small gradients to
      zero, so :func:`fit` scales the loss (``torch.amp.GradScaler``).
    * The CPU and other devices: None (float32).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def _autocast(setting, device: torch.device) -> Optional[torch.dtype]:
    """``TrainConfig.autocast`` resolved to a dtype: "auto", a dtype, a dtype's name, or None (float32)."""
    if isinstance(setting, str):
        setting = autocast_dtype(device) if setting == "auto" else getattr(torch, setting)
    return None if setting in (None, torch.float32) else setting


def _on_cuda(switch: Optional[bool], device: torch.device) -> bool:
    """A speed switch of :class:`TrainConfig`: as given, or, when None, on CUDA only."""
    return device.type == "cuda" if switch is None else bool(switch)


def make_optimizer(params, config: TrainConfig, device) -> torch.optim.Optimizer:
    """Adam or SGD with momentum, as ``config`` says; the fused kernel where ``config.fused`` says."""
    fused = {"fused": True} if _on_cuda(config.fused, torch.device(device)) else {}
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               **fused)
    raise ValueError(f"TrainConfig.optimizer must be 'adam' or 'sgd', got {config.optimizer!r}")


def prepare_teacher(teacher: nn.Module, dtype: Optional[torch.dtype] = None, channels_last: bool = False) -> nn.Module:
    """A copy of the frozen ``teacher`` made for inference; ``teacher`` itself is left as it is.

    Distillation only runs the teacher forward, in eval mode, so each batch
    norm is folded into the convolution before it (the same function, one
    kernel less per convolution: :func:`~rkd_tutorial.models.fold_batchnorm`),
    the weights are stored in the autocast ``dtype`` (else autocast casts every
    weight again at every step) and, with ``channels_last``, in NHWC layout.
    """
    prepared = fold_batchnorm(copy.deepcopy(teacher).eval()).requires_grad_(False)
    if dtype is not None:
        prepared = prepared.to(dtype)
    return prepared.to(memory_format=torch.channels_last) if channels_last else prepared


def _compiled(net: nn.Module, mode: Optional[str]):
    """``torch.compile(net, mode=mode)``, or ``net`` itself (eager) when ``mode`` is None."""
    return net if mode is None else torch.compile(net, mode=mode)


def _bars_off() -> bool:
    """``TQDM_DISABLE`` set (tests, stored outputs): no progress bars even where ``progress=True``."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


# ----------------------------------------------------------------------------- the loop

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
            distillation terms compare with (run in eval mode, without gradient;
            on CUDA a copy prepared for inference, see :class:`TrainConfig`).
        evaluate: called with the model after each epoch; its dict is added to the history.
        checkpoint: a file path; if it exists, training resumes from it, and it is
            rewritten (atomically) after every epoch.
        teacher_cache: when the loader holds its data on the device without
            augmentation (a :class:`~rkd_tutorial.data.DeviceLoader` with
            ``augment=None``) and the terms read only the teacher's embedding or
            logits, run the frozen teacher once over the data before training and
            look its outputs up per batch, instead of a teacher forward pass per
            step. The result is the same; the teacher's cost is paid once.

    Resuming. The checkpoint holds the model, the loss terms' own parameters,
    the optimiser, the schedule, the gradient scaler, the history, and the
    random state of torch (CPU and CUDA) and of the loader's ``generator``. A
    resumed run therefore ends exactly where an uninterrupted one would when
    the loader's random draws come from those or from ``(seed, epoch)``: a
    :class:`~rkd_tutorial.data.DeviceLoader`, a ``DataLoader`` without workers
    or with fresh workers every epoch, the recipes' loaders
    (:class:`rkd_tutorial.recipes.EpochDataLoader`, with any number of workers).
    It is not exact for a ``DataLoader`` with ``persistent_workers``, whose
    workers keep their own random streams from epoch to epoch, nor for an
    augmentation with a generator of its own. ``History.settings`` records the
    loader, its workers and which case applies (``"resume"``).
    """
    _check_terms(terms, teacher)
    if not any(t.needs_teacher for t in terms):
        teacher = None  # e.g. a triplet-only student: no term reads the teacher, so never run it
    device = next(model.parameters()).device
    dtype = _autocast(config.autocast, device)
    channels_last = _on_cuda(config.channels_last, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    extras = nn.ModuleList([t.module for t in terms if t.module is not None]).to(device)
    optimizer = make_optimizer(list(model.parameters()) + list(extras.parameters()), config, device)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # float16 only: see autocast_dtype
    parts = dict(model=model, extras=extras, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
    history, start = History(), 0
    seed_everything(config.seed)
    if checkpoint is not None and Path(checkpoint).exists():
        history.records, start = _load_checkpoint(checkpoint, device, parts, loader)

    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    teacher_outputs, cached, how = _frozen_teacher(teacher, loader, terms, config, device, dtype, autocast,
                                                   channels_last, teacher_cache)
    history.settings = _settings(config, device, dtype, optimizer, channels_last, how, loader)
    forward = _compiled(model, config.compile)
    model.train()
    for epoch in range(start, config.epochs):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        sums, steps = torch.zeros(len(terms) + 1, device=device), 0
        batches = loader.iter_with_index() if cached else ((None, x, y) for x, y in loader)
        for index, x, y in tqdm(batches, total=len(loader), desc=f"{desc} {epoch + 1}/{config.epochs}",
                                disable=not progress or _bars_off(), leave=False):
            x = _layout(x.to(device, non_blocking=True), channels_last)
            y = y.to(device, non_blocking=True)
            if config.compile is not None:
                torch.compiler.cudagraph_mark_step_begin()  # a new step: CUDA graphs may reuse the last one's memory
            with autocast:
                t_out = teacher_outputs(index, x) if teacher_outputs is not None else None
                s_out = forward(x)
            s_out, t_out = _float(s_out), _float(t_out)  # float32, each field when a term reads it
            values = [t.fn(s_out, t_out, y) for t in terms]
            loss = sum(t.weight * v for t, v in zip(terms, values))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()    # the scaler does nothing unless the precision is float16
            scaler.step(optimizer)
            scaler.update()
            sums += torch.stack([loss.detach()] + [v.detach().float() for v in values])  # on the device: no sync
            steps += 1
        scheduler.step()
        record = {"epoch": epoch + 1, **_epoch_means(sums, steps, terms, epoch)}
        if evaluate is not None:
            record.update(evaluate(model))
            model.train()
        history.records.append(record)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, parts, history, epoch + 1, loader)
    model.eval()
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return history


# ----------------------------------------------------------------------------- the loop's bookkeeping

def _check_terms(terms: Sequence[Term], teacher: Optional[nn.Module]) -> None:
    if not terms:
        raise ValueError("fit: give at least one loss term, e.g. [ce()] or [triplet()]")
    if teacher is None and any(t.needs_teacher for t in terms):
        names = [t.name for t in terms if t.needs_teacher]
        raise ValueError(f"fit: the terms {names} distil from a teacher; pass teacher=...")


def _epoch_means(sums: torch.Tensor, steps: int, terms: Sequence[Term], epoch: int) -> Dict[str, float]:
    """The epoch's mean loss and mean of each term: the epoch's one host synchronisation; stops on NaN or inf."""
    if steps == 0:
        raise ValueError("fit: the loader yielded no batch; is the dataset smaller than one batch?")
    names = ["loss"] + [t.name for t in terms]
    means = dict(zip(names, (sums / steps).tolist()))
    bad = [n for n, m in means.items() if not math.isfinite(m)]
    if bad:
        raise FloatingPointError(
            f"fit: the loss became NaN or inf in epoch {epoch + 1} ({', '.join(bad)}); lower the "
            "learning rate or the loss weights, or check the inputs (no checkpoint was written "
            "for this epoch)"
        )
    return means


def _frozen_teacher(teacher, loader, terms, config, device, dtype, autocast, channels_last, cache):
    """How the loop gets the teacher's outputs: ``(outputs(index, x) or None, cached, description)``."""
    if teacher is None:
        return None, False, None
    teacher.eval()
    how = "eval mode"
    if _on_cuda(config.prepare_teacher, device):
        teacher = prepare_teacher(teacher, dtype, channels_last)
        how = "a copy prepared for inference (batch norm folded" + (f", {_name(dtype)} weights)" if dtype else ")")
    if cache and _cacheable(loader, terms):
        table = _teacher_outputs(teacher, loader.images, autocast, channels_last)
        rows = lambda index, x: Output(table.embedding[index], None if table.logits is None else table.logits[index],
                                       table.pooled[index], [])
        return rows, True, how + ", its outputs computed once before training"
    net = _compiled(teacher, config.compile)

    def outputs(index, x):
        with torch.no_grad():
            return net(x)

    return outputs, False, how + ", run at every step"


def _cacheable(loader, terms: Sequence[Term]) -> bool:
    fields = {f for t in terms if t.needs_teacher for f in t.teacher_fields}
    return (hasattr(loader, "iter_with_index") and getattr(loader, "augment", True) is None
            and "stages" not in fields)


@torch.no_grad()
def _teacher_outputs(teacher: nn.Module, images: torch.Tensor, autocast, channels_last: bool,
                     batch_size: int = 1024) -> Output:
    """The teacher's embedding, logits and pooled features for every stored image (no stages)."""
    outs = []
    for i in range(0, len(images), batch_size):
        with autocast:
            o = teacher(_layout(images[i:i + batch_size], channels_last))
        outs.append(Output(_f32(o.embedding), _f32(o.logits), _f32(o.pooled), []))
    cat = lambda xs: None if xs[0] is None else torch.cat(xs)
    return Output(cat([o.embedding for o in outs]), cat([o.logits for o in outs]), cat([o.pooled for o in outs]), [])


def _f32(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.float()


class _InFloat32:
    """An :class:`~rkd_tutorial.models.Output` whose fields are cast to float32 when a loss term reads them.

    The losses are computed in float32 even under autocast (every field on its
    own: an L2-normalised embedding leaves autocast in float32, the feature maps
    do not). A field that no term reads, such as the feature maps for RKD, is
    never cast: under autocast that saves a float32 copy of each of them at
    every step. On float32 outputs, ``.float()`` returns the tensor itself.
    """

    def __init__(self, out: Output) -> None:
        self._out = out

    @functools.cached_property
    def embedding(self):
        return _f32(self._out.embedding)

    @functools.cached_property
    def logits(self):
        return _f32(self._out.logits)

    @functools.cached_property
    def pooled(self):
        return _f32(self._out.pooled)

    @functools.cached_property
    def stages(self):
        return [_f32(s) for s in self._out.stages]


def _float(out: Optional[Output]) -> Optional[_InFloat32]:
    return None if out is None else _InFloat32(out)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _settings(config, device, dtype, optimizer, channels_last, teacher, loader) -> Dict[str, object]:
    """What ``config`` resolved to here (:attr:`History.settings`)."""
    return {
        "device": str(device),
        "precision": "float32" if dtype is None else _name(dtype) + (" + GradScaler" if dtype == torch.float16 else ""),
        "optimizer": config.optimizer + (" (fused)" if optimizer.defaults.get("fused") else ""),
        "channels_last": channels_last,
        "compile": config.compile,
        "teacher": teacher,
        "loader": type(loader).__name__,
        "workers": getattr(loader, "num_workers", 0),
        "resume": _resume_rule(loader),
    }


def _resume_rule(loader) -> str:
    """Whether a resumed run reproduces an uninterrupted one with this loader (see :func:`fit`)."""
    if getattr(loader, "persistent_workers", False) and not getattr(loader, "seeded_by_epoch", False):
        return "not exact: persistent DataLoader workers keep random streams that a checkpoint does not hold"
    return "exact"


def _save_checkpoint(path, parts: dict, history: History, epoch: int, loader) -> None:
    generator = getattr(loader, "generator", None)
    save_atomic({
        **{name: part.state_dict() for name, part in parts.items()},
        "history": history.records, "epoch": epoch, "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "loader_rng": generator.get_state() if generator is not None else None,
    }, path)


def _load_checkpoint(path, device, parts: dict, loader) -> Tuple[List[Dict[str, float]], int]:
    """Restore ``parts`` (model, extras, optimizer, scheduler, scaler) and the random state; ``(records, epoch)``."""
    state = torch.load(path, map_location=device, weights_only=True)
    for name, part in parts.items():
        if state.get(name):  # a disabled gradient scaler has an empty state
            part.load_state_dict(state[name])
    torch.set_rng_state(state["rng"].cpu())
    if torch.cuda.is_available() and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu())
    generator = getattr(loader, "generator", None)
    if generator is not None and state.get("loader_rng") is not None:
        generator.set_state(state["loader_rng"].cpu())
    return state["history"], state["epoch"]
