"""The training loop: checkpoints, resuming, and a quick run that learns."""

import dataclasses

import pytest
import torch

from rkd_tutorial import experiments as ex
from rkd_tutorial.data import DeviceLoader
from rkd_tutorial.models import Classifier, EmbeddingNet, SmallCNN
from rkd_tutorial.train import TrainConfig, ce, fit, hkd, rkd, save_atomic, triplet


def toy_loader(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(4).repeat(n // 4)
    x = torch.randn(n, 1, 28, 28, generator=g) * 0.3 + y[:, None, None, None].float()
    return DeviceLoader(x, y, batch_size=32, device="cpu", seed=seed)


def test_checkpoint_round_trip_and_resume_matches_uninterrupted(tmp_path):
    cfg = TrainConfig(epochs=4, lr=1e-2, seed=3)
    torch.manual_seed(0)
    full = Classifier(SmallCNN((4, 8, 8)), 4)
    start = {k: v.clone() for k, v in full.state_dict().items()}
    h_full = fit(full, toy_loader(), [ce()], cfg, progress=False)

    # the same run, stopped after two epochs and resumed from its checkpoint by a fresh process-like setup
    ckpt = tmp_path / "run.pt"
    part = Classifier(SmallCNN((4, 8, 8)), 4)
    part.load_state_dict(start)
    fit(part, toy_loader(), [ce()], dataclasses.replace(cfg, epochs=2), checkpoint=ckpt, progress=False)
    assert ckpt.exists() and not list(tmp_path.glob("*.tmp"))
    resumed = Classifier(SmallCNN((4, 8, 8)), 4)
    torch.manual_seed(123)  # a different global RNG state: the checkpoint must restore it
    h_resumed = fit(resumed, toy_loader(), [ce()], cfg, checkpoint=ckpt, progress=False)
    assert [r["epoch"] for r in h_resumed.records] == [1, 2, 3, 4]
    assert h_resumed.series("loss") == pytest.approx(h_full.series("loss"), rel=1e-5)
    for k, v in full.state_dict().items():
        assert torch.allclose(v.float(), resumed.state_dict()[k].float(), atol=1e-5), k
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 4


def test_save_atomic_leaves_nothing_half_written(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(Exception):
        save_atomic({"x": Unpicklable()}, tmp_path / "a.pt")
    assert list(tmp_path.iterdir()) == []


def test_fit_rejects_bad_terms():
    model = Classifier(SmallCNN((4, 8, 8)), 4)
    with pytest.raises(ValueError, match="at least one"):
        fit(model, toy_loader(), [], TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="teacher"):
        fit(model, toy_loader(), [ce(), hkd()], TrainConfig(epochs=1), progress=False)


def test_distillation_terms_run_and_history_records_each_term():
    teacher = Classifier(SmallCNN((8, 8, 8)), 4)
    student = Classifier(SmallCNN((4, 4, 4)), 4)
    h = fit(student, toy_loader(), [ce(), hkd(1, 4), rkd(25, 50)], TrainConfig(epochs=1), teacher=teacher,
            progress=False, evaluate=lambda m: {"acc": 0.5})
    assert set(h.records[0]) == {"epoch", "loss", "ce", "hkd", "rkd-da", "acc"}


def test_quick_metric_training_learns():
    """A small real run on Fashion-MNIST: the loss falls and Recall@1 beats chance (0.2 for 5 classes)."""
    p = dataclasses.replace(ex.METRIC_PROFILES["quick"], train_per_class=200, test_per_class=100, teacher_epochs=3)
    train, test = ex.metric_data(p, "cpu")
    before = ex.recall_metrics(EmbeddingNet(SmallCNN((8, 16, 32)), 16), test)["recall@1"]
    model = EmbeddingNet(SmallCNN((8, 16, 32)), 16)
    h = fit(model, train, [triplet()], TrainConfig(epochs=3, lr=3e-3), progress=False,
            evaluate=lambda m: ex.recall_metrics(m, test))
    losses = h.series("loss")
    assert losses[-1] < losses[0]
    assert h.series("recall@1")[-1] > 0.4 > 0.2
    print("recall@1 before/after:", before, h.series("recall@1")[-1])


def test_fit_stops_with_a_clear_error_when_the_loss_is_not_finite(tmp_path):
    # On a GPU the losses do not check their inputs' values (a host synchronisation per
    # call); a NaN then shows in the epoch's mean loss, where fit stops before checkpointing.
    from rkd_tutorial.train import Term

    nan_term = Term("broken", 1.0, lambda s, t, y: s.logits.sum() * float("nan"), needs_teacher=False)
    model = Classifier(SmallCNN((4, 8, 8)), 4)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(FloatingPointError, match=r"NaN or inf in epoch 1 \(loss, .*broken\)"):
        fit(model, toy_loader(), [ce(), nan_term], TrainConfig(epochs=2), checkpoint=ckpt, progress=False)
    assert list(tmp_path.iterdir()) == []
