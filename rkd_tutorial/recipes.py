"""The ``paper`` profile made runnable: the RKD paper's four recipes, official hyperparameters.

Park, Kim, Lu, Cho, *Relational Knowledge Distillation*, CVPR 2019
(arXiv:1904.05068), Section 4, and the official code (github.com/lenscloth/RKD:
``run.py``, ``run_distill.py``, ``run_distill_classification.py``, ``examples/*.sh``).
The book's chapter 7 explains them; the hyperparameters are
:data:`rkd_tutorial.experiments.PAPER`.

=========  =====================================================================
dataset    recipe
=========  =====================================================================
cub200     metric learning, CUB-200-2011 (train classes 1-100, test 101-200)
cars196    metric learning, Cars196 (train classes 1-98, test 99-196)
sop        metric learning, Stanford Online Products (Ebay_train / Ebay_test)
cifar100   classification, CIFAR-100
=========  =====================================================================

Metric learning (``cub200``, ``cars196``, ``sop``):

* teacher: ResNet-50 (ImageNet weights), 512-d L2-normalised embedding,
  triplet loss with distance-weighted sampling (margin 0.2), Adam lr 1e-5,
  40 epochs, lr x 0.5 at epochs 25, 30, 35;
* student: ResNet-18 (ImageNet weights), 128-d (CUB, Cars) or 64-d (SOP)
  embedding *without* L2 normalisation, RKD-D (weight 1) + RKD-A (weight 2)
  and no triplet loss, Adam lr 1e-4, 80 epochs, lr x 0.1 at epochs 40, 60;
* batches of ``m = 5`` images per class (:class:`~rkd_tutorial.data.ClassBalancedBatchSampler`),
  images resized to 256 and cropped to 224 (random crop + flip for training,
  centre crop for testing: :func:`~rkd_tutorial.data.paper_transforms`).

Classification (``cifar100``): cross-entropy for the teacher (ResNet-50);
cross-entropy + 25 RKD-D + 50 RKD-A on the L2-normalised pooled penultimate
features for the student (ResNet-18); both with the 3x3/stride-1 stem for
32 x 32 images, trained from scratch with SGD (lr 0.1, momentum 0.9, weight
decay 5e-4), 200 epochs, lr x 0.2 at epochs 60, 120, 160, batch 128, random
crop (padding 4) + flip.

Where this follows the official code rather than the paper's text (recorded in
:data:`OFFICIAL`, and in every results file this module writes):

* Adam's weight decay is ``1e-5`` (both ``run.py`` and ``run_distill.py``);
* an "epoch" of metric learning is 100 batches (``--iter_per_epoch 100``),
  not one pass over the data;
* the official ``NPairs`` sampler fills a batch of 128 with 25 classes x 5
  images plus 3 images of a 26th class; :class:`ClassBalancedBatchSampler`
  needs whole classes, so a batch here is 25 x 5 = **125** images;
* the official code resizes to a 256 x 256 square; ``paper_transforms``
  resizes the shorter side to 256 (keeps the aspect ratio);
* the official code keeps the epoch with the best *test* Recall@1; this module
  reports the last epoch (no model selection on the test set);
* the paper's CIFAR-100 student is a VGG-11 (with batch normalisation; the
  official ``vgg11bn``); the package's model zoo has ResNets only, so the
  student here is a ResNet-18, a stronger student than the paper's.

Data loading: the training images are decoded and augmented in ``DataLoader``
worker processes (they do not fit on a GPU as Fashion-MNIST does), by an
:class:`EpochDataLoader`, whose random draws are functions of ``(seed, epoch)``:
a run resumed from its checkpoint is the uninterrupted run, with any number of
workers.

Typical use (on a GPU; the datasets are downloaded by hand, see
:mod:`rkd_tutorial.data.paper_datasets`)::

    from rkd_tutorial.recipes import paper_setup, run_paper
    from rkd_tutorial.train import fit

    t = paper_setup("cub200", "~/data", role="teacher")
    fit(t["model"], t["loader"], t["terms"], t["config"])
    s = paper_setup("cub200", "~/data", role="student", teacher=t["model"])
    fit(s["model"], s["loader"], s["terms"], s["config"], teacher=s["teacher"])

    # or all of it, with results and provenance in results/paper-cub200.json:
    run_paper("cub200", "~/data", out="results")

or from a shell: ``python -m rkd_tutorial.recipes cub200 --root ~/data --out results``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from .data import CUB200, IMAGENET_MEAN, IMAGENET_STD, Cars196, ClassBalancedBatchSampler, StanfordOnlineProducts
from .data import cifar100 as _cifar100
from .data import paper_transforms
from .data.sampler import epoch_seed
from .evaluate import accuracy, embed, recall_at_k
from .experiments import PAPER, provenance, write_results
from .models import Classifier, EmbeddingNet, build_backbone
from .train import TrainConfig, ce, fit, make_optimizer, rkd, triplet

__all__ = ["DATASETS", "METRIC_DATASETS", "OFFICIAL", "CIFAR_MEAN", "CIFAR_STD", "paper_setup", "run_paper",
           "EpochDataLoader", "EpochSeeded", "ShuffledBatches"]

#: The metric-learning datasets (zero-shot retrieval, Recall@K) and the classification one.
METRIC_DATASETS = ("cub200", "cars196", "sop")
DATASETS = METRIC_DATASETS + ("cifar100",)

_METRIC_CLASSES = {"cub200": CUB200, "cars196": Cars196, "sop": StanfordOnlineProducts}

#: Recall@K reported per dataset (the paper's tables: 1/2/4/8 for CUB and Cars, 1/10/100/1000 for SOP).
RECALL_KS = {"cub200": (1, 2, 4, 8), "cars196": (1, 2, 4, 8), "sop": (1, 10, 100, 1000)}

#: Settings of the official code that :data:`~rkd_tutorial.experiments.PAPER` does not list.
OFFICIAL = {
    "adam_weight_decay": 1e-5,          # run.py, run_distill.py: optim.Adam(..., weight_decay=1e-5)
    "batches_per_epoch": 100,           # --iter_per_epoch 100
    "metric_batch_size": 125,           # 128 // 5 whole classes of m = 5 (official: 25 x 5 + 3)
    "cifar_test_batch_size": 100,
    "cifar_student": "resnet18 (paper: VGG-11 with batch normalisation)",
}

#: The normalisation of the official CIFAR-100 scripts (they reuse CIFAR-10's statistics).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


class EpochSeeded(Dataset):
    """``dataset`` whose item ``(epoch, i)`` is ``dataset[i]``, drawn with torch's generator seeded from ``(seed, epoch, i)``.

    The random crop and flip of an image then depend on the image and the
    epoch only: not on which ``DataLoader`` worker loads it, nor on how many
    images that worker loaded before (torchvision's transforms draw from
    torch's global generator, which every worker seeds once when it starts).
    The caller's generator is left as it was (``torch.random.fork_rng``).
    """

    def __init__(self, dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch_seed(epoch_seed(self.seed, epoch), index))
            return self.dataset[index]


class ShuffledBatches:
    """Batches of a new random order every epoch, drawn from ``(seed, epoch)``; an incomplete last batch is dropped."""

    def __init__(self, n: int, batch_size: int, seed: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self):
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=g)[: len(self) * self.batch_size]
        yield from order.view(-1, self.batch_size).tolist()


class _EpochTagged:
    """A batch sampler whose indices carry their epoch, ``[(epoch, i), ...]``, for :class:`EpochSeeded`."""

    def __init__(self, batches) -> None:
        self.batches, self.epoch = batches, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield [(self.epoch, i) for i in batch]


class EpochDataLoader(DataLoader):
    """A torch ``DataLoader`` whose random draws are all functions of ``(seed, epoch)``.

    * :meth:`set_epoch`, which :func:`rkd_tutorial.train.fit` calls before
      every epoch, reaches ``batches`` (a :class:`~rkd_tutorial.data.ClassBalancedBatchSampler`
      or :class:`ShuffledBatches`), which then draws that epoch's batches;
    * every image is loaded and augmented with torch's generator seeded from
      ``(seed, epoch, index)`` (:class:`EpochSeeded`).

    So the images of an epoch are the same whether its workers are fresh (a
    run resumed from a checkpoint) or have been running for epochs
    (``persistent_workers``), and whatever their number: a resumed run ends
    exactly where an uninterrupted one would (``fit`` records
    ``"resume": "exact"`` in ``History.settings``), and ``num_workers`` does not
    change the results.
    """

    seeded_by_epoch = True  # read by rkd_tutorial.train.fit

    def __init__(self, dataset, batches, seed: int = 0, **kwargs) -> None:
        # Its own generator: starting an epoch draws the workers' seed from it, not from torch's global
        # generator, whose stream (e.g. the triplet loss's sampling) stays the same with or without workers.
        super().__init__(EpochSeeded(dataset, seed), batch_sampler=_EpochTagged(batches),
                         generator=torch.Generator().manual_seed(seed), **kwargs)

    @property
    def batches(self):
        """The batch sampler that chooses the images of each batch."""
        return self.batch_sampler.batches

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


def _check(dataset: str, role: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")


def _device(device) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _image_transforms(train: bool, image_size: int) -> T.Compose:
    """``paper_transforms`` at 224; the same pipeline scaled (resize = size * 256 / 224) otherwise."""
    if image_size == 224:
        return paper_transforms(train)
    crop = [T.RandomCrop(image_size), T.RandomHorizontalFlip()] if train else [T.CenterCrop(image_size)]
    return T.Compose([T.Resize(round(image_size * 256 / 224)), *crop, T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _cifar_transforms(train: bool) -> T.Compose:
    aug = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    return T.Compose([*aug, T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])


def _workers(num_workers: Optional[int]) -> int:
    return min(8, os.cpu_count() or 1) if num_workers is None else num_workers


def _metric_model(dataset: str, role: str, pretrained: bool) -> EmbeddingNet:
    p = PAPER["metric_teacher"] if role == "teacher" else PAPER["metric_student"]
    dim = p["embedding_dim"][dataset] if isinstance(p["embedding_dim"], dict) else p["embedding_dim"]
    backbone = build_backbone(p["backbone"], in_channels=3, pretrained=pretrained, small_images=False)
    return EmbeddingNet(backbone, dim, normalize=p["normalize"])


def _cifar_model(role: str) -> Classifier:
    name = "resnet50" if role == "teacher" else "resnet18"
    return Classifier(build_backbone(name, in_channels=3, pretrained=False, small_images=True), 100,
                      normalize_features=True)


def paper_setup(
    dataset: str,
    root,
    role: str = "teacher",
    device=None,
    pretrained: bool = True,
    *,
    teacher: Optional[nn.Module] = None,
    image_size: int = 224,
    batch_size: Optional[int] = None,
    m_per_class: Optional[int] = None,
    num_batches: Optional[int] = None,
    num_workers: Optional[int] = None,
    seed: int = 0,
    download: bool = False,
) -> Dict[str, object]:
    """Everything one stage of a paper recipe needs: model, data, optimiser, schedule, loss terms.

    Args:
        dataset: ``'cub200'``, ``'cars196'``, ``'sop'`` (metric learning) or ``'cifar100'``.
        root: the folder holding the unpacked dataset (see :mod:`rkd_tutorial.data.paper_datasets`).
        role: ``'teacher'`` or ``'student'``.
        device: where the model lives (default: CUDA when available).
        pretrained: start the metric-learning ResNets from ImageNet weights, as the
            paper does (needs the network once; torchvision caches them). Ignored for
            CIFAR-100, which trains from scratch.
        teacher: for ``role='student'``, the trained teacher. Default: the teacher's
            architecture, *untrained* -- load its weights before training the student.
        image_size: crop size of the metric-learning images (224 in the paper; smaller
            for tests). CIFAR-100 images are always 32 x 32.
        batch_size, m_per_class, num_batches: override the official batch (125 = 25
            classes x 5 images, 100 batches per epoch; CIFAR-100: 128, one pass).
        num_workers: DataLoader workers (default ``min(8, cpu_count)``).
        seed: seeds the model's initialisation and the batch sampler.
        download: CIFAR-100 only: let torchvision download it.

    Returns:
        A dict with ``model`` (on ``device``), ``loader`` (an :class:`EpochDataLoader`),
        ``test_loader``, ``optimizer``, ``scheduler`` (``MultiStepLR``, stepped once per
        epoch), ``terms`` (for :func:`rkd_tutorial.train.fit`), ``epochs``, ``config``
        (a :class:`~rkd_tutorial.train.TrainConfig` with the same optimiser and schedule:
        ``fit(model, loader, terms, config, teacher=...)`` builds identical ones),
        ``teacher`` (student role: frozen, eval mode, on ``device``; else None) and
        ``settings`` (the hyperparameters, for provenance).
    """
    _check(dataset, role)
    device = _device(device)
    workers = _workers(num_workers)
    torch.manual_seed(seed)
    pin = device.type == "cuda"

    if dataset == "cifar100":
        p = PAPER["cifar100"]
        model = _cifar_model(role)
        train_set = _cifar100(root, train=True, transform=_cifar_transforms(True), download=download)
        test_set = _cifar100(root, train=False, transform=_cifar_transforms(False), download=download)
        batch = batch_size or p["batch_size"]
        loader = EpochDataLoader(train_set, ShuffledBatches(len(train_set), batch, seed), seed,
                                 num_workers=workers, pin_memory=pin, persistent_workers=workers > 0)
        test_loader = DataLoader(test_set, batch_size=OFFICIAL["cifar_test_batch_size"], shuffle=False,
                                 num_workers=workers, pin_memory=pin)
        config = TrainConfig(epochs=p["epochs"], lr=p["lr"], optimizer="sgd", momentum=p["momentum"],
                             weight_decay=p["weight_decay"], milestones=p["milestones"], gamma=p["gamma"], seed=seed)
        terms = [ce()] if role == "teacher" else [ce(), rkd(p["rkd_distance"], p["rkd_angle"])]
        settings = {"backbone": "resnet50" if role == "teacher" else "resnet18", "small_image_stem": True,
                    "features": p["features"], "pretrained": False, "batch_size": batch,
                    "loss": "cross-entropy" + ("" if role == "teacher"
                                               else f" + {p['rkd_distance']:g} RKD-D + {p['rkd_angle']:g} RKD-A")}
    else:
        p = dict(PAPER["metric_teacher"] if role == "teacher" else PAPER["metric_student"])
        m = m_per_class or p["m_per_class"]
        batch = batch_size or (OFFICIAL["metric_batch_size"] if m == p["m_per_class"] else (p["batch_size"] // m) * m)
        model = _metric_model(dataset, role, pretrained)
        cls = _METRIC_CLASSES[dataset]
        train_set = cls(root, "train", transform=_image_transforms(True, image_size))
        test_set = cls(root, "test", transform=_image_transforms(False, image_size))
        sampler = ClassBalancedBatchSampler(train_set.targets, m, batch, seed=seed,
                                            num_batches=num_batches or OFFICIAL["batches_per_epoch"])
        loader = EpochDataLoader(train_set, sampler, seed, num_workers=workers, pin_memory=pin,
                                 persistent_workers=workers > 0)
        test_loader = DataLoader(test_set, batch_size=128, shuffle=False, num_workers=workers, pin_memory=pin)
        config = TrainConfig(epochs=p["epochs"], lr=p["lr"], optimizer="adam",
                             weight_decay=OFFICIAL["adam_weight_decay"], milestones=p["milestones"],
                             gamma=p["gamma"], seed=seed)
        if role == "teacher":
            terms = [triplet(1.0, margin=0.2)]
            loss = p["loss"]
        else:
            terms = [rkd(p["rkd_distance"], p["rkd_angle"])]
            loss = f"{p['rkd_distance']:g} RKD-D + {p['rkd_angle']:g} RKD-A (no triplet)"
        settings = {"backbone": p["backbone"], "embedding_dim": model.embedding_dim, "l2_normalized": p["normalize"],
                    "pretrained": pretrained, "batch_size": batch, "m_per_class": m,
                    "batches_per_epoch": len(sampler), "image_size": image_size, "loss": loss}

    model = model.to(device)
    if role == "student" and teacher is None:
        # Its weights are to be loaded, so no ImageNet download for them.
        teacher = (_cifar_model("teacher") if dataset == "cifar100"
                   else _metric_model(dataset, "teacher", pretrained=False))
    if teacher is not None:
        teacher = teacher.to(device).eval()
        for q in teacher.parameters():
            q.requires_grad_(False)
    optimizer = make_optimizer(model.parameters(), config, device)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    settings.update(dataset=dataset, role=role, optimizer=config.optimizer, lr=config.lr,
                    weight_decay=config.weight_decay, momentum=config.momentum if config.optimizer == "sgd" else None,
                    epochs=config.epochs, milestones=list(config.milestones), gamma=config.gamma,
                    train_images=len(train_set), test_images=len(test_set), num_workers=workers)
    return {"model": model, "loader": loader, "test_loader": test_loader, "optimizer": optimizer,
            "scheduler": scheduler, "terms": terms, "epochs": config.epochs, "config": config,
            "teacher": teacher if role == "student" else None, "settings": settings}


def _evaluate(dataset: str, model: nn.Module, test_loader) -> Dict[str, float]:
    if dataset == "cifar100":
        return {"accuracy": accuracy(model, test_loader)}
    e, y = embed(model, test_loader)
    ks = [k for k in RECALL_KS[dataset] if k <= len(y) - 1]
    return {f"recall@{k}": v for k, v in recall_at_k(e, y, ks).items()}


def run_paper(
    dataset: str,
    root,
    out="results",
    device=None,
    pretrained: bool = True,
    seed: int = 0,
    epochs: Optional[int] = None,
    progress: bool = True,
    checkpoint_dir=None,
    log=print,
    **setup_kwargs,
) -> dict:
    """Train the teacher, then the RKD student, of one paper recipe; write the results with provenance.

    Writes ``out/paper-<dataset>.json`` and ``.md`` (the layout of
    :mod:`rkd_tutorial.experiments`: ``{"provenance": {...}, "rows": [...]}``, one
    row for the teacher and one for the student, with Recall@K or accuracy of the
    last epoch; the provenance's ``teacher_settings`` / ``student_settings`` hold
    the hyperparameters and, under ``"training"``, what ``fit`` ran with:
    precision, DataLoader workers, ``"resume": "exact"``). With ``checkpoint_dir``,
    both stages save their state after every epoch and resume from it
    (:func:`rkd_tutorial.train.fit`), exactly, whatever the number of workers
    (:class:`EpochDataLoader`); a finished teacher is reused.

    Args:
        epochs: override both stages' epochs (e.g. 1 for a smoke test); the
            learning-rate milestones are kept, so only the official count is the recipe.
        setup_kwargs: passed to :func:`paper_setup` (``image_size``, ``num_workers``, ...).

    Returns:
        The results dict.
    """
    _check(dataset, "teacher")
    start = time.time()
    device = _device(device)
    stem = f"paper-{dataset}"
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    rows = []

    def stage(role, teacher=None):
        s = paper_setup(dataset, root, role, device, pretrained, teacher=teacher, seed=seed, **setup_kwargs)
        cfg = s["config"]
        if epochs is not None:
            cfg = dataclasses.replace(cfg, epochs=epochs)
        path = ckpt / f"{stem}-{role}-seed{seed}.pt" if ckpt is not None else None
        log(f"{dataset} {role}: {s['settings']['backbone']}, {cfg.epochs} epochs, {s['settings']['train_images']} "
            f"training images")
        history = fit(s["model"], s["loader"], s["terms"], cfg, teacher=s["teacher"], checkpoint=path,
                      progress=progress, desc=f"{dataset} {role}")
        s["settings"]["training"] = history.settings  # precision, workers, whether a resume is exact, ...
        metrics = _evaluate(dataset, s["model"], s["test_loader"])
        method = "teacher" if role == "teacher" else "rkd-da"   # cifar100: cross-entropy + RKD-DA
        row = {"method": method, "seed": seed, "backbone": s["settings"]["backbone"], **metrics,
               "final_loss": history.records[-1]["loss"]}
        if dataset != "cifar100":
            row = {**row, "embedding_dim": s["settings"]["embedding_dim"]}
        rows.append(row)
        log("  " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return s

    t = stage("teacher")
    s = stage("student", teacher=t["model"])
    prov = provenance("paper", time.time() - start, device, seeds=[seed], dataset=dataset, complete=True,
                      epochs_override=epochs, teacher_settings=t["settings"], student_settings=s["settings"],
                      official=OFFICIAL)
    results = {"provenance": prov, "rows": rows}
    if out is not None:
        path = write_results(results, out, stem)
        log(f"wrote {path}")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rkd_tutorial.recipes",
                                     description="Run one of the RKD paper's recipes (teacher, then RKD student).")
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--root", required=True, help="folder with the unpacked dataset")
    parser.add_argument("--out", default="results", help="folder for paper-<dataset>.json/.md (default: results)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="override the official epochs (smoke tests)")
    parser.add_argument("--no-pretrained", action="store_true", help="start from random weights (offline)")
    parser.add_argument("--checkpoint-dir", default=None, help="save/resume each stage here after every epoch")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers")
    parser.add_argument("--download", action="store_true", help="cifar100: let torchvision download it")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    extra = {"download": True} if args.download else {}
    run_paper(args.dataset, args.root, args.out, args.device, pretrained=not args.no_pretrained, seed=args.seed,
              epochs=args.epochs, progress=not args.no_progress, checkpoint_dir=args.checkpoint_dir,
              num_workers=args.workers, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
