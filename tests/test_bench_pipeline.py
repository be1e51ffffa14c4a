"""Tests for ``python -m rkd_tutorial.bench pipeline``: a tiny run in-process, and its building blocks.

The end-to-end run uses small networks (``cnn-8-16-32`` teacher and student)
and batches of 64 (4 classes x 16) so that it stays well under a minute on a
busy two-core CPU; the layout of the output and the code paths are those of
the real benchmark.
"""

from __future__ import annotations

import json

import pytest
import torch

from rkd_tutorial.bench import pipeline
from rkd_tutorial.bench.__main__ import main
from rkd_tutorial.data import normalize_images
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


def test_train_step_runs_eagerly_on_cpu():
    """The closure that the CUDA graph captures: one full step, sums its losses on the device."""
    teacher, student = _tiny_models()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    loss_sum = torch.zeros(())
    step = pipeline.make_train_step(teacher, student, opt, RKDLoss(1, 2), loss_sum)
    x, y = torch.randn(16, 1, 28, 28), torch.arange(4).repeat(4)
    before = [p.detach().clone() for p in student.parameters()]
    t_before = [p.detach().clone() for p in teacher.parameters()]
    losses = [step(x, y) for _ in range(3)]
    assert all(torch.isfinite(v) and not v.requires_grad for v in losses)
    assert float(loss_sum) == pytest.approx(float(sum(losses)), rel=1e-6)
    assert any(not torch.equal(b, p) for b, p in zip(before, student.parameters()))  # the student learns
    assert all(torch.equal(b, p) for b, p in zip(t_before, teacher.parameters()))    # the teacher does not
    assert all(p.grad is not None for p in student.parameters())


def test_capture_refuses_cpu_batches():
    teacher, student = _tiny_models()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    step = pipeline.make_train_step(teacher, student, opt, RKDLoss(1, 2), torch.zeros(()))
    with pytest.raises(pipeline.GraphUnsafe):
        pipeline.capture_train_step(step, [(torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long))])


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

    tf = pipeline.conventional_transform(augment=False)
    conv = torch.stack([tf(Image.fromarray(data.images[i].numpy(), mode="L")) for i in range(4)])
    assert torch.allclose(conv, normalize_images(data.images[:4]), atol=1e-6)
    # the same class-balanced batches for both, epoch by epoch
    batches = pipeline.EpochBatches(data.batch_source(), steps=3)
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
