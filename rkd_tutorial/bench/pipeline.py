"""``python -m rkd_tutorial.bench pipeline``: :func:`rkd_tutorial.train.fit` against the conventional loop.

The job: the book's metric-learning distillation on Fashion-MNIST classes 0-4,
a ResNet-18 teacher (small-image stem, 512-d L2-normalised embedding, random
weights: this measures speed) and a ``cnn-32-64-128`` student (64-d), RKD-D +
2 RKD-A (Eq. 8), Adam with learning rate 1e-4, batches of 4 classes x 32
images (:class:`~rkd_tutorial.data.ClassBalancedBatchSampler`), random crop
(padding 2) and flip. Two variants train it in this process, on the same
images and batches, from the same initial weights, for as many steps:

* ``conventional`` (:mod:`.conventional`): the official code's loop, once per
  ``--workers`` count;
* ``project``: ``train.fit`` itself, as the chapters, the command line and the
  recipes run it, on a :class:`~rkd_tutorial.data.DeviceLoader`, with the
  :class:`~rkd_tutorial.train.TrainConfig` stored beside its number (fit's
  defaults, plus ``--compile`` if given) and what that config resolved to on
  this device (``History.settings``: precision, fused optimiser, ...).

Timing: ``--warmup-epochs`` untimed epochs (worker start-up, cuDNN's
heuristics, compilation), then ``--epochs`` timed ones of ``--steps`` steps,
each from the end of the one before to its own end: in ``fit`` its
``evaluate`` callback reads the clock, after ``fit`` has read the epoch's
losses from the device; the conventional loop reads it after its last
``loss.item()``. The median timed epoch is reported.

Output: a table and ``<out>/bench-pipeline-<device>.json`` (e.g.
``bench-pipeline-cpu.json``; with ``--compile M``, ``...-compile-M.json``),
rewritten after each variant: ``{"provenance", "project", "runs": [{"workers",
"conventional", "speedup", "loss_rel_diff"}], "errors"}``; ``project`` and each
``conventional`` hold the keys of :func:`measurement`, ``project`` also
``config`` and ``settings``. A variant whose losses are not finite gives no speed-up.

On a CPU the defaults shrink (2,048 images, 3 steps per epoch, workers 2 and 0)
to about a minute; the teacher's arithmetic then dominates, and the ratio is near 1.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn as nn

from ..data import ClassBalancedBatchSampler, DeviceLoader, default_root, load_fashion_mnist, random_crop_flip
from ..models import EmbeddingNet, build_backbone
from ..train import TrainConfig, fit, rkd
from . import common
from .conventional import conventional_loader, train_conventionally

#: The job: backbones (``rkd_tutorial.models.build_backbone`` names) and embedding widths, RKD weights, learning rate.
TEACHER, TEACHER_DIM = "resnet18", 512
STUDENT, STUDENT_DIM = "cnn-32-64-128", 64
DISTANCE_WEIGHT, ANGLE_WEIGHT, LR = 1.0, 2.0, 1e-4
#: The classes trained on (the book trains on 0-4 and tests retrieval on 5-9).
TRAIN_CLASSES = (0, 1, 2, 3, 4)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: results/)")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="DataLoader workers of the conventional runs (default: 16 2 on CUDA, 2 0 on CPU)")
    p.add_argument("--epochs", type=int, default=None, help="timed epochs per variant (default 2 on CUDA, 1 on CPU)")
    p.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs first (default 1)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per epoch (default: one pass over the images on CUDA, 3 on CPU)")
    p.add_argument("--limit", type=int, default=None,
                   help="the first N training images of classes 0-4 (default: all on CUDA, 2048 on CPU)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--m-per-class", type=int, default=32, help="images per class in a batch (default 32)")
    p.add_argument("--teacher", default=TEACHER, help=f"teacher backbone (default {TEACHER})")
    p.add_argument("--student", default=STUDENT, help=f"student backbone (default {STUDENT})")
    p.add_argument("--compile", default=None, metavar="MODE",
                   help="TrainConfig.compile for fit, e.g. reduce-overhead (default: none, fit's default)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)


# ----------------------------------------------------------------------------- the job


@dataclass
class Job:
    """What both variants train: the images, their batches, the networks' initial weights."""

    images: torch.Tensor      # uint8 N x 28 x 28, training images of classes 0-4
    labels: torch.Tensor      # int64 N
    indices: torch.Tensor     # their positions among the 60,000 training images (for torchvision)
    batch_size: int
    m_per_class: int
    steps: int                # per epoch
    seed: int
    teacher: nn.Module        # on the CPU; each variant trains copies
    student: nn.Module

    def sampler(self) -> ClassBalancedBatchSampler:
        """The batches of every epoch, the same for both variants (``set_epoch`` picks the epoch)."""
        return ClassBalancedBatchSampler(self.labels, self.m_per_class, self.batch_size, seed=self.seed,
                                         num_batches=self.steps)


def make_job(args) -> Job:
    images, labels = load_fashion_mnist(train=True)
    indices = torch.nonzero(torch.isin(labels, torch.tensor(TRAIN_CLASSES))).flatten()[: args.limit]
    steps = min(args.steps or len(indices), len(indices) // args.batch_size)
    torch.manual_seed(args.seed)
    teacher = EmbeddingNet(build_backbone(args.teacher, in_channels=1), TEACHER_DIM, normalize=True).eval()
    student = EmbeddingNet(build_backbone(args.student, in_channels=1), STUDENT_DIM)
    return Job(images[indices], labels[indices], indices, args.batch_size, args.m_per_class, steps, args.seed,
               teacher, student)


# ----------------------------------------------------------------------------- the two variants, timed


def measurement(start: float, ends: List[float], losses: List[float], warmup: int, job: Job, device) -> dict:
    """Epoch times from the clock at each epoch's end, the epochs' mean losses (warm-up included) and,
    on CUDA, the most memory the variant's tensors (data and networks included) held at once."""
    times = [b - a for a, b in zip([start] + ends[:-1], ends)]
    epoch_s = statistics.median(times[warmup:])
    return {"epoch_s": round(epoch_s, 4), "epochs_s": [round(t, 4) for t in times[warmup:]],
            "warmup_s": [round(t, 4) for t in times[:warmup]], "steps": job.steps,
            "images_per_s": round(job.steps * job.batch_size / epoch_s, 1),
            "losses": [round(x, 6) for x in losses], "losses_finite": all(math.isfinite(x) for x in losses),
            "peak_mib": round(torch.cuda.max_memory_allocated(device) / common.MIB, 1) if device.type == "cuda" else None}


def time_project(job: Job, device: torch.device, config: TrainConfig, warmup: int) -> dict:
    """``train.fit`` on the job; the clock is read at each epoch's end by its ``evaluate`` callback."""
    loader = DeviceLoader(job.images.unsqueeze(1), job.labels, job.batch_size, device=device,
                          augment=random_crop_flip, sampler=job.sampler(), seed=job.seed)
    teacher, student = copy.deepcopy(job.teacher).to(device), copy.deepcopy(job.student).to(device)
    ends: List[float] = []
    start = _reset_peak(device)
    history = fit(student, loader, [rkd(DISTANCE_WEIGHT, ANGLE_WEIGHT)], config, teacher=teacher,
                  evaluate=lambda model: ends.append(time.perf_counter()) or {}, progress=False, desc="bench")
    return {**measurement(start, ends, history.series("loss"), warmup, job, device),
            "config": dataclasses.asdict(config), "settings": history.settings}


def time_conventional(job: Job, device: torch.device, workers: int, epochs: int, warmup: int) -> dict:
    """The official code's loop on the job, with ``workers`` DataLoader workers."""
    loader = conventional_loader(default_root(), job.indices.tolist(), job.sampler(), device, workers)
    teacher, student = copy.deepcopy(job.teacher).to(device), copy.deepcopy(job.student).to(device)
    start = _reset_peak(device)
    ends, losses = train_conventionally(loader, teacher, student, epochs, LR, (DISTANCE_WEIGHT, ANGLE_WEIGHT), device)
    return measurement(start, ends, losses, warmup, job, device)


def _reset_peak(device: torch.device) -> float:
    """Start counting peak memory (CUDA) and time: the clock now."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    return time.perf_counter()


def compare(project: Optional[dict], conventional: Optional[dict]) -> dict:
    """The speed-up of ``fit`` over the conventional loop, and how far apart their mean losses are."""
    if not (project and conventional and project["losses_finite"] and conventional["losses_finite"]):
        return {"speedup": None, "loss_rel_diff": None}
    mean_p, mean_c = statistics.fmean(project["losses"]), statistics.fmean(conventional["losses"])
    return {"speedup": round(conventional["epoch_s"] / project["epoch_s"], 3),
            "loss_rel_diff": round(abs(mean_p - mean_c) / abs(mean_c), 4)}


# ----------------------------------------------------------------------------- output


def _provenance(args, device, job: Job, wall_s: float, complete: bool) -> dict:
    prov = common.stamp(device, wall_s)
    prov.update(
        complete=complete, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
        job={"teacher": f"{args.teacher} ({TEACHER_DIM}-d, L2-normalised, random weights)",
             "student": f"{args.student} ({STUDENT_DIM}-d)", "images": len(job.labels), "batch_size": job.batch_size,
             "m_per_class": job.m_per_class, "steps_per_epoch": job.steps, "warmup_epochs": args.warmup_epochs,
             "timed_epochs": args.epochs, "optimizer": "adam", "lr": LR, "rkd_weights": [DISTANCE_WEIGHT, ANGLE_WEIGHT],
             "augmentation": "random crop (padding 2) + horizontal flip"},
        conventional=("torchvision FashionMNIST + Subset, per-image RandomCrop(28, padding=2) + RandomHorizontalFlip "
                      "+ ToTensor + Normalize in DataLoader workers (persistent, pin_memory on CUDA), "
                      "eager float32, direct RKD (rkd_tutorial.losses.direct), loss.item() every step"),
        project=("rkd_tutorial.train.fit with project.config (what it resolved to: project.settings) on a "
                 "DeviceLoader (images on the device, random_crop_flip per batch), the package's RKDLoss"),
    )
    return prov


def print_table(payload: dict) -> None:
    prov, project = payload["provenance"], payload.get("project")
    job = prov["job"]
    print(f"\nOne epoch of RKD distillation ({job['teacher']} -> {job['student']}), {job['steps_per_epoch']} steps "
          f"of {job['batch_size']} images, on {prov['device']}")
    if project:
        settings = ", ".join(f"{k} {v}" for k, v in project["settings"].items() if k not in ("device", "resume"))
        changed = {k: v for k, v in project["config"].items() if v != getattr(TrainConfig(), k)}
        print(f"project: train.fit, TrainConfig({', '.join(f'{k}={v!r}' for k, v in changed.items())})\n"
              f"         -> {settings}\n"
              f"         {project['epoch_s']:.3f} s per epoch, {project['images_per_s']:.0f} images/s, "
              f"losses {project['losses']}")
    print(f"{'workers':>7}  {'conventional s':>14}  {'img/s':>8}  {'speed-up':>8}  {'loss diff':>9}  conventional losses")
    for r in payload["runs"]:
        c = r.get("conventional") or {}
        speedup = f"{r['speedup']:7.2f}x" if r.get("speedup") else f"{'-':>8}"
        diff = f"{r['loss_rel_diff']:9.1%}" if r.get("loss_rel_diff") is not None else f"{'-':>9}"
        print(f"{r['workers']:>7}  {c.get('epoch_s', float('nan')):14.3f}  {c.get('images_per_s', float('nan')):8.0f}"
              f"  {speedup}  {diff}  {c.get('losses')}")
    for e in payload["errors"]:
        print("error:", e)


def run(args) -> int:
    t_start = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    args.workers = args.workers if args.workers is not None else ([16, 2] if cuda else [2, 0])
    args.epochs = args.epochs or (2 if cuda else 1)
    args.limit = args.limit or (None if cuda else 2048)
    args.steps = args.steps or (None if cuda else 3)
    job = make_job(args)
    epochs = args.warmup_epochs + args.epochs
    config = TrainConfig(epochs=epochs, lr=LR, optimizer="adam", seed=args.seed, compile=args.compile)
    tag = f"-compile-{args.compile}" if args.compile else ""  # fit's defaults get the plain name
    path = Path(args.out) / f"bench-pipeline-{common.device_slug(device)}{tag}.json"
    print(f"pipeline bench on {common.device_name(device)}: {len(job.labels)} images, {job.steps} steps per epoch, "
          f"{args.warmup_epochs} + {args.epochs} epochs, workers {args.workers}", flush=True)
    payload = {"provenance": {}, "project": None, "runs": [], "errors": []}

    def attempt(label, fn):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - keep the other variants' numbers
            traceback.print_exc()
            payload["errors"].append(f"{label}: {type(exc).__name__}: {exc}"[:2000])
            return None

    def save(complete=False):  # after each variant: a run stopped later keeps what it measured
        payload["provenance"] = _provenance(args, device, job, time.perf_counter() - t_start, complete)
        common.write_json_atomic(path, payload)

    payload["project"] = attempt("project", lambda: time_project(job, device, config, args.warmup_epochs))
    save()
    for w in args.workers:
        conv = attempt(f"conventional, {w} workers", lambda: time_conventional(job, device, w, epochs, args.warmup_epochs))
        payload["runs"].append({"workers": w, "conventional": conv, **compare(payload["project"], conv)})
        save()
    save(complete=True)
    print_table(payload)
    print(f"wrote {path}", flush=True)
    return 0 if all(r["speedup"] is not None for r in payload["runs"]) and not payload["errors"] else 1
