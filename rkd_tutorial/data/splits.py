"""The metric-learning protocol: train on some classes, test on unseen ones.

RKD's metric-learning experiments (Park et al., CVPR 2019, Sec. 4.1) follow
the standard zero-shot retrieval protocol: the classes used for training and
the classes used for evaluation are *disjoint*.

* CUB-200-2011: train on classes 1-100, evaluate on 101-200;
* Cars196: train on classes 1-98, evaluate on 99-196;
* Stanford Online Products: ``Ebay_train.txt`` (11,318 classes) /
  ``Ebay_test.txt`` (11,316 classes).

An embedding therefore can't memorise the test classes: Recall@K on the test
split measures how well the *geometry* it learned generalises. We apply the
same idea to Fashion-MNIST: :func:`class_disjoint_split` trains on classes
0-4 and evaluates on classes 5-9.

:func:`subset_per_class` draws a small, balanced, reproducible subset for
the quick CPU profile.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def class_disjoint_split(
    images: torch.Tensor,
    labels: torch.Tensor,
    train_classes: Iterable[int] = range(5),
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Split a dataset by class: ``train_classes`` vs all other classes.

    Args:
        images: ``N x ...`` tensor.
        labels: ``N`` integer tensor.
        train_classes: the classes of the training split; every other class
            goes to the test split. Default: 0-4 (so 5-9 are tested).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``. Labels keep their original
        values (the test split of Fashion-MNIST has labels 5..9), and examples
        keep their original order.

    Raises:
        ValueError: lengths differ, a training class has no example, or no
            example is left for the test split.
    """
    if len(images) != len(labels):
        raise ValueError(f"images has {len(images)} entries but labels has {len(labels)}.")
    wanted = torch.as_tensor(sorted(set(int(c) for c in train_classes)), dtype=labels.dtype)
    if wanted.numel() == 0:
        raise ValueError("train_classes is empty: name at least one class to train on.")
    present = set(labels.unique().tolist())
    missing = [c for c in wanted.tolist() if c not in present]
    if missing:
        raise ValueError(
            f"train_classes {missing} have no example in labels (classes present: {sorted(present)})."
        )
    is_train = torch.isin(labels, wanted.to(labels.device))
    if bool(is_train.all()):
        raise ValueError(
            "every example belongs to train_classes, so the test split would be empty; "
            "leave some classes out for evaluation."
        )
    is_test = ~is_train
    return (images[is_train], labels[is_train]), (images[is_test], labels[is_test])


def subset_per_class(
    images: torch.Tensor, labels: torch.Tensor, n_per_class: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep ``n_per_class`` random examples of every class, reproducibly.

    The same ``seed`` always picks the same examples. Kept examples stay in
    their original order (classes stay interleaved as in the input).

    Raises:
        ValueError: ``n_per_class < 1``, lengths differ, or some class has
            fewer than ``n_per_class`` examples.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}.")
    if len(images) != len(labels):
        raise ValueError(f"images has {len(images)} entries but labels has {len(labels)}.")
    generator = torch.Generator().manual_seed(seed)
    labels_cpu = labels.cpu()
    keep = []
    for c in labels_cpu.unique().tolist():
        members = torch.nonzero(labels_cpu == c).flatten()
        if len(members) < n_per_class:
            raise ValueError(
                f"class {c} has only {len(members)} examples, fewer than n_per_class={n_per_class}."
            )
        keep.append(members[torch.randperm(len(members), generator=generator)[:n_per_class]])
    index = torch.cat(keep).sort().values.to(labels.device)
    return images[index.to(images.device)], labels[index]
