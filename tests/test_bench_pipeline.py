"""Tests for ``python -m rkd_tutorial.bench pipeline``: a tiny run in-process, and its building blocks.

The end-to-end run uses small networks (``cnn-8-16-32`` teacher and student)
and batches of 64 (4 classes x 16) so that it stays well under a minute on a
busy two-core CPU; the layout of the output and the code paths are those of
the real benchmark.
"""

from __future__ import annotations

import gc
import json
import math
import weakref

import pytest
import torch
import torch.nn as nn

from rkd_tutorial.bench import conventional, graph_step, pipeline
from rkd_tutorial.bench.__main__ import main
from rkd_tutorial.data import DeviceLoader, normalize_images
from rkd_tutorial.losses import RKDLoss
from rkd_tutorial.models import EmbeddingNet, SmallCNN

TINY = ["--teacher", "cnn-8-16-32", "--student", "cnn-8-16-32", "--batch-size", "64", "--m-per-class", "16"]


@pytest.fixture(scope="module")
def cpu_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    rc = main(["pipeline", "--out", str(out), "--limit", "512", "--workers", "0", "--steps", "3",
               "--device", "cpu", *TINY])
    return rc, out


def test_cpu_run_writes_the_documented_layout(cpu_result):
    rc, out = cpu_result
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["bench-pipeline.json"]  # no temporary file left
    data = json.loads((out / "bench-pipeline.json").read_text())
    assert set(data) == {"provenance", "runs"}

    prov = data["provenance"]
    assert set(prov) >= {"device", "torch", "triton", "commit", "date", "wall_s", "images", "batch_size",
                         "complete", "steps_per_epoch", "project_variant", "project_info", "errors"}
    assert prov["torch"] == torch.__version__ and prov["wall_s"] > 0 and prov["commit"]
    assert prov["images"] == 512 and prov["batch_size"] == 64 and prov["steps_per_epoch"] == 3
    assert prov["project_variant"] == "eager" and prov["errors"] == [] and prov["complete"] is True
    assert prov["project_info"]["loss"].startswith("RKDLoss")
    check = prov["project_info"]["loss_check_first_batch"]  # the package's loss equals the official formulation
    assert check["package_loss"] == pytest.approx(check["direct_loss"], rel=1e-4)
    assert math.isfinite(prov["project_info"]["warmup_loss"])

    (row,) = data["runs"]
    assert set(row) >= {"workers", "conventional_s", "project_s", "speedup", "project_variant",
                        "conventional_images_per_s", "project_images_per_s", "conventional_startup_s"}
    assert row["workers"] == 0 and row["project_variant"] == "eager"
    assert row["conventional_steps"] == row["project_steps"] == 3
    assert row["conventional_s"] > 0 and row["project_s"] > 0
    assert row["speedup"] == pytest.approx(row["conventional_s"] / row["project_s"], rel=1e-2)
    for variant in ("conventional", "project"):  # both variants trained on finite losses
        assert row[f"{variant}_losses_finite"] is True
        assert 0 < row[f"{variant}_loss"] < 10


def _tiny_models():
    torch.manual_seed(0)
    teacher = EmbeddingNet(SmallCNN((4, 8, 8)), 16, normalize=True).eval()
    student = EmbeddingNet(SmallCNN((4, 8, 8)), 8).train()
    return teacher, student


def _tiny_step():
    """``(teacher, student, optimizer, loss_sum, step, x, y)``: the project's step on tiny models, CPU."""
    teacher, student = _tiny_models()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    loss_sum = torch.zeros(())
    step = graph_step.make_train_step(teacher, student, opt, RKDLoss(1, 2), loss_sum)
    return teacher, student, opt, loss_sum, step, torch.randn(16, 1, 28, 28), torch.arange(4).repeat(4)


def test_train_step_runs_eagerly_on_cpu():
    """The closure that the CUDA graph captures: one full step, sums its losses on the device."""
    teacher, student, opt, loss_sum, step, x, y = _tiny_step()
    before = [p.detach().clone() for p in student.parameters()]
    t_before = [p.detach().clone() for p in teacher.parameters()]
    losses = [step(x, y) for _ in range(3)]
    assert all(torch.isfinite(v) and not v.requires_grad for v in losses)
    assert float(loss_sum) == pytest.approx(float(sum(losses)), rel=1e-6)
    assert any(not torch.equal(b, p) for b, p in zip(before, student.parameters()))  # the student learns
    assert all(torch.equal(b, p) for b, p in zip(t_before, teacher.parameters()))    # the teacher does not
    assert all(p.grad is not None for p in student.parameters())


def test_captured_step_keeps_what_the_graph_uses_alive():
    """The graph records addresses only: the models and Adam's state must outlive the function that built them.

    Regression test for the NaN losses of the CUDA-graph variant on an H200: the teacher and the
    optimizer were referenced only by the eager closure, a local of ``build_project``, and freed on
    return while the graph kept replaying into their memory. (The capture itself needs a GPU; the
    graph is left out here, the ownership is what is tested.)
    """
    def build():
        teacher, student, opt, loss_sum, step, x, y = _tiny_step()
        loss = step(x, y)  # creates Adam's state, as the warm-up before a capture does
        captured = graph_step.CapturedStep(None, x.clone(), y.clone(), loss, step)
        state = next(iter(opt.state.values()))
        refs = [weakref.ref(o) for o in (teacher, opt, state["exp_avg"], state["exp_avg_sq"], state["step"])]
        return graph_step.ProjectRunner("cuda-graph", captured, loss_sum, student), refs

    runner, refs = build()
    gc.collect()
    assert all(r() is not None for r in refs)
    del runner
    gc.collect()
    assert all(r() is None for r in refs)  # ... and nothing else holds them


class _FakeStep:
    """A stand-in for a replayed graph: adds ``value`` to ``loss_sum`` per call."""

    def __init__(self, loss_sum, value):
        self.loss_sum, self.value, self.calls = loss_sum, value, 0

    def __call__(self, x, y):
        self.calls += 1
        self.loss_sum.add_(self.value)
        return self.loss_sum


def _runner(variant, value):
    loss_sum = torch.zeros(())
    return graph_step.ProjectRunner(variant, _FakeStep(loss_sum, value), loss_sum, nn.Linear(1, 1),
                                  info={"graph_check": {"replay_loss": 0.5}, "graph_traceback": "tb"})


def _cpu_loader():
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    return DeviceLoader(images, torch.arange(64) % 4, 8, shuffle=False, device="cpu")


def test_checked_graph_runner_falls_back_to_a_fresh_eager_runner_on_a_nonfinite_probe():
    loader, eager_loader = _cpu_loader(), _cpu_loader()
    eager = _runner("eager", 0.25)
    built = []

    def build_eager():
        built.append(1)
        return eager, eager_loader

    graph = _runner("cuda-graph", float("nan"))
    runner, got_loader, note = graph_step.checked_graph_runner(graph, loader, build_eager)
    assert graph.run_step.calls == graph_step.PROBE_STEPS  # a short probe, not an epoch
    assert runner is eager and got_loader is eager_loader and built == [1]
    assert note and "cuda-graph -> eager" in note and "nan" in note
    assert runner.info["graph_fallback"] == note
    assert runner.info["graph_variant_info"] == {"graph_check": {"replay_loss": 0.5}}  # no traceback


def test_checked_graph_runner_keeps_a_finite_graph_and_does_not_probe_eager():
    loader = _cpu_loader()

    def build_eager():
        raise AssertionError("no fallback expected")

    graph = _runner("cuda-graph", 0.5)
    assert graph_step.checked_graph_runner(graph, loader, build_eager) == (graph, loader, None)
    assert float(graph.loss_sum) == pytest.approx(0.5 * graph_step.PROBE_STEPS)
    eager = _runner("eager", float("nan"))
    assert graph_step.checked_graph_runner(eager, loader, build_eager) == (eager, loader, None)
    assert eager.run_step.calls == 0


def test_capture_refuses_cpu_batches():
    teacher, student = _tiny_models()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    step = graph_step.make_train_step(teacher, student, opt, RKDLoss(1, 2), torch.zeros(()))
    with pytest.raises(graph_step.GraphUnsafe):
        graph_step.capture_train_step(step, [(torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long))])


def test_sync_free_torch_loss_matches_rkdloss():
    """The fallback loss used inside a graph when Triton fails equals the package's RKDLoss."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(24, 8, generator=g, requires_grad=True)
    t = torch.randn(24, 16, generator=g)
    a = pipeline._torch_rkd_sync_free(s, t)
    (ga,) = torch.autograd.grad(a, s)
    b = RKDLoss(1, 2)(s, t)
    (gb,) = torch.autograd.grad(b, s)
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-6)
    assert torch.allclose(ga, gb, rtol=1e-5, atol=1e-8)


def test_both_variants_see_the_same_images_and_batches():
    data = pipeline.load_data(limit=512, batch_size=128, m_per_class=32, sampler="balanced", seed=0)
    assert len(data) == 512 and set(data.labels.tolist()) <= set(pipeline.TRAIN_CLASSES)
    # the conventional per-image transform (without augmentation) = the DeviceLoader's normalisation
    from PIL import Image

    tf = conventional.conventional_transform(augment=False)
    conv = torch.stack([tf(Image.fromarray(data.images[i].numpy(), mode="L")) for i in range(4)])
    assert torch.allclose(conv, normalize_images(data.images[:4]), atol=1e-6)
    # the same class-balanced batches for both, epoch by epoch
    batches = conventional.EpochBatches(data.batch_source(), steps=3)
    device_sampler = pipeline._device_sampler(data)
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        assert list(batches) == device_sampler.epoch_indices(epoch)[:3].tolist()
    assert len(batches) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_captures_the_whole_step(tmp_path):
    rc = main(["pipeline", "--out", str(tmp_path), "--limit", "512", "--workers", "0", "--steps", "3",
               "--warmup-steps", "2", "--device", "cuda", *TINY])
    data = json.loads((tmp_path / "bench-pipeline.json").read_text())
    assert data["provenance"]["errors"] == [], data["provenance"]["errors"]
    assert data["provenance"]["project_variant"] == "cuda-graph", data["provenance"]["project_info"]
    (row,) = data["runs"]
    assert row["project_losses_finite"] and row["conventional_losses_finite"]
    assert row["project_eager_losses_finite"]
    assert rc == 0
