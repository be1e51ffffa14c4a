"""The two main experiments: a teacher, then one student per method, per seed.

* **metric**: a triplet-trained teacher, then one student per method, trained
  on classes 0-4 and evaluated by Recall@K on the unseen classes 5-9 (test
  split), as CUB-200-2011 trains on 1-100 and tests on 101-200. Every method
  runs at the profile's first embedding size; triplet and RKD-DA also at the
  others (the paper's embedding-size comparison), and RKD-DA once more as
  *self-distillation*: a student with the teacher's own architecture.
* **classify**: a classifier teacher, then students trained with
  cross-entropy plus each distillation term; accuracy on the test split.

Every result is a row with its seed; every file has the provenance of the run
that produced it (:func:`provenance`), is written safely, can be resumed, and
is compared by the book's rule (:mod:`rkd_tutorial.resultfiles`,
:mod:`rkd_tutorial.stats`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..evaluate import accuracy, embed, recall_at_k
from ..models import Classifier, EmbeddingNet, build_backbone
from ..resultfiles import RunFile
from ..stats import compare
from ..train import fit
from .methods import CLASSIFY_METHODS, METRIC_METHODS, USES_LABELS, classify_terms, metric_terms
from .profiles import ClassifyProfile, MetricProfile, classify_data, classify_profile, device, metric_data, metric_profile
from .record import code_fingerprint, provenance
from .teachers import run_checkpoint, train_classify_teacher, train_config, train_metric_teacher

__all__ = [
    "run_metric", "run_classify", "distill_metric_student", "distill_classify_student", "recall_metrics",
    "provenance", "code_fingerprint", "Run", "check_dims", "teacher_check", "metric_plan",
]


# ----------------------------------------------------------------------------- one run

class Run:
    """Rows of one experiment run, kept in memory and, with ``out``, in its results files.

    With ``out`` set, :class:`~rkd_tutorial.resultfiles.RunFile` takes the lock,
    refuses to destroy an unfinished run, resumes one (``resume``), and writes
    every row as it comes; ``checkpoint(name)`` gives a path in the run's work
    folder, so an interrupted teacher or student resumes where it stopped.
    """

    def __init__(self, experiment: str, profile, seeds, planned, key: Callable[[dict], tuple], device_=None,
                 out=None, stem: Optional[str] = None, resume=False, overwrite=False, log=print,
                 compare_spec: Optional[list] = None, extra: Optional[dict] = None):
        self.experiment, self.profile, self.seeds, self.device = experiment, profile, list(seeds), device_
        self.planned, self.key, self.log = list(planned), key, log
        self.compare_spec, self.extra = compare_spec, dict(extra or {})
        self.start = time.time()
        self.settings: Dict[str, object] = {}
        self.notes: List[str] = []
        stem = stem or f"{experiment}-{profile.name}{'-smoke' if profile.smoke else ''}"
        self.file = None if out is None else RunFile(out, stem, asdict(profile), self.planned, key, resume, overwrite)
        self._rows: List[dict] = []

    def __enter__(self) -> "Run":
        if self.file is not None:
            self.file.__enter__()
            self._rows = self.file.rows
            if self.file.resumed_from:
                self.log(f"resuming: {self.file.resumed_from['rows']} rows kept from {self.file.resumed_from['file']}")
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.__exit__(*exc)

    @property
    def rows(self) -> List[dict]:
        return self._rows

    def done(self, key: tuple) -> bool:
        return any(self.key(r) == key for r in self._rows)

    def todo(self, seed: int) -> List[tuple]:
        return [k for k in self.planned if k[1] == seed and not self.done(k)]

    def per_seed(self, data: Callable, train_teacher: Callable, score: Callable, teacher_row: dict):
        """Each seed that still has rows to measure: ``(seed, todo, train, test, teacher)``.

        Loads the seed's data (``data(seed)``), trains or finds its teacher
        (``train_teacher(train, seed)``, shared between runs through
        :func:`~.teachers.run_checkpoint`), records the teacher's row
        (``teacher_row`` plus ``score(teacher, test)``) if it is still to be
        measured, and yields the keys of the students still to train.
        """
        for seed in self.seeds:
            todo = self.todo(seed)
            if not todo:
                continue
            train, test = data(seed)
            teacher, history = train_teacher(train, seed)
            row = {"method": "teacher", "seed": seed, **teacher_row}
            if self.key(row) in todo:
                self.add({**row, **score(teacher, test)}, history)
            yield seed, [k for k in todo if k != self.key(row)], train, test, teacher

    def checkpoint(self, name: str) -> Optional[Path]:
        if self.file is None:
            return None
        self.file.work.mkdir(parents=True, exist_ok=True)
        return self.file.work / f"{name}.pt"

    def add(self, row: dict, history=None) -> None:
        if history is not None and getattr(history, "settings", None):
            self.settings.update({k: v for k, v in history.settings.items() if not isinstance(v, dict)})
        self.log(_row_line(row))
        self._rows.append(row)
        if self.file is not None:
            self.file.write_partial(self.results(complete=False))

    def results(self, complete: bool = True) -> dict:
        prov = provenance(self.profile, time.time() - self.start, self.device, experiment=self.experiment,
                          seeds=self.seeds, complete=complete, planned_rows=len(self.planned),
                          profile_settings=asdict(self.profile), train_settings=dict(self.settings), **self.extra)
        if self.file is not None and self.file.resumed_from:
            prov["resumed_from"] = self.file.resumed_from
        results = {"provenance": prov, "rows": list(self._rows)}
        if self.compare_spec:
            results["compare"] = self.compare_spec
        if self.notes:
            results["notes"] = list(self.notes)
        return results

    def finish(self) -> dict:
        results = self.results(complete=True)
        if self.file is not None:
            path = self.file.finish(results)
            self.log(f"wrote {path} and {path.with_suffix('.md')}")
        return results


def _row_line(row: dict) -> str:
    keys = [k for k in row if k.startswith("recall@1") or k.startswith("accuracy")]
    dim = f" d={row['embedding_dim']}" if "embedding_dim" in row else ""
    variant = f" [{row['variant']}]" if "variant" in row else ""
    return f"  {row['method']:<12}{variant}{dim} seed={row['seed']}  " + "  ".join(f"{k}={row[k]:.4f}" for k in keys)


def teacher_check(rows: Sequence[dict], metric: str, baseline: str, **where) -> Optional[str]:
    """Does the teacher beat the student trained without it? One sentence, or None without both rows.

    A teacher that is not clearly better (by the book's rule, or by 2 points
    with one seed) gets a warning in the sentence: distilling from it tests little.
    """
    t = {r["seed"]: r[metric] for r in rows if r["method"] == "teacher"}
    b = {r["seed"]: r[metric] for r in rows if r["method"] == baseline and all(r.get(k) == v for k, v in where.items())}
    if not set(t) & set(b):
        return None
    c = compare(t, b, "the teacher", f"the {baseline} student", metric)
    clear = (c.decisive and c.diff > 0) if c.low is not None else c.diff > 0.02
    return "Teacher check: " + c.sentence() + (
        "." if clear else ". WARNING: the teacher is not clearly better than a student trained without it, "
        "so distilling from it tests little; train it longer or check its setup.")


def _note_teacher_check(run: Run, metric: str, baseline: str, **where) -> None:
    sentence = teacher_check(run.rows, metric, baseline, **where)
    if sentence:
        run.notes.append(sentence)
        run.log(sentence)


# ----------------------------------------------------------------------------- metric learning

def recall_metrics(model, test) -> Dict[str, float]:
    """Recall@1/2/4/8 of ``model`` on the ``test`` loader, keyed 'recall@k'."""
    e, y = embed(model, test)
    return {f"recall@{k}": v for k, v in recall_at_k(e, y, (1, 2, 4, 8)).items()}


def check_dims(dims: Sequence[int]) -> tuple:
    """Student embedding sizes as a tuple of positive ints, or a ``ValueError`` that says what is wrong."""
    try:
        dims = tuple(int(d) for d in dims)
    except (TypeError, ValueError):
        raise ValueError(f"embedding sizes must be whole numbers, got {dims!r}") from None
    if not dims or any(d < 1 for d in dims) or len(set(dims)) != len(dims):
        raise ValueError(f"embedding sizes must be distinct positive whole numbers, got {list(dims)}")
    return dims


def distill_metric_student(profile: MetricProfile, method: str, dim: int, teacher, train, seed=0, device_=None,
                           progress=True, checkpoint=None, backbone: Optional[str] = None):
    """One metric-learning student, L2-normalised as the official code's defaults have it.

    The official code normalises every embedding (``--l2normalize true``) except
    the RKD students' (its RKD examples pass ``--l2normalize false``): the
    triplet loss's margin is an absolute distance, which normalisation gives a
    scale, while RKD's losses ignore the scale. So the students of the methods
    that use the triplet loss (:data:`~.methods.USES_LABELS`) are normalised,
    the RKD students are not. ``backbone``: the student's network (default the
    profile's student); the teacher's gives self-distillation.
    """
    torch.manual_seed(seed)
    student = EmbeddingNet(build_backbone(backbone or profile.student_backbone), dim,
                           normalize=method in USES_LABELS)
    student = student.to(device(device_))
    cfg = train_config(profile.student_epochs, profile.student_lr, seed, profile.autocast)
    terms = metric_terms(method, student, teacher)
    history = fit(student, train, terms, cfg, teacher=teacher, progress=progress, desc=f"{method}-{dim}",
                  checkpoint=checkpoint)
    return student, history


def metric_plan(p: MetricProfile, seeds, methods, dims, self_distill: bool) -> List[tuple]:
    """The rows a metric run produces, as keys ``(method, seed, embedding_dim)``."""
    plan = []
    for seed in seeds:
        plan.append(("teacher", seed, p.teacher_dim))
        for i, dim in enumerate(dims):
            plan += [(m, seed, dim) for m in methods if i == 0 or m in ("triplet", "rkd-da")]
        if self_distill:
            plan.append(("self-rkd-da", seed, p.teacher_dim))
    return plan


def run_metric(profile=None, seeds: Sequence[int] = (0,), methods=METRIC_METHODS, dims: Optional[Sequence[int]] = None,
               device=None, progress=True, log=print, out=None, stem=None, resume=False, overwrite=False,
               self_distill: bool = True) -> dict:
    """Teacher then every (method, embedding size) student, per seed; returns the results dict.

    ``dims``: student embedding sizes (default: the profile's). Every method runs at
    the first size; at the other sizes only ``triplet`` and ``rkd-da`` run (the
    embedding-size comparison of the paper's Table 2). ``self_distill`` adds an
    RKD-DA student with the teacher's own architecture and size (the paper's
    self-distillation). With ``out``, the results files ``out/metric-<profile>.json``
    and ``.md`` are written as the rows come (see :class:`Run`).
    """
    p = metric_profile(profile) if isinstance(profile, (str, type(None))) else profile
    dims = check_dims(dims or p.student_dims)
    methods = [m for m in METRIC_METHODS if m in methods]
    key = lambda r: (r["method"], r["seed"], r["embedding_dim"])
    spec = [{"metric": "recall@1", "reference": "triplet", "group_by": ["embedding_dim"]},
            {"metric": "recall@1", "reference": "teacher", "group_by": ["embedding_dim"]}]
    with Run("metric", p, seeds, metric_plan(p, seeds, methods, dims, self_distill), key, device, out, stem,
             resume, overwrite, log, spec, {"dims": list(dims)}) as run:
        teachers = run.per_seed(
            lambda seed: metric_data(p, device, seed),
            lambda train, seed: train_metric_teacher(p, train, seed, device,
                                                     run_checkpoint("metric", p, seed, device), progress),
            recall_metrics, {"embedding_dim": p.teacher_dim, "backbone": p.teacher_backbone})
        for seed, todo, train, test, teacher in teachers:
            for method, _, dim in todo:
                is_self = method == "self-rkd-da"
                student, hist = distill_metric_student(
                    p, "rkd-da" if is_self else method, dim, teacher, train, seed, device, progress,
                    run.checkpoint(f"{method}-{dim}-seed{seed}"), p.teacher_backbone if is_self else None)
                run.add({"method": method, "seed": seed, "embedding_dim": dim,
                         "backbone": p.teacher_backbone if is_self else p.student_backbone,
                         **recall_metrics(student, test), "final_loss": hist.records[-1]["loss"]}, hist)
        _note_teacher_check(run, "recall@1", "triplet", embedding_dim=dims[0])
        return run.finish()


# ----------------------------------------------------------------------------- classification

def distill_classify_student(profile: ClassifyProfile, method: str, teacher, train, seed=0, device_=None,
                             progress=True, checkpoint=None, partial_labels: bool = False):
    """One classification student trained with cross-entropy plus ``method``'s terms."""
    torch.manual_seed(seed)
    student = Classifier(build_backbone(profile.student_backbone), 10).to(device(device_))
    cfg = train_config(profile.student_epochs, profile.lr, seed, profile.autocast)
    terms = classify_terms(method, student, teacher, partial_labels)
    history = fit(student, train, terms, cfg, teacher=teacher if method != "baseline" else None, progress=progress,
                  desc=method, checkpoint=checkpoint)
    return student, history


def classify_teachers(p: ClassifyProfile, device=None, progress=True, **teacher_row):
    """The arguments of :meth:`Run.per_seed` for runs on the classification teacher of ``p``."""
    return (lambda seed: classify_data(p, device, seed),
            lambda train, seed: train_classify_teacher(p, train, seed, device,
                                                       run_checkpoint("classify", p, seed, device), progress),
            lambda teacher, test: {"accuracy": accuracy(teacher, test)},
            {**teacher_row, "backbone": p.teacher_backbone})


def run_classify(profile=None, seeds: Sequence[int] = (0,), methods=CLASSIFY_METHODS, device=None, progress=True,
                 log=print, out=None, stem=None, resume=False, overwrite=False) -> dict:
    """Teacher then one student per method, per seed; returns the results dict (see :func:`run_metric`)."""
    p = classify_profile(profile) if isinstance(profile, (str, type(None))) else profile
    methods = [m for m in CLASSIFY_METHODS if m in methods]
    plan = [(m, s) for s in seeds for m in ["teacher", *methods]]
    key = lambda r: (r["method"], r["seed"])
    spec = [{"metric": "accuracy", "reference": "baseline"}]
    with Run("classify", p, seeds, plan, key, device, out, stem, resume, overwrite, log, spec) as run:
        for seed, todo, train, test, teacher in run.per_seed(*classify_teachers(p, device, progress)):
            for method, _ in todo:
                student, hist = distill_classify_student(p, method, teacher, train, seed, device, progress,
                                                         run.checkpoint(f"{method}-seed{seed}"))
                run.add({"method": method, "seed": seed, "backbone": p.student_backbone,
                         "accuracy": accuracy(student, test), "final_loss": hist.records[-1]["loss"]}, hist)
        _note_teacher_check(run, "accuracy", "baseline")
        return run.finish()
