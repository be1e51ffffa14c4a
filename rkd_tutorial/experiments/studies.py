"""Two studies designed where the literature expects distillation to show an effect.

* **darkknowledge** (chapter 5): what a teacher's soft targets carry that the
  labels lack (Hinton, Vinyals, Dean, 2015), in two settings.

  - ``few-labels``: the student sees only a few labelled images per class,
    while the teacher's outputs are available on every image. Cross-entropy
    on the labelled images alone is the baseline; each distillation method
    adds its term on all images.
  - ``omit-<class>``: Hinton et al.'s "mythical digit": one class is left
    out of the student's training set entirely. A student trained on labels
    cannot name it; one trained on the teacher's soft targets has seen, on the
    other classes' images, how much they resemble it. Scored by the
    omitted class's AUC (how well the student's logit for it separates its
    test images from the others, threshold-free) and by the accuracy on the
    omitted class after raising that logit's bias by 3.5, the value Hinton
    et al. report for their digit 3 (taken from the paper, not tuned here).

* **consistency** (chapter 5): does Hinton KD need the student to see new
  views of the images? Beyer et al. (CVPR 2022) argue that distillation is
  function matching: it pays when the student is trained on many views that
  the teacher labels consistently (the same augmented image for both), and a
  short schedule on the fixed training images can leave it no better, or
  worse, than labels alone. Cross-entropy and cross-entropy + Hinton KD,
  each without and with augmentation (random crop and flip; with it, the
  teacher runs on the student's augmented batch).
* **ablation** (chapter 6): RKD-DA's choices varied one at a time around a
  reference student (weights 1 and 2, batch 64, unnormalised embedding), with
  several seeds, on a reduced budget (fewer images, fewer epochs, a larger
  learning rate), next to the student trained without a teacher.

Both write results files like :mod:`.runs` (provenance, resume, comparisons).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence

import torch

from ..data import FASHION_CLASSES, ClassBalancedBatchSampler, DeviceLoader, random_crop_flip
from ..evaluate import accuracy, recall_at_k
from ..losses import RKDLoss
from ..models import Classifier, EmbeddingNet, build_backbone
from ..train import Term, ce, fit, hkd, rkd, triplet
from .methods import CLASSIFY_METHODS
from .profiles import MetricProfile, classify_profile, device, metric_data, metric_profile
from .runs import Run, _note_teacher_check, classify_teachers, distill_classify_student
from .teachers import run_checkpoint, train_config, train_metric_teacher

__all__ = [
    "run_darkknowledge", "run_ablation", "run_consistency", "DARK_METHODS", "OMIT_METHODS",
    "CONSISTENCY_METHODS", "HINTON_BIAS_SHIFT", "few_labels", "omitted_class_scores", "omit_terms",
    "train_omitted_class_student", "ablation_variants", "ablation_profile", "train_ablation_student",
    "ABLATION_BUDGET",
]

#: The few-labels setting's methods: the labels alone, then each teacher term added.
DARK_METHODS = ("baseline", "hkd", "rkd-da", "hkd+rkd-da")

#: The omitted-class setting's methods: labels only, labels + soft targets, soft targets only.
OMIT_METHODS = ("baseline", "hkd", "hkd-only")

#: Hinton et al. (2015, Section 3): raising the omitted digit's bias by 3.5 let their student name it.
HINTON_BIAS_SHIFT = 3.5


def few_labels(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """``labels`` with all but ``per_class`` random examples of each class set to -1 (unlabelled)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.full_like(labels, -1)
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        keep = members[torch.randperm(len(members), generator=g)[:per_class]]
        out[keep] = c
    return out


@torch.no_grad()
def omitted_class_scores(model, test, omitted: int, bias_shift: float = HINTON_BIAS_SHIFT) -> Dict[str, float]:
    """How well ``model`` knows a class it never saw: AUC of its logit, accuracy after a bias shift.

    ``auc_omitted``: the probability that a random test image of the omitted
    class gets a higher logit for it than a random image of another class.
    ``accuracy_omitted``: the fraction of the omitted class's test images
    classified correctly once that class's logit is raised by ``bias_shift``;
    ``accuracy``: over all test images, with the same shift.
    """
    model.eval()
    logits = torch.cat([model(x).logits.float().cpu() for x, _ in test])
    labels = test.labels.cpu()
    mine = labels == omitted
    score = logits[:, omitted]
    pos, neg = score[mine], score[~mine]
    auc = ((pos[:, None] > neg[None, :]).double().mean() + 0.5 * (pos[:, None] == neg[None, :]).double().mean())
    shifted = logits.clone()
    shifted[:, omitted] += bias_shift
    pred = shifted.argmax(1)
    return {"auc_omitted": float(auc), "accuracy_omitted": float((pred[mine] == omitted).double().mean()),
            "accuracy": float((pred == labels).double().mean())}


def omit_terms(method: str):
    """The terms of the omitted-class students: labels, labels + soft targets, soft targets only."""
    return {"baseline": [ce()], "hkd": [ce(), hkd(1.0, 4.0)], "hkd-only": [hkd(1.0, 4.0)]}[method]


def run_darkknowledge(profile=None, seeds: Sequence[int] = (0,), labelled_per_class: int = 10,
                      omitted: Sequence[int] = (2, 7), methods: Optional[Sequence[str]] = None, device_=None,
                      progress=True, log=print, out=None, stem=None, resume=False, overwrite=False) -> dict:
    """Both dark-knowledge settings, per seed, with the profile's classification teacher of that seed.

    ``few-labels``: the student's loader holds the teacher's training images
    with only ``labelled_per_class`` labels per class kept (the rest -1).
    ``omit-<class>`` for each class in ``omitted`` (default Pullover and
    Sneaker): the student's loader holds every training image except that
    class's. ``methods`` restricts both settings' methods.
    """
    p = classify_profile(profile) if isinstance(profile, (str, type(None))) else profile
    if labelled_per_class < 1:
        raise ValueError(f"labelled_per_class must be at least 1, got {labelled_per_class}")
    bad = [c for c in omitted if not 0 <= int(c) < len(FASHION_CLASSES)]
    if bad:
        raise ValueError(f"omitted classes must be in 0..9, got {bad}")
    few = [m for m in CLASSIFY_METHODS if m in DARK_METHODS and (methods is None or m in methods)]
    omit = [m for m in OMIT_METHODS if methods is None or m in methods]
    variants = {"few-labels": few, **{f"omit-{FASHION_CLASSES[c].lower()}": omit for c in omitted}}
    plan = [(m, s, v) for s in seeds for v, ms in [("teacher", ["teacher"]), *variants.items()] for m in ms]
    key = lambda r: (r["method"], r["seed"], r["variant"])
    spec = [{"metric": "accuracy", "reference": "baseline", "group_by": ["variant"]},
            {"metric": "auc_omitted", "reference": "baseline", "group_by": ["variant"]}]
    stem = stem or f"darkknowledge-{p.name}{'-smoke' if p.smoke else ''}"
    with Run("darkknowledge", p, seeds, plan, key, device_, out, stem, resume, overwrite, log, spec,
             {"labelled_per_class": labelled_per_class, "omitted": [int(c) for c in omitted],
              "bias_shift": HINTON_BIAS_SHIFT}) as run:
        for seed, todo, train, test, teacher in run.per_seed(*classify_teachers(p, device_, progress,
                                                                                  variant="teacher")):
            labels = few_labels(train.labels.cpu(), labelled_per_class, seed)
            partial = DeviceLoader(train.images, labels, p.batch_size, device=train.device, seed=seed)
            for method, _, variant in todo:
                name = f"{variant}-{method}-seed{seed}"
                if variant == "few-labels":
                    student, hist = distill_classify_student(p, method, teacher, partial, seed, device_, progress,
                                                             run.checkpoint(name), partial_labels=True)
                    row = {"accuracy": accuracy(student, test), "labelled": int((labels >= 0).sum())}
                else:                                   # omit-<class>
                    c = [k for k in omitted if variant == f"omit-{FASHION_CLASSES[k].lower()}"][0]
                    keep = (train.labels != c).cpu()
                    loader = DeviceLoader(train.images[keep], train.labels[keep], p.batch_size,
                                          device=train.device, seed=seed)
                    student, hist = train_omitted_class_student(p, method, teacher, loader, seed, device_,
                                                                progress, run.checkpoint(name))
                    row = omitted_class_scores(student, test, c)
                run.add({"method": method, "seed": seed, "variant": variant, "backbone": p.student_backbone,
                         **row, "final_loss": hist.records[-1]["loss"]}, hist)
        _note_teacher_check(run, "accuracy", "baseline", variant="few-labels")
        return run.finish()


def train_omitted_class_student(p, method: str, teacher, loader, seed: int = 0, device_=None, progress=True,
                                checkpoint=None):
    """One student of the omitted-class setting (:data:`OMIT_METHODS`) on ``loader``, which lacks the class."""
    torch.manual_seed(seed)
    student = Classifier(build_backbone(p.student_backbone), 10).to(device(device_))
    cfg = train_config(p.student_epochs, p.lr, seed, p.autocast)
    hist = fit(student, loader, omit_terms(method), cfg, teacher=teacher if method != "baseline" else None,
               progress=progress, desc=method, checkpoint=checkpoint)
    return student, hist


# ----------------------------------------------------------------------------- consistency

#: The consistency study's students: (method, augmented).
CONSISTENCY_METHODS = ("baseline", "hkd", "baseline+aug", "hkd+aug")


def run_consistency(profile=None, seeds: Sequence[int] = (0,), methods: Optional[Sequence[str]] = None,
                    device_=None, progress=True, log=print, out=None, stem=None, resume=False,
                    overwrite=False) -> dict:
    """Cross-entropy and Hinton KD students, without and with augmentation, per seed.

    ``+aug``: the student's batches are randomly cropped and flipped
    (:func:`~rkd_tutorial.data.random_crop_flip`), and the teacher sees the
    same augmented batch (``fit`` then runs it every step instead of using
    outputs cached on the fixed images).
    """
    p = classify_profile(profile) if isinstance(profile, (str, type(None))) else profile
    names = [m for m in CONSISTENCY_METHODS if methods is None or m in methods]
    plan = [(m, s) for s in seeds for m in ["teacher", *names]]
    key = lambda r: (r["method"], r["seed"])
    spec = [{"metric": "accuracy", "reference": "baseline"}, {"metric": "accuracy", "reference": "baseline+aug"}]
    stem = stem or f"consistency-{p.name}{'-smoke' if p.smoke else ''}"
    with Run("consistency", p, seeds, plan, key, device_, out, stem, resume, overwrite, log, spec) as run:
        for seed, todo, train, test, teacher in run.per_seed(*classify_teachers(p, device_, progress)):
            for name, _ in todo:
                method, augmented = name.split("+aug")[0], name.endswith("+aug")
                train.augment = random_crop_flip if augmented else None
                try:
                    student, hist = distill_classify_student(p, method, teacher, train, seed, device_, progress,
                                                             run.checkpoint(f"{name}-seed{seed}"))
                finally:
                    train.augment = None
                run.add({"method": name, "seed": seed, "augmented": augmented, "accuracy": accuracy(student, test),
                         "final_loss": hist.records[-1]["loss"]}, hist)
        _note_teacher_check(run, "accuracy", "baseline")
        return run.finish()


# ----------------------------------------------------------------------------- ablation

#: The ablation budget: per-class training images, epochs and learning rate of every student.
ABLATION_BUDGET = {"train_per_class": 300, "student_epochs": 4, "student_lr": 3e-3}


def _rkd_on_pooled() -> Term:
    loss = RKDLoss(1.0, 2.0)
    return Term("rkd-da-pooled", 1.0, lambda s, t, y: loss(s.pooled, t.pooled), teacher_fields=("pooled",))


def ablation_variants() -> Dict[str, dict]:
    """The students of the ablation, by name: their terms and what differs from the reference.

    The reference: RKD-DA (weights 1 and 2) on the embedding, batch 64,
    unnormalised, the profile's first embedding size.
    """
    return {
        "reference": dict(terms=lambda: [rkd(1.0, 2.0)]),
        "angle weight 0 (RKD-D)": dict(terms=lambda: [rkd(1.0, 0.0)]),
        "angle weight 1": dict(terms=lambda: [rkd(1.0, 1.0)]),
        "angle weight 4": dict(terms=lambda: [rkd(1.0, 4.0)]),
        "distance weight 0 (RKD-A)": dict(terms=lambda: [rkd(0.0, 2.0)]),
        "batch 16": dict(terms=lambda: [rkd(1.0, 2.0)], batch_size=16),
        "batch 128": dict(terms=lambda: [rkd(1.0, 2.0)], batch_size=128),
        "L2-normalised": dict(terms=lambda: [rkd(1.0, 2.0)], normalize=True),
        "on pooled features": dict(terms=lambda: [_rkd_on_pooled()], field="pooled"),
        "no teacher (triplet, L2)": dict(terms=lambda: [triplet()], normalize=True),
    }


def ablation_profile(profile=None) -> MetricProfile:
    """The metric profile with the ablation budget (:data:`ABLATION_BUDGET`).

    At smoke scale: one epoch, and enough images per class for the largest
    batch of the variants (128, four classes of 32).
    """
    p = metric_profile(profile) if isinstance(profile, (str, type(None))) else profile
    budget = dict(ABLATION_BUDGET)
    if p.smoke:
        budget.update(train_per_class=max(p.train_per_class, 128 // 4), student_epochs=p.student_epochs)
    return dataclasses.replace(p, **budget)


def _recall1(model, test, field: str = "embedding") -> float:
    model.eval()
    with torch.no_grad():
        e = torch.cat([getattr(model(x), field).float().cpu() for x, _ in test])
    return recall_at_k(e, test.labels.cpu(), ks=(1,))[1]


def train_ablation_student(p: MetricProfile, train, teacher, seed: int, terms, batch_size: int = 64,
                           normalize: bool = False, device_=None, progress=False, checkpoint=None):
    """One ablation student: as many steps per epoch as the reference, 4 classes per batch."""
    steps = len(train)
    sampler = ClassBalancedBatchSampler(train.labels.cpu(), batch_size // 4, batch_size, seed=seed, num_batches=steps)
    loader = DeviceLoader(train.images, train.labels, batch_size, device=train.device, sampler=sampler, seed=seed)
    torch.manual_seed(seed)
    student = EmbeddingNet(build_backbone(p.student_backbone), p.student_dims[0], normalize=normalize)
    student = student.to(device(device_))
    cfg = train_config(p.student_epochs, p.student_lr, seed, p.autocast)
    needs_teacher = any(t.needs_teacher for t in terms)
    hist = fit(student, loader, terms, cfg, teacher=teacher if needs_teacher else None, progress=progress,
               checkpoint=checkpoint)
    return student, hist


def run_ablation(profile=None, seeds: Sequence[int] = (0,), variants: Optional[Sequence[str]] = None, device_=None,
                 progress=True, log=print, out=None, stem=None, resume=False, overwrite=False) -> dict:
    """Every ablation variant (:func:`ablation_variants`) per seed, with the metric teacher of that seed."""
    p = ablation_profile(profile)
    table = ablation_variants()
    names = list(variants or table)
    unknown = [v for v in names if v not in table]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; choose from {list(table)}")
    plan = [(m, s) for s in seeds for m in ["teacher", *names]]
    key = lambda r: (r["method"], r["seed"])
    spec = [{"metric": "recall@1", "reference": "reference"}]
    stem = stem or f"ablation-{p.name}{'-smoke' if p.smoke else ''}"
    with Run("ablation", p, seeds, plan, key, device_, out, stem, resume, overwrite, log, spec,
             {"budget": ABLATION_BUDGET}) as run:
        full = metric_profile(p.name)          # the teacher is the metric experiment's, shared
        teachers = run.per_seed(
            lambda seed: metric_data(full, device_, seed),
            lambda train, seed: train_metric_teacher(full, train, seed, device_,
                                                     run_checkpoint("metric", full, seed, device_), progress),
            lambda teacher, test: {"recall@1": _recall1(teacher, test)}, {})
        for seed, todo, _, test, teacher in teachers:
            train, _ = metric_data(p, device_, seed)
            for name, _ in todo:
                v = table[name]
                student, hist = train_ablation_student(p, train, teacher, seed, v["terms"](), v.get("batch_size", 64),
                                                       v.get("normalize", False), device_, progress,
                                                       run.checkpoint(f"{name.replace(' ', '_')}-seed{seed}"))
                row = {"method": name, "seed": seed, "recall@1": _recall1(student, test, v.get("field", "embedding"))}
                run.add(row, hist)
        return run.finish()
