"""Fashion-MNIST, the tutorial's default dataset, loaded with torchvision.

Fashion-MNIST (Xiao, Rasul, Vollgraf, 2017) has 70,000 grey-scale 28 x 28
images of clothing in 10 classes: 60,000 for training and 10,000 for testing.
It is small enough to train a teacher and a student on a laptop CPU, and hard
enough that the embedding geometry RKD transfers is interesting.

Where the files come from, in this order:

1. ``root/FashionMNIST/raw/`` already holds the four uncompressed IDX files:
   load them.
2. Debian's package ``dataset-fashion-mnist`` installed the ``.gz`` files in
   :data:`FASHION_MNIST_DEBIAN` (override with the environment variable
   ``RKD_FASHION_MNIST_DEBIAN``): gunzip them into ``root/FashionMNIST/raw/``,
   then load. (Debian recompresses the files, so torchvision's checksum of
   the ``.gz`` fails; the uncompressed contents are the same.)
3. Otherwise let torchvision download them (Colab, a laptop with internet).
4. If that fails too, raise one :class:`RuntimeError` that says how to get
   the data. There is never a synthetic stand-in: every number in the book
   comes from the real images.

``root`` defaults to :func:`default_root`: ``$RKD_DATA`` or
``~/.cache/rkd_tutorial``.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import torch
import torchvision

from ..provenance import write_atomic

FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""The 10 Fashion-MNIST class names; label ``i`` is ``FASHION_CLASSES[i]``."""

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the ``.gz`` files."""

RAW_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The four files torchvision expects in ``root/FashionMNIST/raw/``."""

# (resolved root, train) -> (images, labels). Filled by load_fashion_mnist.
_CACHE: dict[tuple[str, bool], tuple[torch.Tensor, torch.Tensor]] = {}


def default_root() -> Path:
    """The data folder: ``$RKD_DATA`` if set, else ``~/.cache/rkd_tutorial``."""
    env = os.environ.get("RKD_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "rkd_tutorial"


def debian_dir() -> Path:
    """The Debian folder: ``$RKD_FASHION_MNIST_DEBIAN`` or :data:`FASHION_MNIST_DEBIAN`."""
    env = os.environ.get("RKD_FASHION_MNIST_DEBIAN")
    return Path(env).expanduser() if env else FASHION_MNIST_DEBIAN


def _raw_dir(root: Path) -> Path:
    return root / "FashionMNIST" / "raw"


def _has_raw_files(root: Path) -> bool:
    return all((_raw_dir(root) / name).is_file() for name in RAW_FILES)


def _gunzip_atomically(src: Path, dst: Path) -> None:
    """Decompress ``src`` to ``dst`` so that ``dst`` is either absent or complete.

    :func:`rkd_tutorial.provenance.write_atomic` writes a temporary file in the
    same folder and renames it with :func:`os.replace`, which is atomic on one
    file system: an interrupted run (Ctrl-C, full disk) never leaves a
    truncated file that a later run would trust.
    """

    def gunzip(tmp: str) -> None:
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, length=1 << 20)

    write_atomic(dst, gunzip)


def _copy_from_debian(root: Path) -> bool:
    """Gunzip the Debian files into ``root/FashionMNIST/raw/``; False if absent."""
    src_dir = debian_dir()
    sources = [src_dir / f"{name}.gz" for name in RAW_FILES]
    if not all(src.is_file() for src in sources):
        return False
    raw = _raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    for name, src in zip(RAW_FILES, sources):
        if not (raw / name).is_file():
            _gunzip_atomically(src, raw / name)
    return True


def _download_with_torchvision(root: Path, train: bool) -> None:
    """Let torchvision fetch the files from the internet (Colab, laptops)."""
    torchvision.datasets.FashionMNIST(str(root), train=train, download=True)


def load_fashion_mnist(
    root: str | os.PathLike[str] | None = None, train: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one Fashion-MNIST split as two tensors.

    Args:
        root: data folder; ``None`` means :func:`default_root`. The files end
            up in ``root/FashionMNIST/raw/``.
        train: the 60,000 training images if True, else the 10,000 test images.

    Returns:
        ``(images, labels)``: ``images`` is a ``uint8`` tensor ``N x 28 x 28``
        (0 = black background), ``labels`` an ``int64`` tensor ``N`` with
        values 0..9 (see :data:`FASHION_CLASSES`).

    The result is cached per (root, split) for the life of the process, so a
    second call is free. The cached tensors are shared: don't modify them in
    place (indexing, ``.float()`` and the splits below all make copies).

    Raises:
        RuntimeError: the files are nowhere to be found and can't be
            downloaded; the message says how to get them.
    """
    root = Path(root).expanduser() if root is not None else default_root()
    key = (str(root.resolve()), bool(train))
    if key in _CACHE:
        return _CACHE[key]

    if not _has_raw_files(root) and not _copy_from_debian(root):
        try:
            _download_with_torchvision(root, train)
        except Exception as err:  # URLError, socket errors, checksum failures...
            raise RuntimeError(
                f"Fashion-MNIST is not in {_raw_dir(root)} and could not be "
                f"downloaded ({type(err).__name__}: {err}). Get it in one of "
                "three ways: (1) on Debian/Ubuntu, `apt-get install "
                f"dataset-fashion-mnist` (files land in {FASHION_MNIST_DEBIAN}; "
                "set RKD_FASHION_MNIST_DEBIAN if yours are elsewhere); "
                "(2) run again with network access, and torchvision downloads "
                f"it; (3) put the four uncompressed files {', '.join(RAW_FILES)} "
                f"in {_raw_dir(root)}. Set RKD_DATA to use another data folder."
            ) from err

    dataset = torchvision.datasets.FashionMNIST(str(root), train=train, download=False)
    images = dataset.data.to(torch.uint8)
    labels = dataset.targets.to(torch.int64)
    _CACHE[key] = (images, labels)
    return images, labels
