"""The training loop: checkpoints, resuming, a quick run that learns, and each switch of the fast path.

Every speed measure of ``fit`` (fused optimiser, ``channels_last``, the
teacher prepared for inference, its cached outputs, ``torch.compile``,
autocast, device-resident data) is run on the CPU with the measure on and off;
the losses and the weights must agree within the tolerance stated in
:data:`TOLERANCE` (rounding for the float32 measures, the half-precision
formats' resolution for autocast).
"""

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rkd_tutorial import experiments as ex
from rkd_tutorial import train
from rkd_tutorial.data import DeviceLoader
from rkd_tutorial.models import Classifier, EmbeddingNet, SmallCNN
from rkd_tutorial.train import (TrainConfig, attention, autocast_dtype, ce, fit, hkd, prepare_teacher, rkd,
                                save_atomic, triplet)


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


# ----------------------------------------------------------------------------- the fast path, measure by measure

#: Every measure off: the plain loop (what the CPU runs by default, except "auto" autocast = float32 there).
PLAIN = TrainConfig(epochs=2, lr=1e-2, autocast=None, fused=False, channels_last=False, prepare_teacher=False)

#: (largest relative difference of the epochs' losses, largest absolute difference of a weight) allowed
#: after 2 epochs (6 Adam steps at lr 1e-2), measure on vs off. float32 measures: rounding (Adam turns
#: gradients near 0 into steps of about lr, so a rounding difference there moves a weight by up to ~1e-3);
#: bfloat16: its 8-bit mantissa; float16 (classification only, see the GradScaler test below): 10 bits.
TOLERANCE = {
    "fused optimiser": (1e-5, 1e-5),
    "channels_last": (1e-3, 5e-3),
    "teacher prepared for inference": (1e-4, 1e-4),
    "compile": (1e-6, 1e-6),
    "bfloat16 autocast": (0.1, 0.2),
}
MEASURES = {
    "fused optimiser": dict(fused=True),
    "channels_last": dict(channels_last=True),
    "teacher prepared for inference": dict(prepare_teacher=True),
    "compile": dict(compile="default"),
    "bfloat16 autocast": dict(autocast=torch.bfloat16),
}


def frozen_teacher():
    """A small classifier teacher whose batch norms are not the identity (so that folding them shows)."""
    torch.manual_seed(1)
    teacher = Classifier(SmallCNN((8, 8, 8)), 4)
    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return teacher.eval()


def distil(config, stages=True, teacher_cache=True, loader=None):
    """CE + HKD + RKD-DA (+ attention transfer, which reads the teacher's feature maps at every step)."""
    teacher = frozen_teacher()
    torch.manual_seed(0)
    student = Classifier(SmallCNN((4, 8, 8)), 4)
    terms = [ce(), hkd(1, 4), rkd(25, 50)] + ([attention(10.0)] if stages else [])
    history = fit(student, loader or toy_loader(), terms, config, teacher=teacher, progress=False,
                  teacher_cache=teacher_cache)
    return history, student


def differences(a, b):
    (ha, sa), (hb, sb) = a, b
    losses = max(abs(x - y) / abs(y) for x, y in zip(ha.series("loss"), hb.series("loss")))
    weights = max(float((p - q).abs().max()) for p, q in zip(sa.state_dict().values(), sb.state_dict().values())
                  if p.is_floating_point())
    return losses, weights


@pytest.fixture(scope="module")
def plain_runs():
    return {stages: distil(PLAIN, stages) for stages in (True, False)}


@pytest.mark.parametrize("measure", list(MEASURES))
@pytest.mark.parametrize("stages", [True, False], ids=["teacher-every-step", "teacher-cached"])
def test_each_speed_measure_keeps_the_losses_and_weights(measure, stages, plain_runs, monkeypatch):
    if measure == "compile":  # Inductor's C++ compilation takes a minute on a CPU: the wiring is what is tested
        compiled = []
        real = torch.compile
        monkeypatch.setattr(torch, "compile", lambda net, mode=None: compiled.append(mode) or real(net, backend="aot_eager"))
    on = distil(dataclasses.replace(PLAIN, **MEASURES[measure]), stages)
    loss_tol, weight_tol = TOLERANCE[measure]
    losses, weights = differences(on, plain_runs[stages])
    assert losses <= loss_tol and weights <= weight_tol, (losses, weights)
    if measure == "compile":
        assert compiled == ["default"] * (2 if stages else 1)  # the student, and the teacher when it runs per step


def test_teacher_cache_and_device_resident_data_change_nothing(plain_runs):
    """The cached teacher outputs, and the same batches from a per-sample torch DataLoader, give the same run."""
    assert differences(distil(PLAIN, stages=False, teacher_cache=False), plain_runs[False]) == (0.0, 0.0)
    device_loader = toy_loader()
    dataset = torch.utils.data.TensorDataset(device_loader.images, device_loader.labels)
    order = [list(range(i, i + 32)) for i in (0, 32, 64)]
    data_loader = torch.utils.data.DataLoader(dataset, batch_sampler=order)
    same_batches = DeviceLoader(device_loader.images, device_loader.labels, 32, shuffle=False, device="cpu")
    assert differences(distil(PLAIN, stages=False, loader=data_loader),
                       distil(PLAIN, stages=False, loader=same_batches)) == (0.0, 0.0)


def test_defaults_on_the_cpu_are_the_plain_loop(plain_runs):
    """Readers' CPU results do not move: every "where it pays" switch is off on the CPU."""
    h, _ = distil(dataclasses.replace(PLAIN, autocast="auto", fused=None, channels_last=None, prepare_teacher=None))
    assert h.records == plain_runs[True][0].records
    assert h.precision == "float32" and h.settings["optimizer"] == "adam" and not h.settings["channels_last"]
    assert h.settings["teacher"] == "eval mode, run at every step"
    assert TrainConfig().autocast == "auto" and TrainConfig().compile is None


def test_no_host_synchronisation_inside_an_epoch(monkeypatch):
    """No ``.item()``, ``float()`` or ``bool()`` of a tensor in the loop; the losses are read once per epoch.

    (With the fused optimiser, as on CUDA: PyTorch's plain CPU Adam reads its step counter.)
    """
    class ScalarReads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ScalarReads.count += func is torch.ops.aten._local_scalar_dense.default
            return func(*args, **(kwargs or {}))

    reads = []
    real_tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(t.shape) or real_tolist(t))
    config = dataclasses.replace(PLAIN, epochs=3, fused=True)
    with ScalarReads():
        fit(Classifier(SmallCNN((4, 8, 8)), 4), toy_loader(), [ce()], config, progress=False)
        fit(EmbeddingNet(SmallCNN((4, 8, 8)), 8), toy_loader(), [triplet()], config, progress=False)
    assert ScalarReads.count == 0
    assert reads == [torch.Size([2])] * 6  # one read of (loss, term) per epoch


def test_prepare_teacher_folds_a_copy_and_leaves_the_teacher_alone():
    teacher = frozen_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    prepared = prepare_teacher(teacher, torch.bfloat16, channels_last=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prepared.modules())
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in prepared.parameters())
    assert prepared.backbone.stages[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        folded = prepare_teacher(teacher)(x)
        torch.testing.assert_close(folded.logits, teacher(x).logits, rtol=1e-5, atol=1e-5)


def test_channels_last_student_is_returned_in_the_usual_layout():
    model = Classifier(SmallCNN((4, 8, 8)), 4)
    fit(model, toy_loader(), [ce()], dataclasses.replace(PLAIN, epochs=1, channels_last=True), progress=False)
    assert all(p.is_contiguous() for p in model.parameters())


# ----------------------------------------------------------------------------- precision chosen by the hardware


@pytest.mark.parametrize("capability, dtype", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                               ((8, 0), torch.bfloat16), ((8, 9), torch.bfloat16),
                                               ((9, 0), torch.bfloat16)], ids=["V100", "T4", "A100", "L4", "H100"])
def test_autocast_dtype_follows_the_gpu(capability, dtype, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert autocast_dtype("cuda") == dtype
    assert train._autocast("auto", torch.device("cuda")) == dtype
    assert train._autocast(torch.bfloat16, torch.device("cuda")) == torch.bfloat16  # explicit dtypes are kept
    settings = train._settings(PLAIN, torch.device("cuda"), dtype, torch.optim.SGD([torch.zeros(1)], lr=1), False,
                               None, toy_loader())
    assert settings["precision"] == ("float16 + GradScaler" if dtype == torch.float16 else "bfloat16")


def test_autocast_settings_on_the_cpu():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None and autocast_dtype("mps") is None
    assert train._autocast("auto", cpu) is None
    assert train._autocast(None, cpu) is None and train._autocast(torch.float32, cpu) is None
    assert train._autocast("bfloat16", cpu) == torch.bfloat16 and train._autocast(torch.float16, cpu) == torch.float16


def test_float16_trains_with_a_grad_scaler(tmp_path):
    """float16 (a T4's precision) on the CPU: the scaler is on, saved with the checkpoint, and the run
    stays close to float32; where the scaled gradients overflow (the large RKD weights) it skips the
    step and lowers its scale, as it should, and the losses stay finite."""
    def classify(config):
        torch.manual_seed(0)
        model = Classifier(SmallCNN((4, 8, 8)), 4)
        return fit(model, toy_loader(), [ce()], config, progress=False)

    fp32 = classify(dataclasses.replace(PLAIN, epochs=6, fused=True))
    fp16 = classify(dataclasses.replace(PLAIN, epochs=6, fused=True, autocast=torch.float16))
    assert fp16.precision == "float16 + GradScaler"
    assert fp16.series("loss") == pytest.approx(fp32.series("loss"), rel=0.02)

    ckpt = tmp_path / "run.pt"
    h, _ = distil(dataclasses.replace(PLAIN, fused=True, autocast=torch.float16), stages=False)
    fit(Classifier(SmallCNN((4, 8, 8)), 4), toy_loader(), [ce(), hkd(1, 4), rkd(25, 50)],
        dataclasses.replace(PLAIN, epochs=1, fused=True, autocast="float16"), teacher=frozen_teacher(),
        checkpoint=ckpt, progress=False)
    scale = torch.load(ckpt, weights_only=True)["scaler"]["scale"]
    assert 0 < scale < 2.0**16  # it backed off from its initial 2^16
    assert all(torch.isfinite(torch.tensor(h.series("loss"))))


def test_resume_is_exact_with_every_measure_on(tmp_path):
    config = dataclasses.replace(PLAIN, epochs=3, fused=True, channels_last=True, prepare_teacher=True,
                                 autocast=torch.float16)
    full_history, full = distil(config)
    ckpt = tmp_path / "run.pt"

    def run(epochs):
        teacher = frozen_teacher()
        torch.manual_seed(0)
        student = Classifier(SmallCNN((4, 8, 8)), 4)
        h = fit(student, toy_loader(), [ce(), hkd(1, 4), rkd(25, 50), attention(10.0)],
                dataclasses.replace(config, epochs=epochs), teacher=teacher, checkpoint=ckpt, progress=False)
        return h, student

    run(1)
    torch.manual_seed(99)
    resumed_history, resumed = run(3)
    assert resumed_history.records == full_history.records
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    assert resumed_history.settings["resume"] == "exact" and resumed_history.settings["workers"] == 0


def test_resume_with_persistent_workers_is_recorded_as_not_exact():
    dataset = torch.utils.data.TensorDataset(torch.randn(8, 1, 28, 28), torch.arange(8) % 4)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1, persistent_workers=True)
    assert train._resume_rule(loader).startswith("not exact")
    assert train._resume_rule(torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1)) == "exact"
    assert train._resume_rule(toy_loader()) == "exact"


def test_outputs_are_cast_to_float32_only_where_a_term_reads_them():
    from rkd_tutorial.models import Output

    half = Output(torch.randn(4, 3).bfloat16(), None, torch.randn(4, 5).bfloat16(), [torch.randn(4, 2, 3, 3).bfloat16()])
    view = train._float(half)
    assert view.embedding.dtype == torch.float32 and view.embedding is view.embedding  # cast once, then reused
    assert view.logits is None and "stages" not in vars(view)  # never read, never cast
    assert train._float(None) is None
