"""Profiles: how big an experiment is, and the data it runs on.

One policy everywhere (the chapters, the command line, the tests):

* ``quick`` is the default, on a CPU and on a GPU alike (where it simply runs
  faster): small CNNs on per-class subsets of Fashion-MNIST, minutes on a
  laptop.
* ``full`` is opt-in: ``RKD_PROFILE=full`` in the environment, ``--profile
  full`` on the command line, or ``PROFILE = "full"`` in a chapter's
  parameters cell. All of Fashion-MNIST, a ResNet-18 teacher; meant for a GPU.
* ``RKD_SMOKE=1`` shrinks any profile to seconds (a few batches of data, one
  epoch) while keeping its networks, sizes and code paths: the tests run every
  chapter that way under ``full``, so a shape bug cannot hide in the profile
  nobody runs on a CPU.

The paper's own hyperparameters (``PAPER``) are recipes for its datasets,
made runnable in :mod:`rkd_tutorial.recipes`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from ..data import ClassBalancedBatchSampler, DeviceLoader, class_disjoint_split, load_fashion_mnist, subset_per_class

__all__ = [
    "MetricProfile", "ClassifyProfile", "METRIC_PROFILES", "CLASSIFY_PROFILES", "PAPER", "PROFILES",
    "default_profile", "smoke", "metric_profile", "classify_profile", "metric_data", "classify_data", "device",
]


@dataclass(frozen=True)
class MetricProfile:
    """Everything a metric-learning run needs; ``None`` per-class sizes mean all the data."""

    name: str
    teacher_backbone: str
    teacher_dim: int
    student_backbone: str
    student_dims: Tuple[int, ...]        # the first size runs every method; the others triplet and RKD-DA
    train_per_class: Optional[int]
    test_per_class: Optional[int]
    batch_size: int = 128
    m_per_class: int = 8
    teacher_epochs: int = 10
    student_epochs: int = 10
    teacher_lr: float = 1e-3
    student_lr: float = 1e-3
    augment: bool = False                # the teacher's training only (see teachers._fit_teacher)
    autocast: Optional[str] = "auto"     # the hardware chooses (train.autocast_dtype); None: float32
    smoke: bool = False


@dataclass(frozen=True)
class ClassifyProfile:
    """Everything a classification run needs."""

    name: str
    teacher_backbone: str
    student_backbone: str
    train_per_class: Optional[int]
    test_per_class: Optional[int]
    batch_size: int = 128
    teacher_epochs: int = 10
    student_epochs: int = 10
    lr: float = 1e-3
    augment: bool = False                # the teacher's training only
    autocast: Optional[str] = "auto"     # the hardware chooses (train.autocast_dtype); None: float32
    smoke: bool = False


METRIC_PROFILES: Dict[str, MetricProfile] = {
    "quick": MetricProfile(
        "quick", teacher_backbone="cnn-32-64-128", teacher_dim=128,
        student_backbone="cnn-8-16-32", student_dims=(16, 4, 8, 32),
        train_per_class=1000, test_per_class=400, batch_size=64, m_per_class=16,
        teacher_epochs=8, student_epochs=8,
    ),
    "full": MetricProfile(
        "full", teacher_backbone="resnet18", teacher_dim=512,
        student_backbone="cnn-32-64-128", student_dims=(64, 128, 32),
        train_per_class=None, test_per_class=None, batch_size=128, m_per_class=32,
        teacher_epochs=10, student_epochs=8, augment=True,
    ),
}

CLASSIFY_PROFILES: Dict[str, ClassifyProfile] = {
    "quick": ClassifyProfile(
        "quick", teacher_backbone="cnn-32-64-128", student_backbone="cnn-8-16-32",
        train_per_class=500, test_per_class=300, batch_size=64, teacher_epochs=8, student_epochs=8,
    ),
    "full": ClassifyProfile(
        "full", teacher_backbone="resnet18", student_backbone="cnn-16-32-64",
        train_per_class=None, test_per_class=None, batch_size=128,
        teacher_epochs=8, student_epochs=6, augment=True,
    ),
}

#: The profile names, in the order a reader meets them.
PROFILES = ("quick", "full")

#: The official hyperparameters (RKD paper, Section 4 and the official code), for CUB/Cars/SOP/CIFAR-100.
PAPER: Dict[str, dict] = {
    "metric_teacher": dict(backbone="resnet50", embedding_dim=512, normalize=True, pretrained=True,
                           optimizer="adam", lr=1e-5, epochs=40, milestones=(25, 30, 35), gamma=0.5,
                           batch_size=128, m_per_class=5, loss="triplet (distance-weighted, margin 0.2)"),
    "metric_student": dict(backbone="resnet18", embedding_dim={"cub200": 128, "cars196": 128, "sop": 64},
                           normalize=False, pretrained=True, optimizer="adam", lr=1e-4, epochs=80,
                           milestones=(40, 60), gamma=0.1, batch_size=128, m_per_class=5,
                           rkd_distance=1.0, rkd_angle=2.0, triplet=0.0),
    "images": dict(resize=256, crop=224, train="random crop + horizontal flip", test="centre crop"),
    "cifar100": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=200,
                     milestones=(60, 120, 160), gamma=0.2, batch_size=128,
                     rkd_distance=25.0, rkd_angle=50.0, features="L2-normalised pooled penultimate"),
}


def default_profile() -> str:
    """``$RKD_PROFILE`` if set, else ``quick`` (on every device: ``full`` is always opt-in)."""
    name = os.environ.get("RKD_PROFILE", "").strip() or "quick"
    if name not in PROFILES:
        raise ValueError(f"RKD_PROFILE={name!r} is not a profile; use one of {', '.join(PROFILES)}")
    return name


def smoke() -> bool:
    """True when ``RKD_SMOKE`` asks for the smoke scale (``1``, ``true``, ``yes``)."""
    return os.environ.get("RKD_SMOKE", "").strip().lower() in ("1", "true", "yes", "on")


def _name(name: Optional[str], table: dict) -> str:
    name = name or default_profile()
    if name not in table:
        raise ValueError(f"unknown profile {name!r}; choose from {', '.join(table)}")
    return name


def metric_profile(name: Optional[str] = None) -> MetricProfile:
    """The metric-learning profile ``name`` (default :func:`default_profile`), at smoke scale under ``RKD_SMOKE=1``.

    The smoke scale keeps the networks, embedding sizes, batch size and
    sampler, and keeps just enough data for two batches and 100 test images.
    """
    p = METRIC_PROFILES[_name(name, METRIC_PROFILES)]
    if not smoke():
        return p
    classes_per_batch = p.batch_size // p.m_per_class
    per_class = -(-2 * p.batch_size // 5) if classes_per_batch <= 5 else p.m_per_class
    return dataclasses.replace(p, train_per_class=max(per_class, p.m_per_class), test_per_class=20,
                               teacher_epochs=1, student_epochs=1, smoke=True)


def classify_profile(name: Optional[str] = None) -> ClassifyProfile:
    """The classification profile ``name``, at smoke scale under ``RKD_SMOKE=1`` (two batches, one epoch).

    Two batches also without one class (the dark-knowledge study leaves one out).
    """
    p = CLASSIFY_PROFILES[_name(name, CLASSIFY_PROFILES)]
    if not smoke():
        return p
    return dataclasses.replace(p, train_per_class=2 * p.batch_size // 9 + 1, test_per_class=10,
                               teacher_epochs=1, student_epochs=1, smoke=True)


# ----------------------------------------------------------------------------- data

def device(device=None) -> torch.device:
    """``device`` as a ``torch.device``; default CUDA where available, else the CPU."""
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _subset(x, y, n, seed):
    return (x, y) if n is None else subset_per_class(x, y, n, seed)


def metric_data(profile: MetricProfile, device_=None, seed: int = 0):
    """``(train_loader, test_loader)``: classes 0-4 of the training split, classes 5-9 of the test split."""
    dev = device(device_)
    (x_tr, y_tr), _ = class_disjoint_split(*load_fashion_mnist(train=True))
    _, (x_te, y_te) = class_disjoint_split(*load_fashion_mnist(train=False))
    x_tr, y_tr = _subset(x_tr, y_tr, profile.train_per_class, seed)
    x_te, y_te = _subset(x_te, y_te, profile.test_per_class, seed)
    sampler = ClassBalancedBatchSampler(y_tr, profile.m_per_class, profile.batch_size, seed=seed)
    train = DeviceLoader(x_tr, y_tr, profile.batch_size, device=dev, sampler=sampler, seed=seed)
    test = DeviceLoader(x_te, y_te, 512, shuffle=False, drop_last=False, device=dev)
    return train, test


def classify_data(profile: ClassifyProfile, device_=None, seed: int = 0):
    """``(train_loader, test_loader)`` over all ten classes."""
    dev = device(device_)
    x_tr, y_tr = _subset(*load_fashion_mnist(train=True), profile.train_per_class, seed)
    x_te, y_te = _subset(*load_fashion_mnist(train=False), profile.test_per_class, seed)
    train = DeviceLoader(x_tr, y_tr, profile.batch_size, device=dev, seed=seed)
    test = DeviceLoader(x_te, y_te, 512, shuffle=False, drop_last=False, device=dev)
    return train, test
