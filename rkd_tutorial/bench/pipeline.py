"""``python -m rkd_tutorial.bench pipeline``: one epoch of RKD distillation, the usual way and this package's way.

The job is the book's metric-learning distillation on Fashion-MNIST classes
0-4: a ResNet-18 teacher (small-image stem, 512-d L2-normalised embedding)
and a ``cnn-32-64-128`` student (64-d embedding) trained with RKD-D + 2 RKD-A
(Eq. 8 with the paper's weights), Adam, lr 1e-4, batches of 128 with 32
examples from each of 4 classes (:class:`~rkd_tutorial.data.ClassBalancedBatchSampler`;
``--sampler shuffle`` for plain shuffling). The same epoch is timed two ways,
in the same process, on whatever device is present:

``conventional`` -- what the official code (github.com/lenscloth/RKD) does:

* ``torchvision.datasets.FashionMNIST`` restricted to classes 0-4 with
  ``torch.utils.data.Subset``; per-image transforms on PIL images
  (``RandomCrop(28, padding=2)``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize``); a ``DataLoader`` with ``num_workers=W`` (persistent
  workers), ``pin_memory`` on CUDA, the class-balanced sampler as
  ``batch_sampler``;
* eager PyTorch in float32 (PyTorch's default math modes, recorded in the
  output), the direct RKD formulation
  (:mod:`rkd_tutorial.losses.direct`, ``N x N x D`` and ``N^3`` tensors);
* the teacher runs forward under ``no_grad`` (in eval mode, as in the
  official ``run_distill.py``); ``loss.item()`` every step, to log it (the
  official code reads six such values per step; one is enough to
  synchronise). Batches are copied with ``non_blocking=True``, a small
  favour to this variant.

``project`` -- the same computation, arranged for a GPU:

* :class:`~rkd_tutorial.data.DeviceLoader`: the 30,000 images live on the
  GPU as one tensor; a batch is one ``index_select`` plus
  :func:`~rkd_tutorial.data.random_crop_flip` on the whole batch;
* the package's RKD loss (:class:`~rkd_tutorial.losses.RKDLoss` (1, 2): the
  fused Triton kernels on CUDA, the chunked PyTorch code on the CPU), in
  float32; the networks under bfloat16 autocast, ``channels_last``, cuDNN's
  autotuning (``benchmark`` mode, for the project's steps only);
* Adam's fused CUDA kernel (two launches for the whole update: step counters, then all parameters);
* the frozen teacher prepared for inference: batch norm folded into the
  convolutions (:func:`~rkd_tutorial.models.fold_batchnorm`) and, on CUDA,
  its weights stored in bfloat16 (no per-step weight casts);
* no host synchronisation inside the epoch: the losses are summed on the
  device and read once at the end;
* on CUDA, the whole training step -- teacher forward, student forward, loss,
  backward, ``Adam(capturable=True).step()`` -- captured once in a CUDA graph
  and replayed every step (:func:`~.graph_step.capture_train_step`).

Why the graph is "the big one". At this size a step does little arithmetic
for a GPU (the teacher's forward pass on a batch of 128 is ~117 GFLOP, a few
tenths of a millisecond at an H100's bfloat16 rate; the student's forward and
backward ~6 GFLOP; the loss less) but issues a few hundred small kernels:
every convolution, batch norm, ReLU, addition of the forward pass and its
backward, each term of the loss, Adam's update. For
each one Python and PyTorch's dispatcher spend roughly 5-20 microseconds on
the CPU to launch a kernel that runs for a comparable few microseconds on the
GPU. So the GPU waits for the CPU: the step is *launch-bound*. A
``loss.item()`` makes it worse: the CPU stops until the GPU has finished
everything queued, so the GPU then sits idle while Python prepares the next
step (*sync-bound*). What each trick buys:

* ``DeviceLoader``: no per-image Python (PIL crop, flip, ``ToTensor``), no
  collation and no host-to-device copy per batch; the CPU work per batch is
  a dozen kernel launches instead of 128 images' worth of Python.
* no ``.item()`` per step: the CPU can queue step ``k+1`` while the GPU
  still runs step ``k``, so launch latency overlaps with computation.
* bfloat16 + ``channels_last``: tensor-core convolutions, half the memory
  traffic; matters for the teacher, the only sizeable network here.
* fused RKD kernels: a handful of launches and no ``N x N x D`` tensors
  where the direct formulation needs dozens of launches and ~32 MB of
  temporaries per step.
* the CUDA graph: all the step's kernels are recorded once and replayed with
  *one* launch, so the CPU cost per step drops from milliseconds to tens of
  microseconds and the GPU runs the kernels back to back. Its constraints
  (fixed shapes and addresses, no host synchronisation inside the step, so
  the loss is called through its sync-free kernel entry point, a
  ``capturable`` optimizer, ...) are listed in :mod:`.graph_step`.

Every optional trick falls back to a simpler path when it fails (the
exception text is recorded): CUDA graph -> eager; fused Triton loss -> the
package's chunked PyTorch loss; bfloat16 -> float32 where unsupported.
``torch.compile(mode="reduce-overhead")`` (which captures CUDA graphs for
you) is deliberately not tried: its compilation takes tens of seconds to
minutes, more than the whole benchmark's GPU budget.

Known problem, and its probable cause (measured on an NVIDIA H200,
results/bench-pipeline.json; the fix below is not yet confirmed on a GPU):
the CUDA-graph variant's losses became NaN during the timed epoch, although
its one-step check against eager, inside :func:`build_project`, matched. The
graph only records addresses; the teacher and Adam's state were referenced
by nothing but the eager step closure, a local of :func:`build_project`, so
they were freed when it returned, and the eager baseline and the
conventional variant then got their memory. The replays went on reading
those "teacher weights" and writing Adam's moments into other tensors
(a negative ``exp_avg_sq`` gives ``sqrt`` -> NaN). :class:`~.graph_step.CapturedStep` now
keeps the closure alive. Safeguards: :func:`~.graph_step.checked_graph_runner` replays
:data:`~.graph_step.PROBE_STEPS` steps before each timed graph epoch and falls back to a
fresh eager runner if their loss is not finite (``project_fallback``); a
variant whose losses are not finite reports no ``speedup`` (``speedup_note``
says why); ``eager_speedup`` compares the conventional epoch with the eager
project one.

Timing: each variant first runs warm-up steps (worker start-up, cuDNN
heuristics, Triton's compilation, graph capture: reported separately as
``*_startup_s`` / ``project_setup_s``, never in the epoch time), then
``--epochs`` timed epochs, bracketed by ``torch.cuda.synchronize`` and
``time.perf_counter`` (plus CUDA events, whose GPU-side time is recorded too);
on the CPU, ``time.perf_counter`` alone. The median epoch is reported, with
images per second.

Output: a table, and ``<out>/bench-pipeline.json`` (written atomically):
``{"provenance": {...}, "runs": [{"workers", "conventional_s", "project_s",
"speedup", "project_variant", ...}, ...]}``; with ``--profile-steps K`` also
``torch.profiler``'s top-15 operators of K steps of each variant, printed and
stored under ``"profile"``.

On a CPU-only machine the defaults shrink (``--workers 2 0``, ``--limit
2048``, ``--steps 4``, one warm-up step) so that it finishes in about a
minute on two idle cores; the project path there is DeviceLoader + the
package's loss, eager, float32 (no graphs, no bfloat16).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import importlib
import math
import multiprocessing
import os
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models import fold_batchnorm
from . import common
from .conventional import build_conventional, conventional_epoch
from .graph_step import (
    GRAPH_WARMUP_ITERS, ProjectRunner, capture_train_step, checked_graph_runner, cudnn_autotune, make_train_step,
    probe_loss, project_epoch,
)

#: Default teacher and student (``rkd_tutorial.models.build_backbone`` names) and their embedding widths.
TEACHER, TEACHER_DIM = "resnet18", 512
STUDENT, STUDENT_DIM = "cnn-32-64-128", 64
#: RKD weights (Eq. 8, the paper's metric-learning setting) and the learning rate.
DISTANCE_WEIGHT, ANGLE_WEIGHT, LR = 1.0, 2.0, 1e-4
#: Classes used for training (the book trains on 0-4 and tests retrieval on 5-9).
TRAIN_CLASSES = (0, 1, 2, 3, 4)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: results/)")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="DataLoader worker counts of the conventional runs (default: 16 2 on CUDA, 2 0 on CPU)")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per variant and worker count (default 1)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--m-per-class", type=int, default=32, help="examples per class in a batch (default 32)")
    p.add_argument("--sampler", choices=("balanced", "shuffle"), default="balanced",
                   help="class-balanced batches (default) or plain shuffling, for both variants")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training images of classes 0-4 (default: all on CUDA, 2048 on CPU)")
    p.add_argument("--steps", type=int, default=None,
                   help="cap the steps of each timed epoch (default: the whole epoch on CUDA, 4 on CPU)")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="untimed steps before timing each variant (default 30 on CUDA, 1 on CPU)")
    p.add_argument("--teacher", default=TEACHER, help=f"teacher backbone (default {TEACHER})")
    p.add_argument("--student", default=STUDENT, help=f"student backbone (default {STUDENT})")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--no-graph", action="store_true", help="project variant: do not try the CUDA graph")
    p.add_argument("--no-eager-baseline", action="store_true",
                   help="on CUDA, do not also time the project variant without the graph")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="afterwards, profile K steps of each variant with torch.profiler (default 0: off)")
    p.add_argument("--seed", type=int, default=0)


# ----------------------------------------------------------------------------- data


def train_indices(labels: torch.Tensor, limit: Optional[int] = None) -> torch.Tensor:
    """Indices of the training images of classes 0-4, in file order; the first ``limit`` if given."""
    keep = torch.isin(labels, torch.tensor(TRAIN_CLASSES))
    idx = torch.nonzero(keep).flatten()
    return idx[:limit] if limit is not None else idx


@dataclass
class Data:
    """Both views of the same training images."""

    images: torch.Tensor        # uint8 N x 28 x 28 (classes 0-4, limited)
    labels: torch.Tensor        # int64 N
    indices: torch.Tensor       # positions of those images in the 60,000 training images
    root: Path
    batch_size: int
    m_per_class: int
    sampler: str
    seed: int

    def __len__(self) -> int:
        return len(self.labels)

    def batch_source(self) -> Callable[[int], torch.Tensor]:
        """``epoch -> num_batches x batch_size`` indices into ``images``: the same batches for both variants."""
        if self.sampler == "balanced":
            from ..data import ClassBalancedBatchSampler

            s = ClassBalancedBatchSampler(self.labels, self.m_per_class, self.batch_size, seed=self.seed)
            return s.epoch_indices
        return _shuffled_batches(len(self), self.batch_size, self.seed)

    def steps_per_epoch(self) -> int:
        return len(self.batch_source()(0))


def load_data(limit, batch_size, m_per_class, sampler, seed) -> Data:
    from ..data import default_root, load_fashion_mnist

    images, labels = load_fashion_mnist(train=True)  # makes sure the raw files exist
    idx = train_indices(labels, limit)
    return Data(images[idx], labels[idx], idx, default_root(), batch_size, m_per_class, sampler, seed)


def _shuffled_batches(n: int, batch_size: int, seed: int) -> Callable[[int], torch.Tensor]:
    from ..data.sampler import epoch_seed

    def batches(epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=g)
        return order[: (n // batch_size) * batch_size].view(-1, batch_size)

    return batches


# ----------------------------------------------------------------------------- models and losses


def build_models(teacher_arch: str, student_arch: str, seed: int):
    """(teacher, student) on the CPU, initialised from ``seed`` (random weights: this measures speed)."""
    from ..models import EmbeddingNet, build_backbone

    torch.manual_seed(seed)
    teacher = EmbeddingNet(build_backbone(teacher_arch, in_channels=1), TEACHER_DIM, normalize=True)
    student = EmbeddingNet(build_backbone(student_arch, in_channels=1), STUDENT_DIM)
    return teacher.eval(), student.train()


def direct_rkd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The conventional loss: the official code's direct RKD-D + 2 RKD-A."""
    from ..losses.direct import direct_angle_loss, direct_distance_loss

    return DISTANCE_WEIGHT * direct_distance_loss(student, teacher) + ANGLE_WEIGHT * direct_angle_loss(student, teacher)


def _torch_rkd_sync_free(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The package's PyTorch RKD (chunked angle loss) without ``check_pair``'s host synchronisation."""
    from ..losses.relational import _AngleLossFunction, distance_potential

    teacher = teacher.detach()
    with torch.no_grad():
        t = distance_potential(teacher)
    loss_d = F.smooth_l1_loss(distance_potential(student), t, reduction="mean", beta=1.0)
    want_grad = torch.is_grad_enabled() and student.requires_grad
    return DISTANCE_WEIGHT * loss_d + ANGLE_WEIGHT * _AngleLossFunction.apply(student, teacher, want_grad)


def project_loss(device: torch.device, s_example: torch.Tensor, t_example: torch.Tensor):
    """The project's RKD loss for ``device``: ``(fn, name, info)``.

    * CPU: :class:`~rkd_tutorial.losses.RKDLoss` itself (its input check,
      ``torch.isfinite(x).all()``, costs nothing there).
    * CUDA: the same fused kernels ``RKDLoss`` calls, through
      :func:`rkd_tutorial.kernels.rkd_loss`, which skips ``RKDLoss``'s
      input check: that check reads a boolean back to the host, a
      synchronisation that a CUDA graph cannot contain. The check runs once
      here, on a real batch, and the fused loss is compared with the direct
      formulation. If the kernels fail, the package's chunked PyTorch code
      (also sync-free) takes over.
    """
    from ..losses import RKDLoss
    from ..losses.relational import check_pair

    info: dict = {}
    s, t = s_example.detach().float(), t_example.detach().float()
    check_pair(s, t, min_n=3, name="RKDLoss")  # once, outside any graph
    with torch.no_grad():
        info["direct_loss"] = float(direct_rkd(s, t))
    if device.type != "cuda":
        fn = RKDLoss(DISTANCE_WEIGHT, ANGLE_WEIGHT)
        info["package_loss"] = float(fn(s, t))
        return fn, "RKDLoss (chunked PyTorch)", info
    try:
        from .. import kernels

        if not kernels.available():
            raise RuntimeError("rkd_tutorial.kernels.available() is False (Triton missing?)")

        def fused(student, teacher):
            return kernels.rkd_loss(student, teacher.detach(), DISTANCE_WEIGHT, ANGLE_WEIGHT)

        probe = s.clone().requires_grad_(True)
        value = fused(probe, t)
        value.backward()
        if not (math.isfinite(float(value)) and bool(torch.isfinite(probe.grad).all())):
            raise RuntimeError(f"fused loss not finite: {float(value)}")
        info["package_loss"] = float(value)
        return fused, "RKDLoss fused Triton kernels (rkd_tutorial.kernels.rkd_loss)", info
    except Exception as exc:  # noqa: BLE001 - any failure of the optional kernels
        info["triton_error"] = _exc_text(exc)
        with torch.no_grad():
            info["package_loss"] = float(_torch_rkd_sync_free(s, t))
        return _torch_rkd_sync_free, "RKDLoss chunked PyTorch (Triton failed)", info


# ----------------------------------------------------------------------------- the project's variant, built


def _exc_text(exc: BaseException, limit: int = 2000) -> str:
    return f"{type(exc).__name__}: {exc}"[:limit]


def _report(errors: List[str], label: str, exc: BaseException) -> str:
    """Record a failed part of the run as ``label: exception`` in ``errors``, print its traceback; the text."""
    text = _exc_text(exc)
    errors.append(f"{label}: {text}")
    traceback.print_exc()
    return text


def _cudnn_autotuned(build):
    """Run ``build(data, device, ...)`` with cuDNN's autotuning on CUDA, and keep it on for the runner's steps."""

    @functools.wraps(build)
    def wrapper(data, device, *args, **kwargs):
        autotune = device.type == "cuda"
        with cudnn_autotune(autotune):  # warm-up and graph capture choose the algorithms
            runner, loader = build(data, device, *args, **kwargs)
        runner.cudnn_autotune = runner.info["cudnn_benchmark"] = autotune
        return runner, loader

    return wrapper


@_cudnn_autotuned
def build_project(
    data: Data,
    device: torch.device,
    teacher_cpu: nn.Module,
    student_cpu: nn.Module,
    warmup_steps: int,
    try_graph: bool,
) -> tuple:
    """Models, loader, loss and step of the project variant, warmed up; returns ``(runner, loader)``.

    On CUDA: bfloat16 autocast (if supported), ``channels_last``, Adam with
    ``capturable=True``, then :func:`capture_train_step`; on any failure of
    the capture, the same step eagerly (recorded in ``runner.info``).
    """
    from ..data import DeviceLoader, random_crop_flip

    t0 = time.perf_counter()
    cuda = device.type == "cuda"
    info: dict = {}
    loader = DeviceLoader(
        data.images.unsqueeze(1), data.labels, data.batch_size, device=device, augment=random_crop_flip,
        sampler=_device_sampler(data), shuffle=data.sampler == "shuffle", seed=data.seed,
    )
    # The frozen teacher, prepared for inference: batch norm folded into the convolutions
    # (one kernel less per convolution, same function up to rounding).
    teacher = fold_batchnorm(copy.deepcopy(teacher_cpu).eval()).to(device)
    info["teacher_inference"] = "batch norm folded into the convolutions"
    student = copy.deepcopy(student_cpu).to(device).train()
    channels_last = cuda
    if channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
        student = student.to(memory_format=torch.channels_last)
    autocast_dtype = None
    if cuda:
        if torch.cuda.is_bf16_supported():
            autocast_dtype = torch.bfloat16
            # Its weights in bfloat16 once, instead of a cast kernel per weight at every step
            # (autocast skips a tensor already in its dtype, and still runs norms in float32).
            teacher = teacher.to(autocast_dtype)
            info["teacher_inference"] += ", weights stored in bfloat16"
        else:
            info["autocast_note"] = "bfloat16 unsupported on this GPU: float32"
    info.update(autocast=str(autocast_dtype).replace("torch.", "") if autocast_dtype else "float32",
                channels_last=channels_last)

    loader.set_epoch(0)
    batches = iter(loader)
    x, y = next(batches)
    example_autocast = torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                      enabled=autocast_dtype is not None)
    with torch.no_grad(), example_autocast:
        s_ex, t_ex = student(x).embedding, teacher(x).embedding
    loss_fn, loss_name, loss_info = project_loss(device, s_ex, t_ex)
    info["loss"] = loss_name
    info["loss_check_first_batch"] = loss_info

    def fresh_step(capturable: bool):
        # On CUDA, Adam's fused kernel: the whole update in two launches (its step counters live on
        # the GPU, as a CUDA graph needs), instead of a dozen multi-tensor kernels.
        opt = torch.optim.Adam(student.parameters(), lr=LR, capturable=capturable, fused=True) if cuda else \
            torch.optim.Adam(student.parameters(), lr=LR)
        info["optimizer"] = "Adam (fused)" if cuda else "Adam"
        loss_sum = torch.zeros((), device=device)
        return make_train_step(teacher, student, opt, loss_fn, loss_sum, autocast_dtype, channels_last), loss_sum

    runner = None
    if cuda and try_graph:
        try:
            warm = [(x, y)] + [b for _, b in zip(range(max(0, GRAPH_WARMUP_ITERS - 1)), batches)]
            step, loss_sum = fresh_step(capturable=True)
            captured = capture_train_step(step, warm)
            # Check one replay on a new batch against the same forward pass run eagerly
            # (the graph's loss is taken before its optimizer step): same loss, finite,
            # and the student's parameters updated.
            xr, yr = next(batches, warm[-1])
            with torch.no_grad(), torch.autocast("cuda", dtype=autocast_dtype, cache_enabled=False,
                                                 enabled=autocast_dtype is not None):
                xc = xr.contiguous(memory_format=torch.channels_last)
                ref = float(loss_fn(student(xc).embedding.float(), teacher(xc).embedding.float()))
            p = next(student.parameters())
            before = p.detach().clone()
            loss = float(captured(xr, yr))
            info["graph_check"] = {"replay_loss": loss, "eager_loss": ref}
            if not math.isfinite(loss):
                raise RuntimeError(f"the replayed step gave a non-finite loss {loss}")
            if abs(loss - ref) > 5e-2 * max(abs(ref), 1e-3):
                raise RuntimeError(f"the replayed step's loss {loss} differs from the eager one {ref}")
            if torch.equal(before, p.detach()):
                raise RuntimeError("the replayed step did not update the student's parameters")
            runner = ProjectRunner("cuda-graph", captured, loss_sum, student, info=info)
        except Exception as exc:  # noqa: BLE001 - fall back to eager on any capture failure
            info["graph_error"] = _exc_text(exc)
            info["graph_traceback"] = traceback.format_exc()[-3000:]
            print(f"  CUDA graph capture failed, falling back to eager: {info['graph_error'][:300]}", flush=True)
            for q in student.parameters():
                q.grad = None
            gc.collect()
            with contextlib.suppress(Exception):
                torch.cuda.synchronize(device)
    elif cuda:
        info["graph_note"] = "CUDA graph not tried"
    else:
        info["graph_note"] = "CPU: no CUDA graphs"
    if runner is None:
        step, loss_sum = fresh_step(capturable=False)
        runner = ProjectRunner("eager", step, loss_sum, student, info=info)

    # The remaining warm-up steps through the timed code path.
    info["warmup_loss"] = probe_loss(runner, loader, warmup_steps) if warmup_steps > 0 else 0.0
    common.synchronize(device)
    runner.setup_s = time.perf_counter() - t0
    return runner, loader


def _device_sampler(data: Data):
    if data.sampler != "balanced":
        return None
    from ..data import ClassBalancedBatchSampler

    return ClassBalancedBatchSampler(data.labels, data.m_per_class, data.batch_size, seed=data.seed)


# ----------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object], device: torch.device) -> tuple:
    """``(result, wall seconds, GPU seconds or None)`` of ``fn()``, synchronised on CUDA."""
    common.synchronize(device)
    start = end = None
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    out = fn()
    if end is not None:
        end.record()
    common.synchronize(device)
    wall = time.perf_counter() - t0
    gpu = start.elapsed_time(end) / 1e3 if start is not None else None
    return out, wall, gpu


def _median(xs):
    return statistics.median(xs) if xs else None


def _r(x, nd=4):
    return None if x is None else round(x, nd)


def time_conventional(data, device, workers, steps, warmup_steps, epochs, teacher_cpu, student_cpu) -> dict:
    """Build, warm up and time the conventional variant with ``workers`` DataLoader workers."""
    row: dict = {}
    t0 = time.perf_counter()
    teacher = copy.deepcopy(teacher_cpu).to(device).eval()
    student = copy.deepcopy(student_cpu).to(device).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=LR)
    loader, batches = build_conventional(data, device, workers, steps)
    first: list = []
    warm = conventional_epoch(loader, batches, 0, max(1, warmup_steps), teacher, student, optimizer, direct_rkd,
                              device, first)
    common.synchronize(device)
    row["conventional_startup_s"] = _r(first[0]) if first else None
    row["conventional_warmup_s"] = _r(time.perf_counter() - t0)
    walls, gpus, means = [], [], []
    for e in range(1, epochs + 1):
        losses, wall, gpu = timed(
            lambda e=e: conventional_epoch(loader, batches, e, steps, teacher, student, optimizer, direct_rkd,
                                           device), device)
        walls.append(wall)
        gpus.append(gpu)
        means.append(sum(losses) / len(losses))
        row["conventional_steps"] = len(losses)
    row.update(
        conventional_s=_r(_median(walls)), conventional_epochs_s=[_r(w) for w in walls],
        conventional_gpu_s=_r(_median([g for g in gpus if g is not None])),
        conventional_loss_warmup=_r(sum(warm) / len(warm), 6), conventional_loss=_r(means[-1], 6),
        conventional_losses_finite=all(math.isfinite(m) for m in means),
    )
    t1 = time.perf_counter()
    loader = batches = None  # shuts the persistent workers down
    gc.collect()
    row["conventional_shutdown_s"] = _r(time.perf_counter() - t1)
    return row


def time_project(runner: ProjectRunner, loader, device, steps, epochs, prefix="project") -> dict:
    walls, gpus, means = [], [], []
    n = 0
    for e in range(1, epochs + 1):
        runner.loss_sum.zero_()
        n, wall, gpu = timed(lambda e=e: project_epoch(runner, loader, e, steps), device)
        walls.append(wall)
        gpus.append(gpu)
        means.append(float(runner.loss_sum) / max(1, n))  # the one host synchronisation per epoch
    return {
        f"{prefix}_s": _r(_median(walls)), f"{prefix}_epochs_s": [_r(w) for w in walls],
        f"{prefix}_gpu_s": _r(_median([g for g in gpus if g is not None])),
        f"{prefix}_steps": n, f"{prefix}_loss": _r(means[-1], 6),
        f"{prefix}_losses_finite": all(math.isfinite(m) for m in means),
    }


# ----------------------------------------------------------------------------- profiling


def _profile_table(fn: Callable[[], object], device: torch.device, row_limit: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        common.synchronize(device)
    avg = prof.key_averages()
    if device.type == "cuda":
        from torch.autograd.profiler_util import FunctionEventAvg

        sort = "self_device_time_total" if hasattr(FunctionEventAvg, "self_device_time_total") \
            else "self_cuda_time_total"
    else:
        sort = "self_cpu_time_total"
    return avg.table(sort_by=sort, row_limit=row_limit)


def profile_variants(k, data, device, runner, project_loader, workers, teacher_cpu, student_cpu) -> dict:
    """torch.profiler's top-15 operators over ``k`` steps of each variant (after a short warm-up)."""
    out: dict = {"steps": k, "workers": workers}
    try:
        out["project"] = _profile_table(lambda: project_epoch(runner, project_loader, 1000, k), device)
    except Exception as exc:  # noqa: BLE001 - profiling is optional
        out["project_error"] = _exc_text(exc)
    try:
        teacher = copy.deepcopy(teacher_cpu).to(device).eval()
        student = copy.deepcopy(student_cpu).to(device).train()
        opt = torch.optim.Adam(student.parameters(), lr=LR)
        loader, batches = build_conventional(data, device, workers, k)
        conventional_epoch(loader, batches, 0, min(k, 2), teacher, student, opt, direct_rkd, device)
        out["conventional"] = _profile_table(
            lambda: conventional_epoch(loader, batches, 1001, k, teacher, student, opt, direct_rkd, device), device)
        loader = batches = None  # shuts the persistent workers down
    except Exception as exc:  # noqa: BLE001
        out["conventional_error"] = _exc_text(exc)
    for name in ("project", "conventional"):
        if name in out:
            print(f"\n== torch.profiler, {name}, {k} steps (top 15)\n{out[name]}")
        elif f"{name}_error" in out:
            print(f"\n== torch.profiler, {name}: failed: {out[f'{name}_error']}")
    return out


# ----------------------------------------------------------------------------- run


def _defaults(args, device: torch.device) -> None:
    cuda = device.type == "cuda"
    if args.workers is None:
        args.workers = [16, 2] if cuda else [2, 0]
    if args.limit is None and not cuda:
        args.limit = 2048
    if args.steps is None and not cuda:
        args.steps = 4
    if args.warmup_steps is None:
        args.warmup_steps = 30 if cuda else 1


def _math_modes() -> dict:
    """PyTorch's float32 math settings (the conventional variant runs with these defaults)."""
    getters = {
        "cudnn_benchmark": lambda: torch.backends.cudnn.benchmark,
        "cudnn_conv_fp32_precision": lambda: torch.backends.cudnn.conv.fp32_precision,
        "matmul_fp32_precision": lambda: torch.backends.cuda.matmul.fp32_precision,
        "cudnn_allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
    }
    modes = {}
    for name, get in getters.items():
        try:  # newer PyTorch may refuse to mix the legacy and the new getters
            modes[name] = get()
        except Exception:  # noqa: BLE001
            pass
    return modes


def _fmt(x, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def print_table(payload: dict) -> None:
    prov = payload["provenance"]
    print(f"\nOne epoch of RKD distillation ({prov['teacher']} -> {prov['student']}), {prov['images']} images, "
          f"batch {prov['batch_size']}, {prov['steps_per_epoch']} steps, on {prov['device']}")
    print(f"{'workers':>7}  {'conventional s':>14}  {'img/s':>8}  {'project s':>9}  {'img/s':>8}  {'speedup':>7}"
          "  variant")
    for r in payload["runs"]:
        line = (f"{r['workers']:>7}  {_fmt(r.get('conventional_s'), '14.3f')}"
                f"  {_fmt(r.get('conventional_images_per_s'), '8.0f')}"
                f"  {_fmt(r.get('project_s'), '9.3f')}  {_fmt(r.get('project_images_per_s'), '8.0f')}"
                f"  {_fmt(r.get('speedup'), '6.1f')}x  {r.get('project_variant')}")
        if r.get("project_eager_s") is not None:
            line += (f"  (eager, no graph: {r['project_eager_s']:.3f} s;"
                     f" the graph gains {_fmt(r.get('graph_speedup'), '.1f')}x)")
        print(line)
    print(f"(worker start-up and warm-up excluded; project setup incl. compilation/capture: "
          f"{prov.get('project_setup_s')} s; wall {prov['wall_s']} s)")


def _provenance(args, device, data, steps, per_epoch, runner, eager, errors, t_start, complete) -> dict:
    try:
        importlib.import_module("triton")
        triton_ok = True
    except Exception:  # noqa: BLE001
        triton_ok = False
    prov = common.provenance(device, time.perf_counter() - t_start)
    prov.update(
        complete=complete, images=len(data), batch_size=args.batch_size, m_per_class=args.m_per_class,
        sampler=args.sampler, steps_per_epoch=steps, full_epoch_steps=per_epoch, timed_epochs=args.epochs,
        warmup_steps=args.warmup_steps, limit=args.limit, teacher=f"{args.teacher} (512-d, L2-normalised, eval)",
        student=f"{args.student} (64-d)", lr=LR, rkd_weights=[DISTANCE_WEIGHT, ANGLE_WEIGHT],
        mp_start_method=multiprocessing.get_start_method(allow_none=True)
        or multiprocessing.get_context().get_start_method(),
        cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), triton_importable=triton_ok,
        math_modes=_math_modes(), project_variant=runner.variant if runner else None,
        project_setup_s=_r(runner.setup_s, 2) if runner else None,
        project_eager_setup_s=_r(eager.setup_s, 2) if eager else None,
        project_info={k: v for k, v in (runner.info.items() if runner else []) if k != "graph_traceback"},
        graph_traceback=runner.info.get("graph_traceback") if runner else None,
        conventional=("torchvision FashionMNIST + Subset(classes 0-4), per-image RandomCrop(28, padding=2) + "
                      "RandomHorizontalFlip + ToTensor + Normalize, DataLoader(batch_sampler=" + args.sampler +
                      ", persistent_workers, pin_memory on CUDA), eager fp32 (default math modes), direct RKD-D + "
                      "2 RKD-A, teacher eval + no_grad, Adam, loss.item() every step; worker start-up "
                      "(conventional_startup_s) and warm-up not in the epoch time"),
        project=("DeviceLoader (dataset on the device) + random_crop_flip, package RKD loss in fp32 (fused Triton "
                 "kernels on CUDA), bf16 autocast + channels_last + cuDNN benchmark mode on CUDA, teacher eval + "
                 "no_grad with batch norm folded (and bf16 weights on CUDA), fused Adam on CUDA, losses summed "
                 "on the device (one sync per epoch), whole step in one CUDA graph with Adam(capturable=True) "
                 "when project_variant == 'cuda-graph' (project_eager_*: the same without the graph, Adam "
                 "default); setup (compilation, capture, warm-up) not in the epoch time; torch.compile not tried"),
        errors=errors,
    )
    return prov


def run(args) -> int:
    t_start = time.perf_counter()
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _defaults(args, device)
    cuda = device.type == "cuda"
    data = load_data(args.limit, args.batch_size, args.m_per_class, args.sampler, args.seed)
    per_epoch = data.steps_per_epoch()
    steps = min(per_epoch, args.steps) if args.steps else per_epoch
    print(f"pipeline bench on {common.device_name(device)}: {len(data)} images of classes 0-4, batch "
          f"{args.batch_size} ({args.sampler}), {steps} of {per_epoch} steps per timed epoch, "
          f"workers {args.workers}", flush=True)
    teacher_cpu, student_cpu = build_models(args.teacher, args.student, args.seed)
    errors: List[str] = []
    out_path = Path(args.out) / "bench-pipeline.json"

    # The project variant first: its graph is captured before any DataLoader worker or
    # pin-memory thread exists (nothing else may touch the GPU during a capture).
    runner = project_loader = eager = eager_loader = None
    try:
        runner, project_loader = build_project(data, device, teacher_cpu, student_cpu, args.warmup_steps,
                                               try_graph=cuda and not args.no_graph)
        print(f"  project: {runner.variant}, loss {runner.info.get('loss')}, setup {runner.setup_s:.1f} s",
              flush=True)
    except Exception as exc:  # noqa: BLE001 - keep the conventional numbers
        _report(errors, "project", exc)
    if runner is not None and runner.variant == "cuda-graph" and not args.no_eager_baseline:
        try:
            eager, eager_loader = build_project(data, device, teacher_cpu, student_cpu, args.warmup_steps,
                                                try_graph=False)
        except Exception as exc:  # noqa: BLE001
            errors.append("project eager baseline: " + _exc_text(exc))

    def payload(runs, complete):
        prov = _provenance(args, device, data, steps, per_epoch, runner, eager, errors, t_start, complete)
        return {"provenance": prov, "runs": runs}

    runs: List[dict] = []
    for w in args.workers:
        row: dict = {"workers": w}
        try:
            row.update(time_conventional(data, device, w, steps, args.warmup_steps, args.epochs,
                                         teacher_cpu, student_cpu))
        except Exception as exc:  # noqa: BLE001
            row["conventional_error"] = _report(errors, f"conventional workers={w}", exc)
        if runner is not None:
            try:
                runner, project_loader, note = checked_graph_runner(
                    runner, project_loader,
                    lambda: build_project(data, device, teacher_cpu, student_cpu, args.warmup_steps, try_graph=False))
                if note:  # the project variant is eager from now on; no separate eager baseline needed
                    row["project_fallback"] = note
                    eager = eager_loader = None
                row.update(time_project(runner, project_loader, device, steps, args.epochs))
                row["project_variant"] = runner.variant
            except Exception as exc:  # noqa: BLE001
                row["project_error"] = _report(errors, f"project workers={w}", exc)
        if eager is not None:
            try:
                row.update(time_project(eager, eager_loader, device, steps, args.epochs, prefix="project_eager"))
            except Exception as exc:  # noqa: BLE001
                row["project_eager_error"] = _exc_text(exc)
        for k in ("conventional", "project", "project_eager"):
            if row.get(f"{k}_s"):
                row[f"{k}_images_per_s"] = round(row.get(f"{k}_steps", steps) * args.batch_size / row[f"{k}_s"], 1)
        # A variant whose losses went NaN did not train: its time is no valid speed-up.
        valid = row.get("project_losses_finite", True)
        if row.get("conventional_s") and row.get("project_s") and valid:
            row["speedup"] = round(row["conventional_s"] / row["project_s"], 3)
        elif not valid:
            row["speedup"] = None
            row["speedup_note"] = "the project variant's losses were not finite: its time is not a valid speed-up"
        if row.get("conventional_s") and row.get("project_eager_s") and row.get("project_eager_losses_finite", True):
            row["eager_speedup"] = round(row["conventional_s"] / row["project_eager_s"], 3)
        if row.get("project_eager_s") and row.get("project_s") and valid:
            row["graph_speedup"] = round(row["project_eager_s"] / row["project_s"], 3)
        row["images_per_epoch"] = row.get("project_steps", steps) * args.batch_size
        runs.append(row)
        print(f"  workers={w}: conventional {row.get('conventional_s')} s, project {row.get('project_s')} s "
              f"({row.get('project_variant')}), speedup {row.get('speedup')}", flush=True)
        common.write_json_atomic(out_path, payload(runs, complete=False))  # survives a timeout later on

    result = payload(runs, complete=True)
    common.write_json_atomic(out_path, result)
    print_table(result)
    print(f"wrote {out_path}", flush=True)

    if args.profile_steps > 0 and runner is not None:
        result["profile"] = profile_variants(args.profile_steps, data, device, runner, project_loader,
                                             args.workers[0], teacher_cpu, student_cpu)
        result["provenance"]["wall_s"] = round(time.perf_counter() - t_start, 3)
        common.write_json_atomic(out_path, result)
    ok = runner is not None and all(
        r.get("conventional_losses_finite") and r.get("project_losses_finite") for r in runs)
    return 0 if ok and not errors else 1
