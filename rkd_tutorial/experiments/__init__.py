"""The book's experiments: profiles, methods, teachers, runs and studies, with results files.

All on Fashion-MNIST (the paper's own datasets are recipes, :mod:`rkd_tutorial.recipes`):

* :mod:`.profiles`: how big a run is (``quick`` by default, ``full`` opt-in,
  ``RKD_SMOKE=1`` for seconds), and its data;
* :mod:`.methods`: each method as a list of loss terms;
* :mod:`.teachers`: training, shipping and caching the teachers;
* :mod:`.runs`: the **metric** and **classify** experiments (chapters 4, 5, 7);
* :mod:`.studies`: the **darkknowledge**, **consistency** (chapter 5) and **ablation** (chapter 6) studies.

``python -m rkd_tutorial metric|classify|darkknowledge|consistency|ablation`` runs them
and writes results files with provenance; every comparison between methods
uses the book's one rule (:mod:`rkd_tutorial.stats`).
"""

from ..resultfiles import markdown_table, merge_results, write_results
from .methods import CLASSIFY_METHODS, METRIC_METHODS, USES_LABELS, ce_labelled, classify_terms, metric_terms
from .profiles import (
    CLASSIFY_PROFILES,
    METRIC_PROFILES,
    PAPER,
    PROFILES,
    ClassifyProfile,
    MetricProfile,
    classify_data,
    classify_profile,
    default_profile,
    metric_data,
    metric_profile,
    smoke,
)
from .record import code_fingerprint, provenance
from .runs import (
    distill_classify_student,
    distill_metric_student,
    recall_metrics,
    run_classify,
    run_metric,
    teacher_check,
)
from .studies import (
    ABLATION_BUDGET,
    CONSISTENCY_METHODS,
    DARK_METHODS,
    OMIT_METHODS,
    ablation_profile,
    ablation_variants,
    few_labels,
    omitted_class_scores,
    run_ablation,
    run_consistency,
    run_darkknowledge,
    train_ablation_student,
    train_omitted_class_student,
)
from .teachers import (
    CHECKPOINTS,
    load_or_train_teacher,
    save_teacher,
    teacher_architecture,
    train_classify_teacher,
    train_config,
    train_metric_teacher,
    train_teacher,
)

__all__ = [
    "MetricProfile", "ClassifyProfile", "METRIC_PROFILES", "CLASSIFY_PROFILES", "PAPER", "PROFILES",
    "default_profile", "smoke", "metric_profile", "classify_profile", "metric_data", "classify_data",
    "METRIC_METHODS", "CLASSIFY_METHODS", "USES_LABELS", "metric_terms", "classify_terms", "ce_labelled",
    "CHECKPOINTS", "train_metric_teacher", "train_classify_teacher", "train_teacher", "load_or_train_teacher",
    "save_teacher", "teacher_architecture", "train_config",
    "run_metric", "run_classify", "distill_metric_student", "distill_classify_student", "recall_metrics",
    "provenance", "code_fingerprint", "teacher_check",
    "run_darkknowledge", "run_ablation", "DARK_METHODS", "ABLATION_BUDGET", "ablation_variants", "ablation_profile",
    "few_labels", "run_consistency", "CONSISTENCY_METHODS", "OMIT_METHODS", "omitted_class_scores",
    "train_omitted_class_student", "train_ablation_student",
    "write_results", "markdown_table", "merge_results",
]
