"""The conventional pipeline: what the official RKD code does, as the benchmark's yardstick.

Part of ``python -m rkd_tutorial.bench pipeline`` (:mod:`.pipeline` explains
the benchmark): a per-image ``DataLoader`` with workers and torchvision
transforms, eager float32, the direct RKD formulation
(:mod:`rkd_tutorial.losses.direct`), ``loss.item()`` every step.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, List, Optional

import torch

if TYPE_CHECKING:
    from .pipeline import Data

def conventional_transform(augment: bool = True):
    """The per-image torchvision transform of the conventional pipeline (PIL image -> normalised tensor)."""
    from torchvision import transforms

    from ..data import FASHION_MNIST_MEAN, FASHION_MNIST_STD

    steps = [transforms.RandomCrop(28, padding=2), transforms.RandomHorizontalFlip()] if augment else []
    steps += [transforms.ToTensor(), transforms.Normalize((FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,))]
    return transforms.Compose(steps)


class EpochBatches:
    """A ``batch_sampler`` whose epoch and length can be set: ``steps`` batches of epoch ``epoch``.

    Wraps the class-balanced sampler (or plain shuffling) so that the warm-up
    and the timed epochs of a *persistent-worker* ``DataLoader`` can have
    different lengths: the loader asks for ``iter(batch_sampler)`` at the
    start of every epoch.
    """

    def __init__(self, batches_of_epoch: Callable[[int], torch.Tensor], steps: int) -> None:
        self.batches_of_epoch = batches_of_epoch
        self.epoch = 0
        self.steps = steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        yield from self.batches_of_epoch(self.epoch)[: self.steps].tolist()


def build_conventional(data: Data, device: torch.device, workers: int, steps: int):
    """Dataset, batch sampler and ``DataLoader`` of the conventional variant."""
    import torchvision
    from torch.utils.data import DataLoader, Subset

    full = torchvision.datasets.FashionMNIST(str(data.root), train=True, transform=conventional_transform(),
                                             download=False)
    dataset = Subset(full, data.indices.tolist())
    batches = EpochBatches(data.batch_source(), steps)
    loader = DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    return loader, batches


def conventional_epoch(loader, batches: EpochBatches, epoch: int, steps: int, teacher, student, optimizer,
                       loss_fn: Callable, device: torch.device, first: Optional[list] = None) -> List[float]:
    """One epoch as the official code runs it; returns the per-step losses (read with ``.item()``).

    ``loss_fn(student_embedding, teacher_embedding)`` is the direct RKD formulation
    (:func:`rkd_tutorial.bench.pipeline.direct_rkd`).

    ``first``, if given, receives the seconds from ``iter(loader)`` to the
    first batch (worker start-up on the first epoch of a persistent loader).
    """
    batches.set_epoch(epoch)
    batches.steps = steps
    losses: List[float] = []
    t0 = time.perf_counter()
    for x, y in loader:
        if first is not None and not losses:
            first.append(time.perf_counter() - t0)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.no_grad():
            t = teacher(x).embedding
        s = student(x).embedding
        loss = loss_fn(s, t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
