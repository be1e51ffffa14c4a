"""The metric-learning batch sampler: ``m`` examples from each of ``P`` classes.

Losses on *relations* between examples (triplet, RKD's distance and angle
terms) need positives in every batch: a batch of 64 images drawn uniformly
from 100 classes contains few same-class pairs. The usual remedy ("P x K" or
"m per class" sampling) builds each batch from ``P = batch_size // m``
distinct classes with ``m`` examples each.

:class:`ClassBalancedBatchSampler` makes one epoch's batches with a handful of
tensor operations (no per-example Python loop), so the same index tensor can
feed a torch ``DataLoader`` (``batch_sampler=``) or the on-device
:class:`~rkd_tutorial.data.device_loader.DeviceLoader`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """One RNG seed per (seed, epoch), so every epoch is shuffled differently."""
    return (seed * 1_000_003 + epoch) % 2**63


class ClassBalancedBatchSampler:
    """Batches of ``batch_size // m_per_class`` classes x ``m_per_class`` examples.

    Args:
        labels: one integer label per example (tensor or sequence).
        m_per_class: examples per class in each batch (``m``).
        batch_size: examples per batch; must be a multiple of ``m_per_class``.
        seed: the same seed and epoch always give the same batches.
        num_batches: batches per epoch; default ``N // batch_size`` (about one
            pass over the data), at least 1.

    Each batch lists ``m`` indices of its first class, then ``m`` of the
    second, and so on. Within a batch the classes are distinct and the ``m``
    indices of a class are distinct. Each class's examples are used in a
    shuffled cycle, so over an epoch they are visited about evenly.

    Classes with fewer than ``m_per_class`` examples are never drawn (they
    can't supply ``m`` distinct examples); :attr:`skipped_classes` lists them.

    Call :meth:`set_epoch` before each epoch (like torch's
    ``DistributedSampler``); otherwise every epoch repeats the same batches.

    Example::

        sampler = ClassBalancedBatchSampler(y_train, m_per_class=4,
                                            batch_size=64)
        loader = DataLoader(dataset, batch_sampler=sampler)
        for epoch in range(10):
            sampler.set_epoch(epoch)
            for x, y in loader: ...
    """

    def __init__(
        self,
        labels: torch.Tensor | Sequence[int],
        m_per_class: int,
        batch_size: int,
        seed: int = 0,
        num_batches: int | None = None,
    ) -> None:
        labels = torch.as_tensor(labels).detach().cpu().flatten().to(torch.int64)
        if m_per_class < 1:
            raise ValueError(f"m_per_class must be at least 1, got {m_per_class}.")
        if batch_size < 1 or batch_size % m_per_class != 0:
            raise ValueError(
                f"batch_size={batch_size} is not a positive multiple of m_per_class={m_per_class}; "
                f"try batch_size={max(1, batch_size // m_per_class) * m_per_class}."
            )
        if num_batches is not None and num_batches < 1:
            raise ValueError(f"num_batches must be at least 1, got {num_batches}.")

        classes, counts = labels.unique(return_counts=True)
        usable = counts >= m_per_class
        self.skipped_classes: list[int] = classes[~usable].tolist()
        self.classes_per_batch = batch_size // m_per_class
        if int(usable.sum()) < self.classes_per_batch:
            raise ValueError(
                f"a batch of {batch_size} with m_per_class={m_per_class} needs "
                f"{self.classes_per_batch} classes with at least {m_per_class} examples each, "
                f"but only {int(usable.sum())} of the {len(classes)} classes have that many. "
                "Lower batch_size or raise m_per_class."
            )

        self.num_examples = len(labels)
        self.m_per_class = m_per_class
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.num_batches = num_batches or max(1, self.num_examples // batch_size)

        # Indices of the usable examples, grouped by class (class k of
        # `self._classes` owns positions start[k] : start[k] + count[k]).
        self._classes = classes[usable]
        self._count = counts[usable]
        self._start = torch.cumsum(self._count, 0) - self._count
        keep = torch.isin(labels, self._classes)
        self._members = torch.nonzero(keep).flatten()
        self._member_class = torch.searchsorted(self._classes, labels[keep])

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of ``epoch`` from now on."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def epoch_indices(self, epoch: int | None = None) -> torch.Tensor:
        """All batches of one epoch as a CPU ``int64`` tensor ``num_batches x batch_size``."""
        epoch = self.epoch if epoch is None else epoch
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        m, n_classes = self.m_per_class, len(self._classes)

        # 1. Shuffle each class's examples: random keys, then a stable sort by
        #    class keeps the classes grouped but their members in random order.
        by_key = torch.argsort(torch.rand(len(self._members), generator=g))
        by_class = by_key[torch.argsort(self._member_class[by_key], stable=True)]
        shuffled = self._members[by_class]

        # 2. Pick classes_per_batch distinct classes for every batch.
        scores = torch.rand(self.num_batches, n_classes, generator=g)
        chosen = torch.argsort(scores, dim=1)[:, : self.classes_per_batch].flatten()

        # 3. The k-th time a class is chosen this epoch it gives the next m
        #    members of its shuffled cycle: positions k*m .. k*m+m-1 (mod count).
        order = torch.argsort(chosen, stable=True)
        sorted_chosen = chosen[order]
        occurrence = torch.empty_like(chosen)
        occurrence[order] = torch.arange(len(chosen)) - torch.searchsorted(sorted_chosen, sorted_chosen)
        offsets = (occurrence[:, None] * m + torch.arange(m)) % self._count[chosen, None]
        batches = shuffled[self._start[chosen, None] + offsets]
        return batches.view(self.num_batches, self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_indices().tolist()
