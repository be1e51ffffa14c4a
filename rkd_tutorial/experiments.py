"""Named profiles, the method tables, and results files with provenance.

Two experiments, both on Fashion-MNIST (the paper's datasets are recipes in
the book's chapter 7 and the ``paper`` profile):

* **metric**: a triplet-trained teacher, then one student per method, trained
  on classes 0-4 and evaluated by Recall@K on the unseen classes 5-9 (test
  split), as CUB-200-2011 trains on 1-100 and tests on 101-200.
* **classify**: a classifier teacher, then students trained with
  cross-entropy plus each distillation term; accuracy on the test split.

Profiles: ``quick`` (CPU, minutes, per-class subsets and small CNNs), ``full``
(GPU, all of Fashion-MNIST, a ResNet-18 teacher), ``paper`` (the official
hyperparameters, :data:`PAPER`, for CUB/Cars/SOP/CIFAR-100).

Every result is a row with its seed; every file has the provenance of the run
that produced it (device, torch version, commit, profile, wall time).
"""

from __future__ import annotations

import json
import os
import time
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import __version__
from .data import ClassBalancedBatchSampler, DeviceLoader, class_disjoint_split, load_fashion_mnist, random_crop_flip, subset_per_class
from .evaluate import accuracy, embed, recall_at_k
from .models import Classifier, EmbeddingNet, build_backbone
from .provenance import device_name, stamp, write_text_atomic  # noqa: F401  (device_name re-exported)
from .train import Term, TrainConfig, attention, ce, darkrank, fit, fitnet, hkd, rkd, save_atomic, triplet

__all__ = [
    "MetricProfile", "ClassifyProfile", "METRIC_PROFILES", "CLASSIFY_PROFILES", "PAPER",
    "METRIC_METHODS", "CLASSIFY_METHODS", "default_profile", "provenance",
    "metric_data", "classify_data", "train_metric_teacher", "train_classify_teacher", "train_teacher",
    "load_or_train_teacher", "save_teacher", "CHECKPOINTS",
    "distill_metric_student", "distill_classify_student", "recall_metrics",
    "metric_terms", "classify_terms", "run_metric", "run_classify", "write_results", "markdown_table",
]


# ----------------------------------------------------------------------------- profiles

@dataclass(frozen=True)
class MetricProfile:
    """Everything a metric-learning run needs; ``None`` per-class sizes mean all the data."""

    name: str
    teacher_backbone: str
    teacher_dim: int
    student_backbone: str
    student_dims: Tuple[int, ...]
    train_per_class: Optional[int]
    test_per_class: Optional[int]
    batch_size: int = 128
    m_per_class: int = 8
    teacher_epochs: int = 10
    student_epochs: int = 10
    teacher_lr: float = 1e-3
    student_lr: float = 1e-3
    augment: bool = False                    # the teacher's training only (see _fit_teacher)
    autocast: Optional[str] = None           # "bfloat16" on a GPU


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
    augment: bool = False                    # the teacher's training only
    autocast: Optional[str] = None


METRIC_PROFILES: Dict[str, MetricProfile] = {
    "quick": MetricProfile(
        "quick", teacher_backbone="cnn-32-64-128", teacher_dim=128,
        student_backbone="cnn-8-16-32", student_dims=(16,),
        train_per_class=1000, test_per_class=400, batch_size=64, m_per_class=16,
        teacher_epochs=8, student_epochs=8,
    ),
    "full": MetricProfile(
        "full", teacher_backbone="resnet18", teacher_dim=512,
        student_backbone="cnn-32-64-128", student_dims=(64, 128, 32),
        train_per_class=None, test_per_class=None, batch_size=128, m_per_class=32,
        teacher_epochs=10, student_epochs=8, augment=True, autocast="bfloat16",
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
        teacher_epochs=8, student_epochs=6, augment=True, autocast="bfloat16",
    ),
}

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
    """``full`` where CUDA is available, else ``quick``."""
    return "full" if torch.cuda.is_available() else "quick"


# ----------------------------------------------------------------------------- methods

#: Metric learning: baselines use the triplet task loss plus their term (as the
#: official code runs them); RKD students use RKD alone (weights 1 and 2).
METRIC_METHODS = ("triplet", "fitnet", "attention", "darkrank", "rkd-d", "rkd-a", "rkd-da")

#: Classification: cross-entropy plus each term; RKD weights 25 and 50 on pooled features.
CLASSIFY_METHODS = ("baseline", "hkd", "fitnet", "attention", "rkd-d", "rkd-da", "hkd+rkd-da")


def metric_terms(method: str, student: EmbeddingNet, teacher: EmbeddingNet) -> List[Term]:
    """The loss terms of a metric-learning method (see :data:`METRIC_METHODS`)."""
    table: Dict[str, Callable[[], List[Term]]] = {
        "triplet": lambda: [triplet()],
        "fitnet": lambda: [triplet(), fitnet(1.0, student.backbone.out_channels, teacher.backbone.out_channels)],
        "attention": lambda: [triplet(), attention(50.0)],
        "darkrank": lambda: [triplet(), darkrank(1.0)],
        "rkd-d": lambda: [rkd(1.0, 0.0)],
        "rkd-a": lambda: [rkd(0.0, 2.0)],
        "rkd-da": lambda: [rkd(1.0, 2.0)],
    }
    if method not in table:
        raise ValueError(f"unknown metric method {method!r}; choose from {', '.join(METRIC_METHODS)}")
    return table[method]()


def classify_terms(method: str, student: Classifier, teacher: Classifier) -> List[Term]:
    """The loss terms of a classification method (see :data:`CLASSIFY_METHODS`)."""
    table: Dict[str, Callable[[], List[Term]]] = {
        "baseline": lambda: [ce()],
        "hkd": lambda: [ce(), hkd(1.0, 4.0)],
        "fitnet": lambda: [ce(), fitnet(1.0, student.backbone.out_channels, teacher.backbone.out_channels)],
        "attention": lambda: [ce(), attention(50.0)],
        "rkd-d": lambda: [ce(), rkd(25.0, 0.0)],
        "rkd-da": lambda: [ce(), rkd(25.0, 50.0)],
        "hkd+rkd-da": lambda: [ce(), hkd(1.0, 4.0), rkd(25.0, 50.0)],
    }
    if method not in table:
        raise ValueError(f"unknown classification method {method!r}; choose from {', '.join(CLASSIFY_METHODS)}")
    return table[method]()


# ----------------------------------------------------------------------------- data

def _device(device=None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _subset(x, y, n, seed):
    return (x, y) if n is None else subset_per_class(x, y, n, seed)


def metric_data(profile: MetricProfile, device=None, seed: int = 0):
    """``(train_loader, test_loader)``: classes 0-4 of the training split, classes 5-9 of the test split."""
    device = _device(device)
    (x_tr, y_tr), _ = class_disjoint_split(*load_fashion_mnist(train=True))
    _, (x_te, y_te) = class_disjoint_split(*load_fashion_mnist(train=False))
    x_tr, y_tr = _subset(x_tr, y_tr, profile.train_per_class, seed)
    x_te, y_te = _subset(x_te, y_te, profile.test_per_class, seed)
    sampler = ClassBalancedBatchSampler(y_tr, profile.m_per_class, profile.batch_size, seed=seed)
    train = DeviceLoader(x_tr, y_tr, profile.batch_size, device=device, sampler=sampler, seed=seed)
    test = DeviceLoader(x_te, y_te, 512, shuffle=False, drop_last=False, device=device)
    return train, test


def classify_data(profile: ClassifyProfile, device=None, seed: int = 0):
    """``(train_loader, test_loader)`` over all ten classes."""
    device = _device(device)
    x_tr, y_tr = _subset(*load_fashion_mnist(train=True), profile.train_per_class, seed)
    x_te, y_te = _subset(*load_fashion_mnist(train=False), profile.test_per_class, seed)
    train = DeviceLoader(x_tr, y_tr, profile.batch_size, device=device, seed=seed)
    test = DeviceLoader(x_te, y_te, 512, shuffle=False, drop_last=False, device=device)
    return train, test


def _config(epochs, lr, seed, autocast) -> TrainConfig:
    dtype = getattr(torch, autocast) if autocast else None
    return TrainConfig(epochs=epochs, lr=lr, seed=seed, milestones=(int(epochs * 0.75),), gamma=0.1, autocast=dtype)


def recall_metrics(model, test) -> Dict[str, float]:
    """Recall@1/2/4/8 of ``model`` on the ``test`` loader, keyed 'recall@k'."""
    e, y = embed(model, test)
    return {f"recall@{k}": v for k, v in recall_at_k(e, y, (1, 2, 4, 8)).items()}


# ----------------------------------------------------------------------------- teachers shipped with the package

#: Teachers trained by ``python -m rkd_tutorial teacher ...`` (:func:`save_teacher`)
#: ship here as ``<experiment>-<profile>-seed<k>.pt``, with their sha256 in ``SHA256SUMS``.
CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_sums(path: Path) -> Dict[str, str]:
    if not path.exists():
        return {}
    return {name: sha for sha, name in (line.split() for line in path.read_text().splitlines() if line.strip())}


def train_teacher(experiment: str, profile: str = "quick", seed: int = 0, device=None, progress=True):
    """Train the teacher of ``experiment`` ('metric' or 'classify') under ``profile``."""
    if experiment == "metric":
        p = METRIC_PROFILES[profile]
        return train_metric_teacher(p, metric_data(p, device, seed)[0], seed, device, progress=progress)[0]
    if experiment == "classify":
        p = CLASSIFY_PROFILES[profile]
        return train_classify_teacher(p, classify_data(p, device, seed)[0], seed, device, progress=progress)[0]
    raise ValueError(f"experiment must be 'metric' or 'classify', got {experiment!r}")


def _metric_teacher(p: MetricProfile) -> EmbeddingNet:
    """The metric-learning teacher of a profile: L2-normalised embedding, as in the official code."""
    return EmbeddingNet(build_backbone(p.teacher_backbone), p.teacher_dim, normalize=True)


def _classify_teacher(p: ClassifyProfile) -> Classifier:
    return Classifier(build_backbone(p.teacher_backbone), 10)


def _teacher_architecture(experiment: str, profile: str) -> torch.nn.Module:
    if experiment == "metric":
        return _metric_teacher(METRIC_PROFILES[profile])
    return _classify_teacher(CLASSIFY_PROFILES[profile])


def save_teacher(experiment: str, profile: str, seed: int, out_dir, device=None) -> Path:
    """Train a teacher with the package's own code; write it (with provenance) and its sha256 line."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{experiment}-{profile}-seed{seed}.pt"
    start = time.time()
    teacher = train_teacher(experiment, profile, seed, device)
    state = {"model": {k: v.cpu() for k, v in teacher.state_dict().items()},
             "provenance": provenance(profile, time.time() - start, device, seed=seed)}
    save_atomic(state, out / name)
    sums = _read_sums(out / "SHA256SUMS")
    sums[name] = _sha256(out / name)
    write_text_atomic(out / "SHA256SUMS", "".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))
    return out / name


def load_or_train_teacher(experiment: str, profile: str = "quick", seed: int = 0, device=None, progress=True):
    """The teacher of ``experiment``: the shipped checkpoint if there is one, else trained now.

    A shipped checkpoint (:data:`CHECKPOINTS`) is used only when its sha256
    matches ``SHA256SUMS``; otherwise the teacher is trained (and cached in
    ``$RKD_DATA/checkpoints`` or ``~/.cache/rkd_tutorial/checkpoints`` for the
    next time). Returns ``(teacher, source)``, ``source`` one of 'shipped',
    'cache', 'trained'.
    """
    device = _device(device)
    name = f"{experiment}-{profile}-seed{seed}.pt"
    teacher = _teacher_architecture(experiment, profile) if experiment in ("metric", "classify") else None
    if teacher is None:
        raise ValueError(f"experiment must be 'metric' or 'classify', got {experiment!r}")
    cache = Path(os.environ.get("RKD_DATA", Path.home() / ".cache" / "rkd_tutorial")) / "checkpoints"
    shipped = CHECKPOINTS / name
    if shipped.exists() and _read_sums(CHECKPOINTS / "SHA256SUMS").get(name) == _sha256(shipped):
        path, source = shipped, "shipped"
    elif (cache / name).exists():
        path, source = cache / name, "cache"
    else:
        teacher = train_teacher(experiment, profile, seed, device, progress)
        save_atomic({"model": teacher.state_dict()}, cache / name)
        return teacher.eval(), "trained"
    teacher.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    return teacher.to(device).eval(), source


# ----------------------------------------------------------------------------- runs

def _fit_teacher(teacher, profile, train, terms, cfg, checkpoint, progress):
    """Teachers train with augmentation when the profile asks for it; students never do,
    so that ``fit`` can compute their frozen teacher's outputs once (``teacher_cache``)."""
    train.augment = random_crop_flip if profile.augment else None
    try:
        return fit(teacher, train, terms, cfg, checkpoint=checkpoint, progress=progress, desc="teacher")
    finally:
        train.augment = None


def train_metric_teacher(profile: MetricProfile, train, seed=0, device=None, checkpoint=None, progress=True):
    """Train (or load from ``checkpoint``) the triplet teacher: L2-normalised embedding."""
    torch.manual_seed(seed)
    teacher = _metric_teacher(profile).to(_device(device))
    cfg = _config(profile.teacher_epochs, profile.teacher_lr, seed, profile.autocast)
    history = _fit_teacher(teacher, profile, train, [triplet()], cfg, checkpoint, progress)
    return teacher, history


def train_classify_teacher(profile: ClassifyProfile, train, seed=0, device=None, checkpoint=None, progress=True):
    """Train (or load from ``checkpoint``) the classifier teacher with cross-entropy."""
    torch.manual_seed(seed)
    teacher = _classify_teacher(profile).to(_device(device))
    cfg = _config(profile.teacher_epochs, profile.lr, seed, profile.autocast)
    history = _fit_teacher(teacher, profile, train, [ce()], cfg, checkpoint, progress)
    return teacher, history


def distill_metric_student(profile, method, dim, teacher, train, seed=0, device=None, progress=True):
    """One metric-learning student (no L2 normalisation, as in the official code)."""
    torch.manual_seed(seed)
    student = EmbeddingNet(build_backbone(profile.student_backbone), dim, normalize=False).to(_device(device))
    cfg = _config(profile.student_epochs, profile.student_lr, seed, profile.autocast)
    history = fit(student, train, metric_terms(method, student, teacher), cfg, teacher=teacher,
                  progress=progress, desc=f"{method}-{dim}")
    return student, history


def distill_classify_student(profile, method, teacher, train, seed=0, device=None, progress=True):
    """One classification student trained with cross-entropy plus ``method``'s terms."""
    torch.manual_seed(seed)
    student = Classifier(build_backbone(profile.student_backbone), 10).to(_device(device))
    cfg = _config(profile.student_epochs, profile.lr, seed, profile.autocast)
    history = fit(student, train, classify_terms(method, student, teacher), cfg,
                  teacher=teacher if method != "baseline" else None, progress=progress, desc=method)
    return student, history


class _Recorder:
    """Collects rows; with ``out`` set, rewrites the results files after every row
    (``"complete": false`` until the end), so an interrupted run keeps what it measured."""

    def __init__(self, experiment: str, profile, seeds, device, out, log, stem=None):
        self.experiment, self.profile, self.seeds, self.device = experiment, profile, list(seeds), device
        self.out, self.log, self.rows, self.start = out, log, [], time.time()
        self.stem = stem or f"{experiment}-{profile.name}"

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.log(_row_line(row))
        if self.out is not None:
            write_results(self.results(complete=False), self.out, self.stem)

    def results(self, complete: bool = True) -> dict:
        prov = provenance(self.profile.name, time.time() - self.start, self.device, seeds=self.seeds,
                          complete=complete, profile_settings=asdict(self.profile))
        results = {"provenance": prov, "rows": list(self.rows)}
        if complete and self.out is not None:
            write_results(results, self.out, self.stem)
        return results


def run_metric(profile: str | MetricProfile = "quick", seeds: Sequence[int] = (0,), methods=METRIC_METHODS,
               dims: Optional[Sequence[int]] = None, device=None, progress=True, log=print, out=None,
               stem=None) -> dict:
    """Teacher then every (method, embedding size) student, per seed; returns the results dict.

    ``dims``: student embedding sizes (default: the profile's). Every method runs at
    the first size; at the other sizes only ``triplet`` and ``rkd-da`` run (the
    embedding-size comparison of the paper's Table 1). With ``out``, the results
    files ``out/metric-<profile>.json`` and ``.md`` are kept up to date after every row.
    """
    p = METRIC_PROFILES[profile] if isinstance(profile, str) else profile
    dims = tuple(dims or p.student_dims)
    rec = _Recorder("metric", p, seeds, device, out, log, stem)
    for seed in seeds:
        train, test = metric_data(p, device, seed)
        teacher, _ = train_metric_teacher(p, train, seed, device, progress=progress)
        rec.add({"method": "teacher", "seed": seed, "embedding_dim": p.teacher_dim,
                 "backbone": p.teacher_backbone, **recall_metrics(teacher, test)})
        for i, dim in enumerate(dims):
            for method in methods if i == 0 else [m for m in methods if m in ("triplet", "rkd-da")]:
                student, hist = distill_metric_student(p, method, dim, teacher, train, seed, device, progress)
                rec.add({"method": method, "seed": seed, "embedding_dim": dim, "backbone": p.student_backbone,
                         **recall_metrics(student, test), "final_loss": hist.records[-1]["loss"]})
    return rec.results()


def run_classify(profile: str | ClassifyProfile = "quick", seeds: Sequence[int] = (0,), methods=CLASSIFY_METHODS,
                 device=None, progress=True, log=print, out=None, stem=None) -> dict:
    """Teacher then one student per method, per seed; returns the results dict (see :func:`run_metric`)."""
    p = CLASSIFY_PROFILES[profile] if isinstance(profile, str) else profile
    rec = _Recorder("classify", p, seeds, device, out, log, stem)
    for seed in seeds:
        train, test = classify_data(p, device, seed)
        teacher, _ = train_classify_teacher(p, train, seed, device, progress=progress)
        rec.add({"method": "teacher", "seed": seed, "backbone": p.teacher_backbone, "accuracy": accuracy(teacher, test)})
        for method in methods:
            student, hist = distill_classify_student(p, method, teacher, train, seed, device, progress)
            rec.add({"method": method, "seed": seed, "backbone": p.student_backbone,
                     "accuracy": accuracy(student, test), "final_loss": hist.records[-1]["loss"]})
    return rec.results()


def _row_line(row: dict) -> str:
    keys = [k for k in row if k.startswith("recall@") or k == "accuracy"]
    dim = f" d={row['embedding_dim']}" if "embedding_dim" in row else ""
    return f"  {row['method']:<11}{dim} seed={row['seed']}  " + "  ".join(f"{k}={row[k]:.4f}" for k in keys)


# ----------------------------------------------------------------------------- provenance and files

def provenance(profile: str, wall_s: float, device=None, **extra) -> dict:
    """Where a result came from: device, versions, commit, profile, wall time, date."""
    return stamp(_device(device), wall_s, profile=profile, rkd_tutorial=__version__, **extra)


def markdown_table(results: dict) -> str:
    """The rows as a Markdown table (one line per row), with the provenance above it."""
    rows = results["rows"]
    metrics = [k for k in rows[0] if k.startswith("recall@") or k == "accuracy"]
    cols = ["method", "seed"] + (["embedding_dim"] if "embedding_dim" in rows[0] else []) + metrics
    prov = results["provenance"]
    lines = [f"Profile `{prov['profile']}` on {prov['device']}, torch {prov['torch']}, commit `{prov['commit'][:12]}`, "
             f"{prov['wall_s']} s.", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def merge_results(parts: Sequence[dict]) -> dict:
    """One results dict from runs of the same experiment with different seeds (e.g. run
    as concurrent processes): rows concatenated by seed, provenance of the first run with
    ``seeds`` united, ``wall_s`` the longest part (they overlapped), each part's kept."""
    if not parts:
        raise ValueError("merge_results: nothing to merge")
    profiles = {p["provenance"]["profile"] for p in parts}
    if len(profiles) != 1:
        raise ValueError(f"merge_results: parts come from different profiles {sorted(profiles)}")
    parts = sorted(parts, key=lambda p: min(p["provenance"]["seeds"]))
    prov = dict(parts[0]["provenance"])
    prov["seeds"] = sorted(s for p in parts for s in p["provenance"]["seeds"])
    prov["wall_s"] = max(p["provenance"]["wall_s"] for p in parts)
    prov["complete"] = all(p["provenance"].get("complete", True) for p in parts)
    prov["parts"] = [{k: p["provenance"].get(k) for k in ("seeds", "wall_s", "commit", "date", "complete")} for p in parts]
    return {"provenance": prov, "rows": [r for p in parts for r in p["rows"]]}


def write_results(results: dict, out_dir, stem: str) -> Path:
    """Write ``out_dir/stem.json`` and ``out_dir/stem.md`` atomically; returns the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    write_text_atomic(path, json.dumps(results, indent=2) + "\n")
    write_text_atomic(out / f"{stem}.md", markdown_table(results))
    return path
