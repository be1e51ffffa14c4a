"""Tests for rkd_tutorial.recipes: each paper recipe takes one optimisation step on a tiny fake dataset.

The fakes (tests/fakes.py) use the official on-disk layouts; images are tiny
and cropped to 32 x 32 (``image_size=32``), batches are 2 classes x 2 images,
and ``pretrained=False`` keeps everything offline.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torchvision
from torch.utils.data import DataLoader

from rkd_tutorial.data.fakes import make_cars196, make_cifar100, make_cub200, make_sop
from rkd_tutorial import recipes
from rkd_tutorial.experiments import PAPER
from rkd_tutorial.recipes import paper_setup, run_paper
from rkd_tutorial.train import fit

TINY = dict(image_size=32, m_per_class=2, batch_size=4, num_batches=1, num_workers=0, device="cpu", pretrained=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is as fast, and far faster on a busy machine (no oversubscription)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def fake_root(tmp_path, monkeypatch, request):
    """A tmp folder holding the fake dataset named by the test's parameter."""
    dataset = request.param
    if dataset == "cub200":
        make_cub200(tmp_path)
    elif dataset == "cars196":
        pytest.importorskip("scipy.io")
        make_cars196(tmp_path)
    elif dataset == "sop":
        make_sop(tmp_path)
    else:
        make_cifar100(tmp_path)
        # The fake cannot match the real files' MD5 sums.
        monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    return dataset, tmp_path


def _one_step(setup) -> float:
    """One optimisation step exactly as rkd_tutorial.train.fit takes it; returns the loss."""
    model, teacher, optimizer = setup["model"], setup["teacher"], setup["optimizer"]
    model.train()
    x, y = next(iter(setup["loader"]))
    t_out = None
    if teacher is not None:
        with torch.no_grad():
            t_out = teacher(x)
    s_out = model(x)
    loss = sum(t.weight * t.fn(s_out, t_out, y) for t in setup["terms"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    setup["scheduler"].step()
    return loss.item()


def _changed(model, before) -> bool:
    return any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("fake_root", recipes.DATASETS, indirect=True)
def test_one_step_teacher_then_student(fake_root):
    dataset, root = fake_root
    kwargs = dict(TINY)
    if dataset == "cifar100":  # plain shuffled batches; no m per class, no crop size
        kwargs = dict(batch_size=4, num_workers=0, device="cpu", pretrained=False)

    teacher = paper_setup(dataset, root, role="teacher", **kwargs)
    assert isinstance(teacher["loader"], DataLoader)
    assert teacher["teacher"] is None
    before = {n: p.detach().clone() for n, p in teacher["model"].named_parameters()}
    loss = _one_step(teacher)
    assert math.isfinite(loss)
    assert _changed(teacher["model"], before)

    student = paper_setup(dataset, root, role="student", teacher=teacher["model"], **kwargs)
    assert student["teacher"] is teacher["model"] and not student["teacher"].training
    before = {n: p.detach().clone() for n, p in student["model"].named_parameters()}
    t_before = {n: p.detach().clone() for n, p in teacher["model"].named_parameters()}
    loss = _one_step(student)
    assert math.isfinite(loss) and loss > 0
    assert _changed(student["model"], before)
    assert not _changed(teacher["model"], t_before)  # the teacher stays frozen

    # The official hyperparameters (experiments.PAPER) are what the setups carry.
    t_cfg, s_cfg = teacher["config"], student["config"]
    if dataset == "cifar100":
        p = PAPER["cifar100"]
        assert (t_cfg.optimizer, t_cfg.lr, t_cfg.momentum, t_cfg.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
        assert tuple(s_cfg.milestones) == p["milestones"] == (60, 120, 160) and s_cfg.gamma == 0.2
        assert student["epochs"] == 200 and [t.name for t in student["terms"]] == ["ce", "rkd-da"]
        assert student["model"].normalize_features and teacher["model"].fc.out_features == 100
        x, _ = next(iter(student["loader"]))
        assert x.shape[1:] == (3, 32, 32)
    else:
        assert (t_cfg.optimizer, t_cfg.lr, teacher["epochs"], tuple(t_cfg.milestones), t_cfg.gamma) == \
            ("adam", 1e-5, 40, (25, 30, 35), 0.5)
        assert (s_cfg.lr, student["epochs"], tuple(s_cfg.milestones), s_cfg.gamma) == (1e-4, 80, (40, 60), 0.1)
        assert [t.name for t in teacher["terms"]] == ["triplet"]
        assert [t.name for t in student["terms"]] == ["rkd-da"]
        assert teacher["model"].embedding_dim == 512 and teacher["model"].normalize
        assert student["model"].embedding_dim == (64 if dataset == "sop" else 128)
        assert not student["model"].normalize
        x, y = next(iter(student["loader"]))
        assert x.shape == (4, 3, 32, 32) and len(set(y.tolist())) == 2


def test_official_batch_is_whole_classes_of_five(tmp_path):
    make_cub200(tmp_path, classes=list(range(1, 27)) + [101, 102], per_class=5, size=(8, 8))
    s = paper_setup("cub200", tmp_path, "teacher", device="cpu", pretrained=False, image_size=32, num_workers=0)
    sampler = s["loader"].batches
    assert (sampler.batch_size, sampler.m_per_class, len(sampler)) == (125, 5, 100)
    assert s["settings"]["batch_size"] == 125 and s["settings"]["weight_decay"] == 1e-5


def test_run_paper_writes_results_with_provenance(tmp_path):
    root = make_cub200(tmp_path / "data", classes=(1, 2, 101, 102), per_class=3)
    out = tmp_path / "results"
    logs = []
    results = run_paper("cub200", root, out, device="cpu", pretrained=False, epochs=1, progress=False,
                        log=logs.append, image_size=32, m_per_class=2, batch_size=4, num_batches=1, num_workers=0)
    saved = json.loads((out / "paper-cub200.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert [r["method"] for r in saved["rows"]] == ["teacher", "rkd-da"]
    assert [r["embedding_dim"] for r in saved["rows"]] == [512, 128]
    prov = saved["provenance"]
    assert prov["profile"] == "paper" and prov["dataset"] == "cub200" and prov["seeds"] == [0]
    assert prov["student_settings"]["loss"].startswith("1 RKD-D + 2 RKD-A")
    for row in saved["rows"]:
        assert 0.0 <= row["recall@1"] <= row["recall@2"] <= 1.0 and math.isfinite(row["final_loss"])
    assert (out / "paper-cub200.md").exists()


def test_errors_are_explained(tmp_path):
    with pytest.raises(ValueError, match="cub200"):
        paper_setup("imagenet", tmp_path)
    with pytest.raises(ValueError, match="'teacher' or 'student'"):
        paper_setup("cub200", tmp_path, role="assistant")
    with pytest.raises(FileNotFoundError, match="images.txt"):
        paper_setup("cub200", tmp_path, pretrained=False, device="cpu")


def test_resume_with_workers_is_exact_and_the_worker_count_changes_nothing(tmp_path):
    """Issue "Exact where it was not": the recipes' loaders draw every random crop and flip from
    (seed, epoch, image), so a run resumed with fresh workers is the uninterrupted run (persistent
    workers would otherwise have carried their random streams on), and 0 or 2 workers give the same run."""
    root = make_cub200(tmp_path / "data", classes=(1, 2, 3, 101, 102), per_class=4, size=(40, 36))
    tiny = dict(image_size=32, m_per_class=2, batch_size=4, num_batches=2, device="cpu", pretrained=False)

    def train(workers, epochs, checkpoint=None):
        s = paper_setup("cub200", root, "teacher", num_workers=workers, **tiny)  # the triplet teacher: it samples too
        h = fit(s["model"], s["loader"], s["terms"], dataclasses.replace(s["config"], epochs=epochs),
                checkpoint=checkpoint, progress=False)
        return s["model"], h

    model, full = train(2, 3)
    assert full.settings["workers"] == 2 and full.settings["resume"] == "exact"
    ckpt = tmp_path / "teacher.pt"
    train(2, 1, ckpt)                          # stopped after one epoch ...
    resumed_model, resumed = train(2, 3, ckpt)  # ... and resumed by new workers
    assert resumed.series("loss") == full.series("loss")
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    _, no_workers = train(0, 3)
    assert no_workers.series("loss") == full.series("loss")


def test_epoch_seeded_images_depend_on_seed_epoch_and_index_only(tmp_path):
    make_cub200(tmp_path, classes=(1, 2, 101, 102), per_class=2)
    s = paper_setup("cub200", tmp_path, "teacher", **TINY)
    data = s["loader"].dataset
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = data[(0, 1)][0]
    assert torch.equal(torch.get_rng_state(), state)   # the caller's generator is left alone
    assert torch.equal(a, data[(0, 1)][0]) and not torch.equal(a, data[(1, 1)][0])
    batches = recipes.ShuffledBatches(10, 3, seed=0)
    first = list(batches)
    assert len(first) == len(batches) == 3 and len({i for b in first for i in b}) == 9
    batches.set_epoch(1)
    assert list(batches) != first
