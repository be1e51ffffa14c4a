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
   ``RKD_FASHION_MNIST_DEBIAN``): gunzip the missing ones into
   ``root/FashionMNIST/raw/``, then load. (Debian recompresses the files, so
   torchvision's checksum of the ``.gz`` fails; the uncompressed contents are
   the same.)
3. Otherwise let torchvision download them (Colab, a laptop with internet).
4. If that fails too, raise one :class:`RuntimeError` that says how to get
   the data. There is never a synthetic stand-in: every number in the book
   comes from the real images.

Every file is checked before it is used, and a decompressed one before it
is moved into place (:func:`_idx_problem`: magic number, dimensions, size,
labels 0..9), so a truncated or garbage file is never cached: the error
names the file and says what to do. A damaged file in ``raw/`` is made
again from Debian's ``.gz`` when that is installed and sound (with a
warning).

``root`` defaults to :func:`default_root`: ``$RKD_DATA`` or
``~/.cache/rkd_tutorial``.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import warnings
import zlib
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

IDX_FILES: dict[str, tuple[int, tuple[int, ...]]] = {
    "train-images-idx3-ubyte": (0x00000803, (60000, 28, 28)),
    "train-labels-idx1-ubyte": (0x00000801, (60000,)),
    "t10k-images-idx3-ubyte": (0x00000803, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": (0x00000801, (10000,)),
}
"""Each raw file's IDX magic number (unsigned bytes, 3 or 1 dimensions) and its dimensions."""

RAW_FILES: tuple[str, ...] = tuple(IDX_FILES)
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


def _idx_problem(path: Path, name: str) -> str | None:
    """What is wrong with ``path`` as the raw file ``name`` (one of :data:`RAW_FILES`), or None.

    A sound file starts with the magic number and dimensions of :data:`IDX_FILES`
    (big-endian 32-bit integers), then holds exactly one byte per pixel or
    label; labels are 0..9. The answer completes "the file ...".
    """
    magic, dims = IDX_FILES[name]
    header = 4 * (1 + len(dims))
    try:
        with open(path, "rb") as f:
            head = f.read(header)
            if head[:4] != magic.to_bytes(4, "big"):
                kind = "labels" if len(dims) == 1 else "images"
                return f"does not start with {magic:#010x}, the magic number of IDX {kind}"
            found = tuple(int.from_bytes(head[i : i + 4], "big") for i in range(4, len(head) - 3, 4))
            if found != dims:
                return f"has dimensions {found}, expected {dims}"
            size, expected = os.fstat(f.fileno()).st_size, header + math.prod(dims)
            if size != expected:
                return f"has {size:,} bytes, expected {expected:,}"
            if len(dims) == 1 and max(f.read(), default=0) > 9:
                return "has labels outside 0..9"
    except OSError as err:
        return f"cannot be read ({err})"
    return None


def _damaged(path: Path, problem: str) -> RuntimeError:
    return RuntimeError(
        f"The Fashion-MNIST file {path} is damaged: it {problem}. Delete it and run again: it is made "
        "again from Debian's files (`apt-get install dataset-fashion-mnist`) or downloaded. "
        "Or set RKD_DATA to use another data folder."
    )


def _gunzip_checked(src: Path, dst: Path, name: str) -> None:
    """Decompress ``src`` to ``dst``, which is then either complete and sound, or unchanged.

    :func:`rkd_tutorial.provenance.write_atomic` writes a temporary file in the
    same folder and renames it with :func:`os.replace`, which is atomic on one
    file system: an interrupted run (Ctrl-C, full disk) never leaves a
    truncated file that a later run would trust. The temporary file is checked
    with :func:`_idx_problem` before the rename, so bad data is never cached.
    """

    def gunzip(tmp: str) -> None:
        try:
            with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, length=1 << 20)
            problem = _idx_problem(Path(tmp), name)
            if problem:
                problem = f"decompressed, it {problem}"
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            problem = f"it cannot be decompressed ({err})"
        if problem:
            raise RuntimeError(
                f"Debian's Fashion-MNIST file {src} is damaged: {problem}. Reinstall it with "
                "`sudo apt-get install --reinstall dataset-fashion-mnist`, or set "
                "RKD_FASHION_MNIST_DEBIAN to a folder of sound copies."
            )

    write_atomic(dst, gunzip)


def _prepare_raw_files(root: Path) -> bool:
    """Make ``root/FashionMNIST/raw/`` hold the four files, checked; False if some are missing.

    Missing files are decompressed from Debian's when all four ``.gz`` are
    installed; so are damaged ones, with a warning. Without Debian's files a
    damaged file raises :class:`RuntimeError`, and a missing one returns False.
    """
    raw = _raw_dir(root)
    sources = {name: debian_dir() / f"{name}.gz" for name in RAW_FILES}
    debian = all(src.is_file() for src in sources.values())
    complete = True
    for name in RAW_FILES:
        path = raw / name
        problem = _idx_problem(path, name) if path.is_file() else None
        if problem and not debian:
            raise _damaged(path, problem)
        if problem:
            warnings.warn(f"{path} {problem}; making it again from {sources[name]}.", RuntimeWarning, stacklevel=3)
        if debian and (problem or not path.is_file()):
            _gunzip_checked(sources[name], path, name)
        complete = complete and path.is_file()
    return complete


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
            downloaded, or one is damaged (truncated, not Fashion-MNIST);
            the message names the file and says what to do.
    """
    root = Path(root).expanduser() if root is not None else default_root()
    key = (str(root.resolve()), bool(train))
    if key in _CACHE:
        return _CACHE[key]

    if not _prepare_raw_files(root):
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
        for name in RAW_FILES:
            problem = _idx_problem(_raw_dir(root) / name, name)
            if problem:
                raise _damaged(_raw_dir(root) / name, problem)

    dataset = torchvision.datasets.FashionMNIST(str(root), train=train, download=False)
    images = dataset.data.to(torch.uint8)
    labels = dataset.targets.to(torch.int64)
    _CACHE[key] = (images, labels)
    return images, labels
