"""A data loader that keeps a whole small dataset on the GPU (or CPU).

Fashion-MNIST's 60,000 training images take 188 MB as float32: they fit on
any GPU. Keeping them there as *one* tensor removes the usual per-step costs
of a torch ``DataLoader`` (Python work per example, collation, a host-to-
device copy per batch). Each epoch is then:

1. one permutation, made on the device by ``torch.randperm`` with a seeded
   ``torch.Generator`` (or one tensor of class-balanced batches from
   :class:`~rkd_tutorial.data.sampler.ClassBalancedBatchSampler`);
2. per step, ``images.index_select(0, batch_indices)`` and an optional
   augmentation that works on the whole batch at once.

Nothing in a step waits for the device (no ``.item()``, no ``.cpu()``), so
the GPU runs ahead of Python. The same code runs on the CPU, which is what
the tests and the quick profile use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from .sampler import ClassBalancedBatchSampler, epoch_seed

FASHION_MNIST_MEAN = 0.2860
"""Mean pixel of the Fashion-MNIST training images, after scaling to [0, 1]."""
FASHION_MNIST_STD = 0.3530
"""Standard deviation of those pixels."""


def default_device() -> torch.device:
    """CUDA if available, then Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def normalize_images(
    images: torch.Tensor,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Turn images into the float ``N x C x H x W`` tensor a network expects.

    * ``uint8`` pixels (``N x H x W`` or ``N x C x H x W``) are scaled to
      [0, 1], then normalised with ``mean``/``std`` (default: Fashion-MNIST's
      0.2860 / 0.3530).
    * Float images are taken as already prepared and left as they are, unless
      ``mean`` and ``std`` are given, in which case they are normalised.

    A missing channel dimension is added. ``mean``/``std`` may be one number
    or one per channel. The work happens on ``device`` (default: where the
    images are), after moving the compact ``uint8`` tensor there.
    """
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"expected uint8 pixels or float images, got dtype {images.dtype}.")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"expected images N x H x W or N x C x H x W, got shape {tuple(images.shape)}.")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither.")
    images = images.to(device) if device is not None else images
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
        if mean is None:
            mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD
    else:
        images = images.float()
    if mean is not None:
        channels = (1, -1, 1, 1)
        mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).reshape(channels)
        std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).reshape(channels)
        images = (images - mean_t) / std_t
    return images


def random_crop_flip(
    x: torch.Tensor,
    padding: int = 2,
    generator: torch.Generator | None = None,
    fill: float | None = None,
) -> torch.Tensor:
    """Randomly shift each image by up to ``padding`` pixels and flip half of them.

    The classic "pad, random crop, horizontal flip" augmentation, for a whole
    batch ``B x C x H x W`` at once: pad every image, then build for each one
    the row indices ``dy + 0..H-1`` and column indices ``dx + 0..W-1`` (read
    right to left when the image is flipped) and gather. No Python loop over
    images; everything stays on ``x``'s device.

    Args:
        x: float batch ``B x C x H x W``.
        padding: largest shift in pixels (0: flip only).
        generator: a ``torch.Generator`` on ``x``'s device for reproducible
            draws; ``None`` uses torch's global RNG.
        fill: value of the padded border. ``None`` (default) uses each
            image's smallest value per channel: black, the Fashion-MNIST
            background, whatever the normalisation (after normalising,
            0 is no longer black).
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop_flip expects a batch B x C x H x W, got shape {tuple(x.shape)}.")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}.")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"the generator is on {generator.device} but the batch is on {x.device}; "
            f"create it with torch.Generator(device={str(x.device)!r})."
        )
    b, c, h, w = x.shape
    p, device = padding, x.device
    if fill is None:
        border = x.amin(dim=(2, 3), keepdim=True).expand(b, c, h + 2 * p, w + 2 * p)
    else:
        border = x.new_full((b, c, h + 2 * p, w + 2 * p), fill)
    padded = border.clone()
    padded[:, :, p : p + h, p : p + w] = x
    dy = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=device)
    dx = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=device)
    flip = torch.rand(b, 1, generator=generator, device=device) < 0.5
    cols = torch.arange(w, device=device)
    cols = torch.where(flip, (w - 1) - cols, cols) + dx  # B x W
    rows = torch.arange(h, device=device) + dy  # B x H
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * p))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class DeviceLoader:
    """Iterate over ``(x, y)`` batches of a dataset held on one device.

    Args:
        images: ``uint8`` ``N x H x W`` / ``N x C x H x W`` pixels, or float
            ``N x C x H x W`` images (see :func:`normalize_images`).
        labels: ``N`` integer labels.
        batch_size: examples per batch.
        shuffle: a new random order every epoch (else the stored order).
        drop_last: drop the final, smaller batch.
        augment: called on each float batch, e.g. :func:`random_crop_flip`;
            for reproducible augmentation give it its own generator, e.g.
            ``functools.partial(random_crop_flip, generator=g)``.
        device: where to keep the data; default :func:`default_device`.
        sampler: a :class:`ClassBalancedBatchSampler` over the same labels;
            its batches replace ``shuffle``/``drop_last``.
        seed: with the epoch (:meth:`set_epoch`), fixes the order.
        mean, std: normalisation, see :func:`normalize_images`.

    ``len(loader)`` is the number of batches per epoch. Call
    :meth:`set_epoch` before each epoch; the same ``(seed, epoch)`` gives the
    same batches (on the same kind of device: CPU and CUDA generators differ).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: torch.device | str | None = None,
        sampler: ClassBalancedBatchSampler | None = None,
        seed: int = 0,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"images has {len(images)} entries but labels has {len(labels)}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        n = len(labels)
        if sampler is None and drop_last and n < batch_size:
            raise ValueError(
                f"only {n} examples for batch_size={batch_size} with drop_last=True: "
                "no batch would be produced. Lower batch_size or pass drop_last=False."
            )
        if sampler is not None:
            if sampler.num_examples != n:
                raise ValueError(
                    f"the sampler was built on {sampler.num_examples} labels, this loader has {n}."
                )
            if sampler.batch_size != batch_size:
                raise ValueError(
                    f"batch_size={batch_size} but the sampler makes batches of {sampler.batch_size}."
                )
        self.device = torch.device(device) if device is not None else default_device()
        self.images = normalize_images(images, mean, std, device=self.device)
        self.labels = torch.as_tensor(labels).to(device=self.device, dtype=torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.sampler = sampler
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from now on."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.sampler is not None:
            return len(self.sampler)
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> torch.Tensor:
        """This epoch's example order, made on the device."""
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n, device=self.device)
        g = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(n, generator=g, device=self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _, x, y in self.iter_with_index():
            yield x, y

    def iter_with_index(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Like iterating, but yields ``(index, x, y)``: ``index`` says which stored examples
        the batch holds (the training loop uses it to look up precomputed teacher outputs)."""
        if self.sampler is not None:
            batches = self.sampler.epoch_indices(self.epoch)  # made on the CPU, once per epoch
            if self.device.type == "cuda":
                batches = batches.pin_memory()  # so the copy below needn't wait for the GPU
            batches = batches.to(self.device, non_blocking=True)
            index_batches = (batches[i] for i in range(len(batches)))
        else:
            order, bs = self._order(), self.batch_size
            index_batches = (order[i * bs : (i + 1) * bs] for i in range(len(self)))
        for index in index_batches:
            x = self.images.index_select(0, index)
            y = self.labels.index_select(0, index)
            if self.augment is not None:
                x = self.augment(x)
            yield index, x, y
