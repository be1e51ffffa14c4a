"""Tests for rkd_tutorial.data: real Fashion-MNIST, samplers, loaders, paper datasets (archives: test_archives.py)."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rkd_tutorial.data import (
    CUB200,
    FASHION_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    Cars196,
    ClassBalancedBatchSampler,
    DeviceLoader,
    StanfordOnlineProducts,
    class_disjoint_split,
    default_root,
    load_fashion_mnist,
    normalize_images,
    paper_transforms,
    random_crop_flip,
    subset_per_class,
)
from rkd_tutorial.data import fashion_mnist as fm

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --------------------------------------------------------------------------
# Fashion-MNIST, the real thing
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """Load both real splits once, into a fresh RKD_DATA root when Debian's files exist."""
    debian_files = [fm.debian_dir() / f"{name}.gz" for name in fm.RAW_FILES]
    user_root = fm.default_root()
    if all(f.is_file() for f in debian_files):
        root = tmp_path_factory.mktemp("rkd_data")
    elif all((user_root / "FashionMNIST" / "raw" / name).is_file() for name in fm.RAW_FILES):
        root = user_root
    else:
        pytest.skip(
            f"Fashion-MNIST not found: neither the Debian files in {fm.debian_dir()} "
            f"(apt-get install dataset-fashion-mnist) nor {user_root / 'FashionMNIST' / 'raw'}."
        )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RKD_DATA", str(root))
        mp.setattr(fm, "_CACHE", {})
        train = load_fashion_mnist(train=True)
        test = load_fashion_mnist(train=False)
        assert load_fashion_mnist(train=True)[0] is train[0]  # cached
    return {"root": root, "train": train, "test": test}


def test_default_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RKD_DATA", str(tmp_path))
    assert default_root() == tmp_path
    monkeypatch.delenv("RKD_DATA")
    assert default_root() == Path.home() / ".cache" / "rkd_tutorial"


@pytest.mark.parametrize("variable, function", [("RKD_DATA", default_root), ("RKD_FASHION_MNIST_DEBIAN", fm.debian_dir)])
def test_data_folders_expand_home_and_ignore_empty(monkeypatch, tmp_path, variable, function):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(variable, raising=False)
    unset = function()
    monkeypatch.setenv(variable, "~/x")
    assert function() == tmp_path / "x"
    monkeypatch.setenv(variable, "")
    assert function() == unset and str(unset) not in ("", ".")


def test_fashion_mnist_shapes_and_labels(fashion):
    (x, y), (xt, yt) = fashion["train"], fashion["test"]
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    assert torch.equal(torch.bincount(y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(yt), torch.full((10,), 1000))
    assert len(FASHION_CLASSES) == 10
    assert 0.27 < x.float().mean().item() / 255 < 0.30  # the real images, not noise


def test_fashion_mnist_raw_files_complete(fashion):
    raw = fashion["root"] / "FashionMNIST" / "raw"
    names = sorted(p.name for p in raw.iterdir())
    assert not [n for n in names if n.endswith(".tmp")]  # atomic gunzip left no temp file
    assert set(fm.RAW_FILES) <= set(names)


def test_fashion_mnist_loads_from_raw_folder_alone(fashion, monkeypatch, tmp_path):
    monkeypatch.setenv("RKD_FASHION_MNIST_DEBIAN", str(tmp_path / "no_debian"))
    monkeypatch.setattr(fm, "_CACHE", {})

    def no_download(root, train):
        raise AssertionError("must not download when the raw files exist")

    monkeypatch.setattr(fm, "_download_with_torchvision", no_download)
    xt, yt = load_fashion_mnist(fashion["root"], train=False)
    assert torch.equal(xt, fashion["test"][0]) and torch.equal(yt, fashion["test"][1])


def test_fashion_mnist_missing_everywhere_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("RKD_FASHION_MNIST_DEBIAN", str(tmp_path / "no_debian"))
    monkeypatch.setattr(fm, "_CACHE", {})

    def offline(root, train):
        raise OSError("network unreachable")

    monkeypatch.setattr(fm, "_download_with_torchvision", offline)
    with pytest.raises(RuntimeError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist(tmp_path / "empty", train=True)
    assert str(tmp_path / "empty" / "FashionMNIST" / "raw") in str(info.value)
    assert "network unreachable" in str(info.value)


# --------------------------------------------------------------------------
# Fashion-MNIST files are checked before they are used or cached
# --------------------------------------------------------------------------

SMALL_COUNTS = {"train": 12, "t10k": 5}


@pytest.fixture
def small_fashion(monkeypatch, tmp_path):
    """Expect 12 / 5 examples instead of 60,000 / 10,000 (tiny files), no Debian files, no download."""
    shrunk = {name: (magic, (SMALL_COUNTS[name.split("-")[0]],) + dims[1:]) for name, (magic, dims) in fm.IDX_FILES.items()}
    monkeypatch.setattr(fm, "IDX_FILES", shrunk)
    monkeypatch.setattr(fm, "_CACHE", {})
    monkeypatch.setenv("RKD_FASHION_MNIST_DEBIAN", str(tmp_path / "no_debian"))

    def no_download(root, train):
        raise AssertionError("must not download")

    monkeypatch.setattr(fm, "_download_with_torchvision", no_download)
    return tmp_path / "root"


def _idx(name: str) -> bytes:
    """A sound IDX file for the (shrunk) expected dimensions of ``name``."""
    magic, dims = fm.IDX_FILES[name]
    header = b"".join(x.to_bytes(4, "big") for x in (magic, *dims))
    values = 10 if len(dims) == 1 else 256
    return header + bytes((7 * i) % values for i in range(math.prod(dims)))


def _write_raw(root: Path, override: dict[str, bytes] | None = None) -> Path:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in fm.RAW_FILES:
        (raw / name).write_bytes((override or {}).get(name, _idx(name)))
    return raw


def _write_debian(folder: Path, override: dict[str, bytes] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in fm.RAW_FILES:
        (folder / f"{name}.gz").write_bytes((override or {}).get(name) or gzip.compress(_idx(name)))
    return folder


# case -> (file, how to damage its bytes, words the error must hold)
DAMAGED = {
    "truncated": ("train-images-idx3-ubyte", lambda b: b[: len(b) // 2], "bytes, expected"),
    "too_long": ("t10k-images-idx3-ubyte", lambda b: b + b"\0", "bytes, expected"),
    "html": ("train-labels-idx1-ubyte", lambda b: b"<html>404 Not Found</html>", "magic number of IDX labels"),
    "labels_as_images": ("t10k-images-idx3-ubyte", lambda b: _idx("t10k-labels-idx1-ubyte"), "magic number of IDX images"),
    "dimensions": ("train-images-idx3-ubyte", lambda b: b[:8] + (32).to_bytes(4, "big") + b[12:], "dimensions"),
    "label_10": ("t10k-labels-idx1-ubyte", lambda b: b[:-1] + b"\x0a", "labels outside 0..9"),
    "empty": ("train-labels-idx1-ubyte", lambda b: b"", "magic number"),
}


def test_small_fashion_files_load(small_fashion):
    _write_raw(small_fashion)
    x, y = load_fashion_mnist(small_fashion, train=False)
    assert x.shape == (5, 28, 28) and y.tolist() == [0, 7, 4, 1, 8]


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_raw_file_is_named_with_what_to_do(small_fashion, case):
    name, damage, words = DAMAGED[case]
    raw = _write_raw(small_fashion, {name: damage(_idx(name))})
    for train in (True, False):  # each split checks all four files
        with pytest.raises(RuntimeError, match=f"{raw / name} is damaged: it .*{words}") as info:
            load_fashion_mnist(small_fashion, train=train)
        assert "Delete it" in str(info.value) and "RKD_DATA" in str(info.value)
    assert (raw / name).read_bytes() == damage(_idx(name))  # reported, not silently deleted


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_raw_file_is_made_again_from_good_debian_files(small_fashion, monkeypatch, tmp_path, case):
    name, damage, _ = DAMAGED[case]
    raw = _write_raw(small_fashion, {name: damage(_idx(name))})
    monkeypatch.setenv("RKD_FASHION_MNIST_DEBIAN", str(_write_debian(tmp_path / "debian")))
    with pytest.warns(RuntimeWarning, match=f"{raw / name} .*making it again from"):
        x, y = load_fashion_mnist(small_fashion, train=name.startswith("train"))
    assert (raw / name).read_bytes() == _idx(name)
    assert len(x) == len(y) == SMALL_COUNTS[name.split("-")[0]]


@pytest.mark.parametrize("gz, words", [
    (gzip.compress(b"<html>garbage, but a valid gzip</html>"), "decompressed, it does not start with"),
    (gzip.compress(_idx("t10k-labels-idx1-ubyte"))[:-30], "it cannot be decompressed"),
    (b"not a gzip file at all", "it cannot be decompressed"),
], ids=["garbage_gzip", "truncated_gzip", "not_gzip"])
def test_damaged_debian_file_is_never_cached(small_fashion, monkeypatch, tmp_path, gz, words):
    name = "t10k-labels-idx1-ubyte"
    debian = _write_debian(tmp_path / "debian", {name: gz})
    monkeypatch.setenv("RKD_FASHION_MNIST_DEBIAN", str(debian))
    with pytest.raises(RuntimeError, match=f"{debian / name}.gz is damaged: {words}.*--reinstall dataset-fashion-mnist"):
        load_fashion_mnist(small_fashion, train=False)
    raw = small_fashion / "FashionMNIST" / "raw"
    assert name not in {p.name for p in raw.iterdir()}
    assert not [p for p in raw.iterdir() if p.name.endswith(".tmp")]
    # Once the Debian file is sound again, the next run succeeds.
    _write_debian(debian)
    x, _ = load_fashion_mnist(small_fashion, train=False)
    assert x.shape == (5, 28, 28)


def test_damaged_download_is_named(small_fashion, monkeypatch):
    name = "train-images-idx3-ubyte"

    def truncated_download(root, train):
        _write_raw(Path(root), {name: _idx(name)[:100]})

    monkeypatch.setattr(fm, "_download_with_torchvision", truncated_download)
    with pytest.raises(RuntimeError, match=f"{name} is damaged: it has 100 bytes"):
        load_fashion_mnist(small_fashion, train=True)


def test_class_disjoint_split_real(fashion):
    (x_tr, y_tr), (x_te, y_te) = class_disjoint_split(*fashion["train"])
    assert set(y_tr.unique().tolist()) == {0, 1, 2, 3, 4}
    assert set(y_te.unique().tolist()) == {5, 6, 7, 8, 9}
    assert len(x_tr) == len(y_tr) == 30000 and len(x_te) == len(y_te) == 30000
    assert x_tr.shape[1:] == (28, 28)


def test_class_disjoint_split_errors():
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"\[7\]"):
        class_disjoint_split(torch.zeros(4, 2), labels, train_classes=[0, 7])
    with pytest.raises(ValueError, match="test split would be empty"):
        class_disjoint_split(torch.zeros(4, 2), labels, train_classes=[0, 1])


def test_subset_per_class_is_balanced_and_deterministic():
    labels = torch.arange(300) % 3
    images = torch.arange(300)
    x1, y1 = subset_per_class(images, labels, 10, seed=1)
    x2, y2 = subset_per_class(images, labels, 10, seed=1)
    x3, _ = subset_per_class(images, labels, 10, seed=2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert torch.equal(torch.bincount(y1), torch.tensor([10, 10, 10]))
    assert torch.equal(labels[x1], y1)  # images and labels stay paired
    with pytest.raises(ValueError, match="only 100 examples"):
        subset_per_class(images, labels, 101, seed=0)


# --------------------------------------------------------------------------
# ClassBalancedBatchSampler
# --------------------------------------------------------------------------


def _check_batches(batches: torch.Tensor, labels: torch.Tensor, m: int) -> None:
    for batch in batches:
        assert len(set(batch.tolist())) == len(batch)  # no example twice in a batch
        classes, counts = labels[batch].unique(return_counts=True)
        assert len(classes) == len(batch) // m
        assert (counts == m).all()


def test_sampler_batches_have_m_per_class():
    labels = torch.arange(200) % 10
    sampler = ClassBalancedBatchSampler(labels, m_per_class=4, batch_size=16, seed=0)
    batches = sampler.epoch_indices()
    assert batches.shape == (len(sampler), 16) == (12, 16)
    _check_batches(batches, labels, 4)
    assert [list(b) for b in batches.tolist()] == list(sampler)


def test_sampler_is_deterministic_and_epochs_differ():
    labels = torch.arange(500) % 10
    a = ClassBalancedBatchSampler(labels, 5, 20, seed=3)
    b = ClassBalancedBatchSampler(labels, 5, 20, seed=3)
    assert torch.equal(a.epoch_indices(), b.epoch_indices())
    first = a.epoch_indices()
    a.set_epoch(1)
    assert not torch.equal(first, a.epoch_indices())
    assert torch.equal(a.epoch_indices(1), b.epoch_indices(1))
    assert not torch.equal(first, ClassBalancedBatchSampler(labels, 5, 20, seed=4).epoch_indices())


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=2, max_size=12),
    m=st.integers(1, 4),
    classes_per_batch=st.integers(1, 3),
    seed=st.integers(0, 2**31),
)
def test_sampler_property(counts, m, classes_per_batch, seed):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    usable = [c for c, n in enumerate(counts) if n >= m]
    if len(usable) < classes_per_batch:
        with pytest.raises(ValueError, match="classes with at least"):
            ClassBalancedBatchSampler(labels, m, m * classes_per_batch, seed=seed)
        return
    sampler = ClassBalancedBatchSampler(labels, m, m * classes_per_batch, seed=seed, num_batches=7)
    batches = sampler.epoch_indices()
    assert batches.shape == (7, m * classes_per_batch)
    _check_batches(batches, labels, m)
    assert set(labels[batches].unique().tolist()) <= set(usable)
    assert sampler.skipped_classes == [c for c, n in enumerate(counts) if n < m]


def test_sampler_errors():
    labels = torch.arange(40) % 4
    with pytest.raises(ValueError, match="not a positive multiple of m_per_class=4"):
        ClassBalancedBatchSampler(labels, m_per_class=4, batch_size=18)
    with pytest.raises(ValueError, match="needs 5 classes"):
        ClassBalancedBatchSampler(labels, m_per_class=2, batch_size=10)


def test_sampler_in_torch_dataloader():
    labels = torch.arange(120) % 6
    dataset = torch.utils.data.TensorDataset(torch.arange(120), labels)
    sampler = ClassBalancedBatchSampler(labels, m_per_class=2, batch_size=8, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    batches = [idx for idx, _ in loader]
    assert len(batches) == len(sampler) == 15
    assert torch.equal(torch.stack(batches), sampler.epoch_indices())


# --------------------------------------------------------------------------
# DeviceLoader and random_crop_flip
# --------------------------------------------------------------------------


def _tiny_images(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.mark.parametrize("device", DEVICES)
def test_device_loader_visits_every_index_once(device):
    n = 103
    loader = DeviceLoader(_tiny_images(n), torch.arange(n), 10, shuffle=True, drop_last=False, device=device)
    assert len(loader) == 11
    seen = torch.cat([y for _, y in loader])
    assert seen.device.type == device
    assert sorted(seen.tolist()) == list(range(n))
    assert seen.tolist() != list(range(n))  # shuffled

    dropping = DeviceLoader(_tiny_images(n), torch.arange(n), 10, device=device)
    sizes = [len(y) for _, y in dropping]
    assert len(dropping) == 10 and sizes == [10] * 10


@pytest.mark.parametrize("device", DEVICES)
def test_device_loader_reproducible_and_epochs_differ(device):
    def order(seed: int, epoch: int) -> list[int]:
        loader = DeviceLoader(_tiny_images(64), torch.arange(64), 8, seed=seed, device=device)
        loader.set_epoch(epoch)
        return torch.cat([y for _, y in loader]).tolist()

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 1) == order(0, 1)
    assert order(0, 0) != order(1, 0)


@pytest.mark.parametrize("device", DEVICES)
def test_device_loader_images_and_labels_stay_paired(device):
    images = _tiny_images(50)
    loader = DeviceLoader(images, torch.arange(50), 7, device=device)
    x, y = next(iter(loader))
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32
    expected = (images[y.cpu()].float() / 255 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    torch.testing.assert_close(x.cpu(), expected.unsqueeze(1))


def test_normalize_images_rules():
    pixels = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    out = normalize_images(pixels)
    assert out.shape == (2, 1, 28, 28)
    torch.testing.assert_close(out, torch.full_like(out, (1 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD))
    rgb = torch.rand(3, 3, 8, 8)
    assert torch.equal(normalize_images(rgb), rgb)  # float images are used as they are
    custom = normalize_images(rgb, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    torch.testing.assert_close(custom, rgb * 2 - 1)
    with pytest.raises(ValueError, match="uint8 pixels or float"):
        normalize_images(torch.zeros(2, 28, 28, dtype=torch.int64))


@pytest.mark.parametrize("device", DEVICES)
def test_device_loader_with_class_balanced_sampler(device):
    labels = torch.arange(90) % 9
    sampler = ClassBalancedBatchSampler(labels, m_per_class=3, batch_size=9, seed=5)
    loader = DeviceLoader(_tiny_images(90), labels, 9, sampler=sampler, device=device)
    loader.set_epoch(2)
    ys = torch.stack([y for _, y in loader]).cpu()
    assert len(loader) == len(sampler) == 10
    assert torch.equal(ys, labels[sampler.epoch_indices(2)])
    with pytest.raises(ValueError, match="batch_size=12"):
        DeviceLoader(_tiny_images(90), labels, 12, sampler=sampler, device=device)


def test_device_loader_errors():
    with pytest.raises(ValueError, match="no batch would be produced"):
        DeviceLoader(_tiny_images(5), torch.arange(5), 8, device="cpu")
    with pytest.raises(ValueError, match="labels has 4"):
        DeviceLoader(_tiny_images(5), torch.arange(4), 2, device="cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_random_crop_flip_is_a_shift_and_flip(device):
    x = torch.rand(16, 2, 9, 11, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    out = random_crop_flip(x, padding=2, generator=g, fill=0.0)
    assert out.shape == x.shape and out.device == x.device
    again = random_crop_flip(x, padding=2, generator=torch.Generator(device=device).manual_seed(0), fill=0.0)
    assert torch.equal(out, again)

    # Brute force: each output must be one of the 5 x 5 shifts, flipped or not.
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=0.0)
    flips = 0
    for i in range(len(x)):
        candidates = [
            (flip, padded[i, :, dy : dy + 9, dx : dx + 11])
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
        ]
        matches = [flip for flip, c in candidates if torch.equal(out[i], c.flip(-1) if flip else c)]
        assert matches, f"image {i} is not a shifted/flipped copy"
        flips += all(matches)
    assert 0 < flips < len(x)


def test_random_crop_flip_default_fill_is_each_images_black():
    x = torch.rand(8, 3, 6, 6) * 4 - 3  # like normalised images: black is negative
    out = random_crop_flip(x, padding=3, generator=torch.Generator().manual_seed(0))
    black = x.amin(dim=(2, 3), keepdim=True)
    for i in range(len(x)):
        for ch in range(3):
            assert torch.isin(out[i, ch], x[i, ch]).all()  # the border is not 0.0 but a value of the image
    # With a shift of up to 3 pixels most images show a border: more "black" pixels than the original.
    assert ((out == black).sum(dim=(2, 3)) > (x == black).sum(dim=(2, 3))).any()


def test_random_crop_flip_padding_zero_only_flips():
    x = torch.rand(32, 1, 5, 5)
    out = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(1))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()


def test_random_crop_flip_errors():
    with pytest.raises(ValueError, match="B x C x H x W"):
        random_crop_flip(torch.rand(3, 5, 5))
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(torch.rand(1, 1, 5, 5), padding=-1)


def test_device_loader_augment_is_applied():
    loader = DeviceLoader(
        _tiny_images(20), torch.arange(20), 4, device="cpu", shuffle=False,
        augment=lambda x: random_crop_flip(x, generator=torch.Generator().manual_seed(0)),
    )
    plain = DeviceLoader(_tiny_images(20), torch.arange(20), 4, device="cpu", shuffle=False)
    (xa, ya), (xp, yp) = next(iter(loader)), next(iter(plain))
    assert xa.shape == xp.shape and torch.equal(ya, yp) and not torch.equal(xa, xp)


# --------------------------------------------------------------------------
# The paper's datasets, as tiny fakes in the official on-disk layouts
# --------------------------------------------------------------------------


def _jpeg(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (shade, 255 - shade, 0)).save(path, format="JPEG")


def test_cub200_fake(tmp_path):
    base = tmp_path / "CUB_200_2011"
    classes = [1, 2, 100, 101, 150, 200]
    lines, labels = [], []
    for image_id, c in enumerate(classes, start=1):
        rel = f"{c:03d}.Bird_{c}/Bird_{c}_{image_id:04d}.jpg"
        _jpeg(base / "images" / rel, c)
        lines.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {c}")
    (base / "images.txt").write_text("\n".join(lines) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")

    train, test = CUB200(tmp_path, "train"), CUB200(tmp_path, "test")
    assert train.targets == [0, 1, 99] and test.targets == [0, 49, 99]
    image, label = train[2]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 99
    x, _ = CUB200(tmp_path, "test", transform=paper_transforms(train=False))[0]
    assert x.shape == (3, 224, 224)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        CUB200(tmp_path, "val")


def test_cub200_missing_files_explain(tmp_path):
    with pytest.raises(FileNotFoundError, match="images.txt") as info:
        CUB200(tmp_path, "train")
    assert "vision.caltech.edu" in str(info.value)


def test_cars196_fake(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    classes = [1, 5, 98, 99, 120, 196]
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "relative_im_path", "test"]
    annotations = np.zeros((1, len(classes)), dtype=[(f, "O") for f in fields])
    for i, c in enumerate(classes):
        rel = f"car_ims/{i + 1:06d}.jpg"
        _jpeg(tmp_path / rel, c)
        for f, value in zip(fields[:4], (1, 1, 11, 9)):
            annotations[0, i][f] = np.array([[value]], dtype=np.uint8)
        annotations[0, i]["class"] = np.array([[c]], dtype=np.uint8)
        annotations[0, i]["relative_im_path"] = np.array([rel])
        annotations[0, i]["test"] = np.array([[i % 2]], dtype=np.uint8)
    class_names = np.array([[f"Car {c}" for c in range(1, 197)]], dtype=object)
    scipy_io.savemat(tmp_path / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})

    train, test = Cars196(tmp_path, "train"), Cars196(tmp_path, "test")
    assert train.targets == [0, 4, 97] and test.targets == [0, 21, 97]
    image, label = test[1]
    assert image.size == (12, 10) and label == 21
    assert train.samples[0][0] == tmp_path / "car_ims" / "000001.jpg"


def test_cars196_missing_files_explain(tmp_path):
    with pytest.raises(FileNotFoundError, match="cars_annos.mat") as info:
        Cars196(tmp_path, "test")
    assert "ai.stanford.edu" in str(info.value)


def test_stanford_online_products_fake(tmp_path):
    base = tmp_path / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path\n"
    train_rows = [(1, 1, 1, "bicycle_final/111_0.JPG"), (2, 1, 1, "bicycle_final/111_1.JPG"),
                  (3, 7, 2, "cabinet_final/222_0.JPG"), (4, 11318, 12, "toaster_final/333_0.JPG")]
    test_rows = [(5, 11319, 1, "bicycle_final/444_0.JPG"), (6, 22634, 12, "toaster_final/555_0.JPG")]
    for name, rows in (("Ebay_train.txt", train_rows), ("Ebay_test.txt", test_rows)):
        for image_id, _, _, rel in rows:
            _jpeg(base / rel, image_id * 20)
        (base / name).write_text(header + "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in rows))

    train, test = StanfordOnlineProducts(tmp_path, "train"), StanfordOnlineProducts(tmp_path, "test")
    assert train.targets == [0, 0, 1, 2] and test.targets == [0, 1]
    assert train.samples[2][0] == base / "cabinet_final" / "222_0.JPG"
    x, y = train[3]
    assert x.size == (12, 10) and y == 2
    x, _ = StanfordOnlineProducts(tmp_path, "train", transform=paper_transforms(train=True))[0]
    assert x.shape == (3, 224, 224)


def test_stanford_online_products_missing_files_explain(tmp_path):
    with pytest.raises(FileNotFoundError, match="Ebay_test.txt") as info:
        StanfordOnlineProducts(tmp_path, "test")
    assert "cvgl.stanford.edu" in str(info.value)
