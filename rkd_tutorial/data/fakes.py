"""Tiny fake datasets in the official on-disk layouts of the paper's datasets.

Each builder writes a few small JPEGs (or arrays) under ``root`` exactly where
the real archive, unpacked, puts them, so the package's readers
(:mod:`rkd_tutorial.data.paper_datasets`) and the recipes
(:mod:`rkd_tutorial.recipes`) can be tested without the real data:

* :func:`make_cub200`: ``CUB_200_2011/images.txt``, ``image_class_labels.txt``, ``images/<class>/<file>.jpg``
* :func:`make_cars196`: ``cars_annos.mat`` (the official struct fields) and ``car_ims/*.jpg``
* :func:`make_sop`: ``Stanford_Online_Products/Ebay_{train,test}.txt`` and the images they list
* :func:`make_cifar100`: ``cifar-100-python/{train,test,meta}`` (pickled dicts, as torchvision reads them)

Import with ``from rkd_tutorial.data.fakes import make_cub200``: the tests use them, and so can
the exercises of chapter 7, from an installed package as well as from a checkout.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def jpeg(path: Path, shade: int, size=(12, 10)) -> None:
    """A small RGB JPEG of one colour (``shade`` in 0..255 sets red and green)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shade = int(shade) % 256
    Image.new("RGB", size, (shade, 255 - shade, (7 * shade) % 256)).save(path, format="JPEG")


def _noisy_jpeg(path: Path, seed: int, size) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def make_cub200(root: Path, classes: Sequence[int] = (1, 2, 101, 102), per_class: int = 2, size=(40, 36)) -> Path:
    """CUB-200-2011 with ``per_class`` images of each class id in ``classes`` (1..200)."""
    base = Path(root) / "CUB_200_2011"
    lines, labels, image_id = [], [], 0
    for c in classes:
        for k in range(per_class):
            image_id += 1
            rel = f"{c:03d}.Bird_{c}/Bird_{c}_{image_id:04d}.jpg"
            _noisy_jpeg(base / "images" / rel, image_id, size)
            lines.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
    (base / "images.txt").write_text("\n".join(lines) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    return Path(root)


def make_cars196(root: Path, classes: Sequence[int] = (1, 2, 99, 100), per_class: int = 2, size=(40, 36)) -> Path:
    """Cars196: ``cars_annos.mat`` with the official fields and ``car_ims/NNNNNN.jpg``."""
    import scipy.io

    root = Path(root)
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "relative_im_path", "test"]
    n = len(classes) * per_class
    annotations = np.zeros((1, n), dtype=[(f, "O") for f in fields])
    i = 0
    for c in classes:
        for _ in range(per_class):
            rel = f"car_ims/{i + 1:06d}.jpg"
            _noisy_jpeg(root / rel, i, size)
            for f, value in zip(fields[:4], (1, 1, size[0] - 1, size[1] - 1)):
                annotations[0, i][f] = np.array([[value]], dtype=np.uint8)
            annotations[0, i]["class"] = np.array([[c]], dtype=np.uint8)
            annotations[0, i]["relative_im_path"] = np.array([rel])
            annotations[0, i]["test"] = np.array([[i % 2]], dtype=np.uint8)
            i += 1
    class_names = np.array([[f"Car {c}" for c in range(1, 197)]], dtype=object)
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return root


def make_sop(root: Path, train_classes: Sequence[int] = (1, 7), test_classes: Sequence[int] = (11319, 11320),
             per_class: int = 2, size=(40, 36)) -> Path:
    """Stanford Online Products: ``Ebay_train.txt`` / ``Ebay_test.txt`` and their images."""
    base = Path(root) / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path\n"
    image_id = 0
    for name, classes in (("Ebay_train.txt", train_classes), ("Ebay_test.txt", test_classes)):
        rows = []
        for c in classes:
            for k in range(per_class):
                image_id += 1
                rel = f"bicycle_final/{c}_{k}.JPG"
                _noisy_jpeg(base / rel, image_id, size)
                rows.append(f"{image_id} {c} 1 {rel}\n")
        (base / name).write_text(header + "".join(rows))
    return Path(root)


def make_cifar100(root: Path, train_per_class: int = 2, test_per_class: int = 1, classes: int = 3,
                  seed: int = 0) -> Path:
    """CIFAR-100's python layout: pickled dicts ``cifar-100-python/{train,test,meta}``.

    Only ``classes`` of the 100 fine labels get images. torchvision checks the
    real files' MD5 sums, so a test must disable that check
    (``monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)``).
    """
    base = Path(root) / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, per in (("train", train_per_class), ("test", test_per_class)):
        labels = [c for c in range(classes) for _ in range(per)]
        entry = {
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
            "batch_label": f"{name} batch",
            "fine_labels": labels,
            "coarse_labels": [c // 5 for c in labels],
            "data": rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8),
        }
        with open(base / name, "wb") as f:
            pickle.dump(entry, f)
    meta = {"fine_label_names": [f"class_{i}" for i in range(100)],
            "coarse_label_names": [f"super_{i}" for i in range(20)]}
    with open(base / "meta", "wb") as f:
        pickle.dump(meta, f)
    return Path(root)
