"""Teachers: trained with the package's own loop, shipped with it, or cached.

The chapters need a trained teacher within seconds, so the quick profile's
teachers (seed 0) ship with the package in ``rkd_tutorial/checkpoints/``, each
with its SHA-256 in ``SHA256SUMS`` and its provenance inside. A teacher that
is not shipped is trained once and cached in ``$RKD_DATA/checkpoints``
(default ``~/.cache/rkd_tutorial/checkpoints``).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Optional

import torch

from ..data import default_root, random_crop_flip
from ..models import Classifier, EmbeddingNet, build_backbone
from ..provenance import write_text_atomic
from ..train import TrainConfig, ce, fit, save_atomic, triplet
from .record import code_fingerprint, provenance
from .profiles import ClassifyProfile, MetricProfile, classify_data, classify_profile, device, metric_data, metric_profile

__all__ = [
    "CHECKPOINTS", "run_checkpoint", "train_metric_teacher", "train_classify_teacher", "train_teacher", "load_or_train_teacher",
    "save_teacher", "teacher_architecture", "train_config",
]

#: Teachers trained by ``python -m rkd_tutorial teacher ...`` (:func:`save_teacher`)
#: ship here as ``<experiment>-<profile>-seed<k>.pt``, with their sha256 in ``SHA256SUMS``.
CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


def train_config(epochs: int, lr: float, seed: int, autocast: Optional[str]) -> TrainConfig:
    """The experiments' optimisation: Adam, the learning rate divided by 10 after 75% of the epochs."""
    if autocast not in (None, "auto"):
        autocast = getattr(torch, autocast)
    return TrainConfig(epochs=epochs, lr=lr, seed=seed, milestones=(int(epochs * 0.75),), gamma=0.1,
                       autocast=autocast)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_sums(path: Path) -> Dict[str, str]:
    if not path.exists():
        return {}
    return {name: sha for sha, name in (line.split() for line in path.read_text().splitlines() if line.strip())}


def teacher_architecture(experiment: str, profile) -> torch.nn.Module:
    """An untrained teacher of ``experiment`` ('metric' or 'classify') for ``profile`` (a name or a profile)."""
    if experiment == "metric":
        p = metric_profile(profile) if isinstance(profile, (str, type(None))) else profile
        # L2-normalised embedding, as in the official code
        return EmbeddingNet(build_backbone(p.teacher_backbone), p.teacher_dim, normalize=True)
    if experiment == "classify":
        p = classify_profile(profile) if isinstance(profile, (str, type(None))) else profile
        return Classifier(build_backbone(p.teacher_backbone), 10)
    raise ValueError(f"experiment must be 'metric' or 'classify', got {experiment!r}")


def _fit_teacher(teacher, profile, train, terms, cfg, checkpoint, progress):
    """Teachers train with augmentation when the profile asks for it; students never do,
    so that ``fit`` can compute their frozen teacher's outputs once (``teacher_cache``)."""
    train.augment = random_crop_flip if profile.augment else None
    try:
        return fit(teacher, train, terms, cfg, checkpoint=checkpoint, progress=progress, desc="teacher")
    finally:
        train.augment = None


def train_metric_teacher(profile: MetricProfile, train, seed=0, device_=None, checkpoint=None, progress=True):
    """Train (or resume from ``checkpoint``) the triplet teacher: L2-normalised embedding."""
    torch.manual_seed(seed)
    teacher = teacher_architecture("metric", profile).to(device(device_))
    cfg = train_config(profile.teacher_epochs, profile.teacher_lr, seed, profile.autocast)
    history = _fit_teacher(teacher, profile, train, [triplet()], cfg, checkpoint, progress)
    return teacher, history


def train_classify_teacher(profile: ClassifyProfile, train, seed=0, device_=None, checkpoint=None, progress=True):
    """Train (or resume from ``checkpoint``) the classifier teacher with cross-entropy."""
    torch.manual_seed(seed)
    teacher = teacher_architecture("classify", profile).to(device(device_))
    cfg = train_config(profile.teacher_epochs, profile.lr, seed, profile.autocast)
    history = _fit_teacher(teacher, profile, train, [ce()], cfg, checkpoint, progress)
    return teacher, history


def train_teacher(experiment: str, profile: Optional[str] = None, seed: int = 0, device_=None, progress=True):
    """Train the teacher of ``experiment`` ('metric' or 'classify') under ``profile``."""
    if experiment == "metric":
        p = metric_profile(profile)
        return train_metric_teacher(p, metric_data(p, device_, seed)[0], seed, device_, progress=progress)[0]
    if experiment == "classify":
        p = classify_profile(profile)
        return train_classify_teacher(p, classify_data(p, device_, seed)[0], seed, device_, progress=progress)[0]
    raise ValueError(f"experiment must be 'metric' or 'classify', got {experiment!r}")


def _checkpoint_name(experiment: str, p, seed: int) -> str:
    return f"{experiment}-{p.name}{'-smoke' if p.smoke else ''}-seed{seed}.pt"


def save_teacher(experiment: str, profile: str, seed: int, out_dir, device_=None) -> Path:
    """Train a teacher with the package's own code; write it (with provenance) and its sha256 line."""
    p = metric_profile(profile) if experiment == "metric" else classify_profile(profile)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = _checkpoint_name(experiment, p, seed)
    start = time.time()
    teacher = train_teacher(experiment, profile, seed, device_)
    state = {"model": {k: v.cpu() for k, v in teacher.state_dict().items()},
             "provenance": provenance(p, time.time() - start, device_, seed=seed)}
    save_atomic(state, out / name)
    sums = _read_sums(out / "SHA256SUMS")
    sums[name] = _sha256(out / name)
    write_text_atomic(out / "SHA256SUMS", "".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))
    return out / name


def run_checkpoint(experiment: str, profile, seed: int, device_=None) -> Optional[Path]:
    """Where the experiments keep the teacher of ``experiment`` for this profile, seed, device and code.

    A teacher is a deterministic function of the profile's settings, the seed,
    the kind of device and the code, so the runs that need the same teacher
    (the classification experiment and its studies, the metric experiment and
    the ablation) train it once and share it, and an interrupted run finds it
    again. The file is ``fit``'s checkpoint (a finished one makes ``fit``
    return at once) in ``$RKD_DATA/runs``; None if that folder cannot be made.
    """
    settings = hashlib.sha256(json.dumps(asdict(profile), sort_keys=True).encode()).hexdigest()[:10]
    folder = default_root() / "runs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    name = f"{experiment}-{profile.name}-{settings}-{device(device_).type}-{code_fingerprint()}-seed{seed}.pt"
    return folder / name


def _load(teacher, path: Path) -> bool:
    """Load a checkpoint into ``teacher``; False (and a warning) if it is unreadable or does not fit."""
    try:
        teacher.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        return True
    except Exception as err:  # truncated file, pickle error, missing keys, wrong shapes
        warnings.warn(f"the cached teacher {path} cannot be used ({type(err).__name__}: "
                      f"{str(err).splitlines()[0][:200] if str(err) else ''}); training a new one", RuntimeWarning,
                      stacklevel=3)
        return False


def load_or_train_teacher(experiment: str, profile: Optional[str] = None, seed: int = 0, device_=None, progress=True):
    """The teacher of ``experiment``: the shipped checkpoint if there is one, else the cached one, else trained.

    A shipped checkpoint (:data:`CHECKPOINTS`) is used only when its sha256
    matches ``SHA256SUMS``; a mismatch is reported with a warning before the
    teacher is trained again. A cached checkpoint that cannot be read is
    replaced. Returns ``(teacher, source)``, ``source`` one of 'shipped',
    'cache', 'trained'.
    """
    dev = device(device_)
    teacher = teacher_architecture(experiment, profile)
    p = metric_profile(profile) if experiment == "metric" else classify_profile(profile)
    name = _checkpoint_name(experiment, p, seed)
    cache = default_root() / "checkpoints"
    shipped = CHECKPOINTS / name
    if shipped.exists():
        if _read_sums(CHECKPOINTS / "SHA256SUMS").get(name) == _sha256(shipped):
            if _load(teacher, shipped):
                return teacher.to(dev).eval(), "shipped"
        else:
            warnings.warn(f"the shipped teacher {shipped} does not match its SHA-256 in SHA256SUMS (a damaged "
                          "or edited file); training a new one instead, which takes a few minutes on a CPU. "
                          "Reinstall the package to get the shipped teacher back.", RuntimeWarning, stacklevel=2)
    if (cache / name).exists() and _load(teacher, cache / name):
        return teacher.to(dev).eval(), "cache"
    teacher = train_teacher(experiment, profile, seed, dev, progress)
    try:
        save_atomic({"model": teacher.state_dict()}, cache / name)
    except OSError as err:
        warnings.warn(f"could not cache the teacher in {cache} ({err.strerror or err}); set RKD_DATA to a "
                      "writable folder to keep it for the next time", RuntimeWarning, stacklevel=2)
    return teacher.eval(), "trained"
