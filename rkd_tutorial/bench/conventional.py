"""The conventional training loop, as the official RKD code runs it: the yardstick of ``bench pipeline``.

The official code (github.com/lenscloth/RKD, ``run_distill.py``) trains the
way most PyTorch code does:

* a torchvision dataset whose images are transformed one at a time, as PIL
  images (``RandomCrop(28, padding=2)``, ``RandomHorizontalFlip``,
  ``ToTensor``, ``Normalize``), in ``DataLoader`` worker processes, then
  collated and copied to the device batch by batch;
* eager float32 and the direct RKD formulation
  (:mod:`rkd_tutorial.losses.direct`: ``N x N x D`` and ``N^3`` tensors);
* ``loss.item()`` at every step, to log it: the host waits for the device to
  finish the step before it may queue the next one.

:mod:`.pipeline` times this loop against :func:`rkd_tutorial.train.fit`.
The workers persist from epoch to epoch (``persistent_workers``), so their
start-up is paid once, in the warm-up epoch: a small favour to this loop.
"""

from __future__ import annotations

import time
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn


def conventional_transform(augment: bool = True):
    """The per-image torchvision transform (PIL image -> normalised tensor), as in the official code."""
    from torchvision import transforms

    from ..data import FASHION_MNIST_MEAN, FASHION_MNIST_STD

    steps = [transforms.RandomCrop(28, padding=2), transforms.RandomHorizontalFlip()] if augment else []
    steps += [transforms.ToTensor(), transforms.Normalize((FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,))]
    return transforms.Compose(steps)


def conventional_loader(root, indices: Sequence[int], batch_sampler, device: torch.device, workers: int):
    """Fashion-MNIST training images ``indices`` as torchvision reads them, in ``batch_sampler``'s batches."""
    import torchvision
    from torch.utils.data import DataLoader, Subset

    full = torchvision.datasets.FashionMNIST(str(root), train=True, transform=conventional_transform(),
                                             download=False)
    return DataLoader(Subset(full, list(indices)), batch_sampler=batch_sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def direct_rkd(student: torch.Tensor, teacher: torch.Tensor, distance_weight: float, angle_weight: float):
    """``distance_weight * RKD-D + angle_weight * RKD-A`` (Eq. 8), in the direct formulation."""
    from ..losses.direct import direct_angle_loss, direct_distance_loss

    return distance_weight * direct_distance_loss(student, teacher) + angle_weight * direct_angle_loss(student, teacher)


def train_conventionally(loader, teacher: nn.Module, student: nn.Module, epochs: int, lr: float,
                         weights: Tuple[float, float], device: torch.device) -> Tuple[List[float], List[float]]:
    """``epochs`` epochs of the official loop with Adam; the clock at the end of each epoch, and each epoch's mean loss."""
    teacher.eval()
    student.train()
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    ends, means = [], []
    for epoch in range(epochs):
        loader.batch_sampler.set_epoch(epoch)
        losses = []
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            with torch.no_grad():
                t = teacher(x).embedding
            loss = direct_rkd(student(x).embedding, t, *weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())  # logged every step: the host waits for the device
        ends.append(time.perf_counter())
        means.append(sum(losses) / len(losses))
    return ends, means
