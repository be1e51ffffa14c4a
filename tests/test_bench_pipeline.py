"""Tests for ``python -m rkd_tutorial.bench pipeline``: a tiny run in-process, and what makes the comparison fair.

The end-to-end run uses small networks (``cnn-8-16-32`` teacher and student)
and batches of 64 (4 classes x 16) so that it takes seconds on a busy
two-core CPU; the code paths and the output's layout are those of the real
benchmark.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import pytest
import torch

from rkd_tutorial.bench import conventional, pipeline
from rkd_tutorial.bench.__main__ import main
from rkd_tutorial.data import normalize_images
from rkd_tutorial.train import TrainConfig

TINY = ["--teacher", "cnn-8-16-32", "--student", "cnn-8-16-32", "--batch-size", "64", "--m-per-class", "16",
        "--limit", "512", "--steps", "3"]
MEASUREMENT = {"epoch_s", "epochs_s", "warmup_s", "steps", "images_per_s", "losses", "losses_finite", "peak_mib"}


@pytest.fixture(scope="module")
def cpu_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    rc = main(["pipeline", "--out", str(out), "--workers", "1", "0", "--device", "cpu", *TINY])
    return rc, out


def test_cpu_run_writes_the_documented_layout(cpu_result):
    rc, out = cpu_result
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["bench-pipeline-cpu.json"]  # no temporary file left
    data = json.loads((out / "bench-pipeline-cpu.json").read_text())
    assert set(data) == {"provenance", "project", "runs", "errors"} and data["errors"] == []

    prov = data["provenance"]
    assert set(prov) >= {"device", "torch", "triton", "commit", "date", "wall_s", "complete", "job", "conventional",
                         "project", "cpu_count", "torch_threads"}
    assert prov["complete"] is True and prov["torch"] == torch.__version__ and prov["commit"]
    job = prov["job"]
    assert (job["images"], job["batch_size"], job["steps_per_epoch"], job["warmup_epochs"], job["timed_epochs"]) == \
        (512, 64, 3, 1, 1)

    project = data["project"]
    assert set(project) == MEASUREMENT | {"config", "settings"}
    # which TrainConfig produced the number: fit's defaults, with the job's epochs, learning rate and seed
    assert project["config"] == json.loads(json.dumps(dataclasses.asdict(TrainConfig(epochs=2, lr=1e-4))))
    assert project["settings"]["precision"] == "float32" and project["settings"]["loader"] == "DeviceLoader"
    assert project["settings"]["teacher"].endswith("run at every step")  # augmented data: no cached teacher

    assert [r["workers"] for r in data["runs"]] == [1, 0]
    for variant in [project] + [r["conventional"] for r in data["runs"]]:
        assert set(variant) >= MEASUREMENT
        assert variant["steps"] == 3 and variant["epoch_s"] > 0 and variant["peak_mib"] is None
        assert len(variant["epochs_s"]) == len(variant["warmup_s"]) == 1
        assert len(variant["losses"]) == 2 and variant["losses_finite"]
        assert all(0 < x < 10 for x in variant["losses"])
    for r in data["runs"]:
        assert r["speedup"] == pytest.approx(r["conventional"]["epoch_s"] / project["epoch_s"], rel=1e-2)
        assert r["loss_rel_diff"] < 0.25  # the same batches and weights; augmentation draws differ


def test_cpu_run_fits_the_time_budget(cpu_result):
    """The real CPU defaults take about a minute; this tiny run must take seconds."""
    _, out = cpu_result
    assert json.loads((out / "bench-pipeline-cpu.json").read_text())["provenance"]["wall_s"] < 60


def test_both_variants_see_the_same_images_and_batches():
    args = argparse.Namespace(limit=512, steps=3, batch_size=128, m_per_class=32, seed=0, teacher="cnn-8-16-32",
                              student="cnn-8-16-32")
    job = pipeline.make_job(args)
    assert len(job.labels) == 512 and set(job.labels.tolist()) <= set(pipeline.TRAIN_CLASSES)
    # the conventional per-image transform (without augmentation) = the DeviceLoader's normalisation
    from PIL import Image

    tf = conventional.conventional_transform(augment=False)
    conv = torch.stack([tf(Image.fromarray(job.images[i].numpy(), mode="L")) for i in range(4)])
    assert torch.allclose(conv, normalize_images(job.images[:4]), atol=1e-6)
    # each variant gets its own sampler; epoch by epoch they draw the same batches
    a, b = job.sampler(), job.sampler()
    for epoch in (0, 1):
        a.set_epoch(epoch)
        assert list(a) == b.epoch_indices(epoch).tolist() and len(a) == 3


def test_no_speedup_from_a_variant_that_did_not_train():
    good = {"epoch_s": 2.0, "losses": [0.1, 0.1], "losses_finite": True}
    bad = {"epoch_s": 0.5, "losses": [0.1, math.nan], "losses_finite": False}
    assert pipeline.compare(good, {**good, "epoch_s": 4.0}) == {"speedup": 2.0, "loss_rel_diff": 0.0}
    assert pipeline.compare(bad, good)["speedup"] is None
    assert pipeline.compare(None, good) == {"speedup": None, "loss_rel_diff": None}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_times_fit_with_its_gpu_settings(tmp_path):
    rc = main(["pipeline", "--out", str(tmp_path), "--workers", "0", "--device", "cuda", *TINY])
    (path,) = tmp_path.glob("bench-pipeline-*.json")
    data = json.loads(path.read_text())
    assert data["errors"] == [], data["errors"]
    settings = data["project"]["settings"]
    assert settings["optimizer"] == "adam (fused)" and settings["channels_last"] is True
    assert settings["teacher"].startswith("a copy prepared for inference")
    assert settings["precision"] in ("bfloat16", "float16 + GradScaler")
    assert data["project"]["peak_mib"] > 0
    assert rc == 0
