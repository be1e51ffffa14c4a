"""The datasets of the RKD paper, for readers with a GPU (or Colab).

Park et al. (CVPR 2019) evaluate metric learning with the zero-shot
retrieval protocol: the test classes are never seen in training.

========================  ===============================  ===============================
dataset                   train split                      test split
========================  ===============================  ===============================
CUB-200-2011 (birds)      classes 1-100 (5,864 images)     classes 101-200 (5,924 images)
Cars196                   classes 1-98 (8,054 images)      classes 99-196 (8,131 images)
Stanford Online Products  Ebay_train.txt: 11,318 classes   Ebay_test.txt: 11,316 classes
                          (59,551 images)                  (60,502 images)
========================  ===============================  ===============================

Each class below reads the *official* archive's layout, unchanged, and
renumbers the labels of a split from 0 (CUB test class 101 becomes label 0).
None of them downloads anything: the archives are large and hosted on
pages that change; download them by hand and unpack them with
:func:`~rkd_tutorial.data.archives.safe_extract`. CIFAR-100, used for the
paper's classification experiments, is a thin wrapper on torchvision, which
can download it.

Images are returned as RGB PIL images, or whatever ``transform`` makes of
them; :func:`paper_transforms` gives the usual 224 x 224 ImageNet pipeline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torchvision
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from .fashion_mnist import default_root

CUB_URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
CARS_URL = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"
SOP_URL = "https://cvgl.stanford.edu/projects/lifted_struct/"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PathLike = str | os.PathLike[str]


def paper_transforms(train: bool) -> T.Compose:
    """ImageNet-style transforms: resize to 256, crop 224, normalise.

    Training: random 224 crop and random horizontal flip; test: centre crop.
    """
    crop = [T.RandomCrop(224), T.RandomHorizontalFlip()] if train else [T.CenterCrop(224)]
    return T.Compose([T.Resize(256), *crop, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")


def _require(path: Path, dataset: str, url: str, archive_hint: str) -> Path:
    """Return ``path`` if it exists, else explain where it should be."""
    if not path.exists():
        raise FileNotFoundError(
            f"{dataset}: expected {path}, which does not exist. Download {archive_hint} "
            f"from {url} and unpack it with rkd_tutorial.data.safe_extract(archive, root) "
            f"so that {path} exists (root is the folder you pass to {dataset})."
        )
    return path


class _ImageList(Dataset):
    """A list of ``(image path, label)`` pairs read as RGB PIL images."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable | None) -> None:
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.num_classes = len(set(self.targets))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def _read_columns(path: Path, skip_header: bool = False) -> list[list[str]]:
    lines = path.read_text().splitlines()[1 if skip_header else 0 :]
    return [line.split() for line in lines if line.strip()]


class CUB200(_ImageList):
    """CUB-200-2011: classes 1-100 for ``split='train'``, 101-200 for ``'test'``.

    Expects ``root/CUB_200_2011/images.txt`` (``<image id> <relative path>``),
    ``root/CUB_200_2011/image_class_labels.txt`` (``<image id> <class 1..200>``)
    and the images in ``root/CUB_200_2011/images/<class dir>/<file>.jpg``.
    Labels are ``class - 1`` (train) or ``class - 101`` (test).
    """

    def __init__(self, root: PathLike, split: str = "train", transform: Callable | None = None) -> None:
        _check_split(split)
        base = Path(root).expanduser() / "CUB_200_2011"
        hint = "CUB_200_2011.tgz"
        paths = dict(_read_columns(_require(base / "images.txt", "CUB200", CUB_URL, hint)))
        labels_file = _require(base / "image_class_labels.txt", "CUB200", CUB_URL, hint)
        first = 1 if split == "train" else 101
        samples = [
            (base / "images" / paths[image_id], int(c) - first)
            for image_id, c in _read_columns(labels_file)
            if first <= int(c) < first + 100
        ]
        if samples:
            _require(samples[0][0], "CUB200", CUB_URL, hint)
        super().__init__(samples, transform)


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        import scipy.io  # lazy: only Cars196 needs scipy
    except ImportError as err:
        raise ImportError("Cars196 reads cars_annos.mat with scipy: pip install scipy") from err
    return scipy.io.loadmat(str(path))


class Cars196(_ImageList):
    """Cars196: classes 1-98 for ``split='train'``, 99-196 for ``'test'``.

    Expects ``root/cars_annos.mat`` and ``root/car_ims/*.jpg``. The ``.mat``
    file's ``annotations`` struct array gives, per image, ``relative_im_path``
    (``car_ims/000001.jpg``) and ``class`` (1..196); its own ``test`` flag is
    ignored, since the retrieval protocol splits by class. Labels are
    ``class - 1`` (train) or ``class - 99`` (test).
    """

    def __init__(self, root: PathLike, split: str = "train", transform: Callable | None = None) -> None:
        _check_split(split)
        root = Path(root).expanduser()
        hint = "car_ims.tgz and cars_annos.mat"
        annotations = _loadmat(_require(root / "cars_annos.mat", "Cars196", CARS_URL, hint))
        records = annotations["annotations"].ravel()
        first = 1 if split == "train" else 99
        samples = []
        for record in records:
            rel_path = str(np.ravel(record["relative_im_path"])[0])
            c = int(np.ravel(record["class"])[0])
            if first <= c < first + 98:
                samples.append((root / rel_path, c - first))
        if samples:
            _require(samples[0][0], "Cars196", CARS_URL, hint)
        super().__init__(samples, transform)


class StanfordOnlineProducts(_ImageList):
    """Stanford Online Products: ``Ebay_train.txt`` / ``Ebay_test.txt``.

    Expects ``root/Stanford_Online_Products/Ebay_{split}.txt`` with the header
    ``image_id class_id super_class_id path`` and paths relative to
    ``root/Stanford_Online_Products/``. Class ids (1..11318 for train,
    11319..22634 for test) are renumbered 0..K-1 in increasing order.
    """

    def __init__(self, root: PathLike, split: str = "train", transform: Callable | None = None) -> None:
        _check_split(split)
        base = Path(root).expanduser() / "Stanford_Online_Products"
        listing = _require(
            base / f"Ebay_{split}.txt", "StanfordOnlineProducts", SOP_URL, "Stanford_Online_Products.zip"
        )
        rows = _read_columns(listing, skip_header=True)
        new_label = {c: i for i, c in enumerate(sorted({int(row[1]) for row in rows}))}
        samples = [(base / row[3], new_label[int(row[1])]) for row in rows]
        if samples:
            _require(samples[0][0], "StanfordOnlineProducts", SOP_URL, "Stanford_Online_Products.zip")
        super().__init__(samples, transform)


def cifar100(
    root: PathLike | None = None,
    train: bool = True,
    transform: Callable | None = None,
    download: bool = False,
) -> torchvision.datasets.CIFAR100:
    """CIFAR-100 through torchvision (``root`` defaults to :func:`default_root`)."""
    root = Path(root).expanduser() if root is not None else default_root()
    return torchvision.datasets.CIFAR100(str(root), train=train, transform=transform, download=download)
