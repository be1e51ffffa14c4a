"""Tests for rkd_tutorial.kernels: the fused Triton RKD kernels against the float64 direct formulation.

Two ways to run the kernels:

* on the CPU, under Triton's interpreter. ``TRITON_INTERPRET=1`` must be in
  the environment before Triton is first imported, and it switches *every*
  ``@triton.jit`` function of the process to the interpreter. Setting it in
  this process would therefore depend on import order (another test file may
  have imported torch/triton already) and would turn the CUDA test below into
  an interpreter run. So the interpreter checks run in one child process
  (``python -c ...`` with ``TRITON_INTERPRET=1`` in its environment) that
  prints JSON, and the tests here read it.
* on CUDA tensors, compiled, when a GPU is present (skipped otherwise).

Reference: :func:`rkd_tutorial.kernels.check.reference_loss`, the direct
formulation in float64, written out in ``kernels/check.py`` (the kernels import
nothing above them), with the package's rule that a coincident pair has no
direction and zero gradient. Without coincident points it is
:mod:`rkd_tutorial.losses.direct` itself, and with them the package's chunked
path: both checked below without Triton.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HAVE_TRITON = importlib.util.find_spec("triton") is not None
RTOL = 1e-4

# (n, ds, dt, coincident, block, anchor_splits): small sizes, so the interpreter is quick.
INTERPRETER_CASES = [
    (5, 8, 12, False, 16, None),      # one ragged tile
    (17, 8, 12, False, 16, None),     # two tiles: a diagonal and an off-diagonal (mirrored) one
    (33, 20, 7, False, 16, 3),        # Ds > Dt, 3 tiles, N not a multiple of the block, 3 anchor groups
    (70, 8, 12, False, None, None),   # the GPU's default 64-block: 2 tiles, the second ragged
    (17, 8, 12, True, 16, None),      # coincident points
    (33, 6, 11, True, 32, 2),         # coincident points, ragged tiles, 2 anchor groups
]

_CHILD = """
import json, sys
from rkd_tutorial.kernels import available
from rkd_tutorial.kernels.check import compare
assert available(), "interpreter not active"
rows = []
for n, ds, dt, coincident, block, splits in json.loads(sys.argv[1]):
    for row in compare(n, ds, dt, "cpu", coincident, block=block, anchor_splits=splits):
        row["case"] = [n, ds, dt, coincident, block, splits]
        rows.append(row)
# Inputs as callers pass them: a non-contiguous student, a teacher of another dtype.
import torch
from rkd_tutorial.kernels import rkd_loss
g = torch.Generator().manual_seed(7)
s = torch.randn(9, 21, generator=g)
t = torch.randn(9, 6, generator=g, dtype=torch.float64)
plain = s.clone().requires_grad_(True)
rkd_loss(plain, t.float(), 1.0, 2.0).backward()
odd = s.t().contiguous().t().requires_grad_(True)  # same values, column-major
value = rkd_loss(odd, t, 1.0, 2.0)
value.backward()
rows.append({"case": "layout", "loss_diff": abs(float(value) - float(rkd_loss(s, t.float(), 1.0, 2.0))),
             "grad_diff": float((odd.grad - plain.grad).abs().max()), "dtype": str(value.dtype),
             "grad_shape": list(odd.grad.shape)})
print("JSON:" + json.dumps(rows))
"""


@pytest.fixture(scope="module")
def interpreter_rows():
    if not HAVE_TRITON:
        pytest.skip("triton is not installed")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(INTERPRETER_CASES)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"interpreter run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    line = next(l for l in proc.stdout.splitlines() if l.startswith("JSON:"))
    return json.loads(line[len("JSON:"):])


def _case_id(case):
    n, ds, dt, coincident, block, splits = case
    return f"n{n}-ds{ds}-dt{dt}" + ("-coincident" if coincident else "") + f"-block{block or 'default'}" + (
        f"-splits{splits}" if splits else ""
    )


@pytest.mark.parametrize("case", INTERPRETER_CASES, ids=[_case_id(c) for c in INTERPRETER_CASES])
def test_interpreter_matches_float64_direct(interpreter_rows, case):
    rows = [r for r in interpreter_rows if r["case"] == list(case)]
    assert {r["loss"] for r in rows} == {"distance", "angle", "distance+angle"}
    for r in rows:
        where = f"{r['loss']} {_case_id(case)}"
        assert r["finite"], where
        assert r["loss_rel_err"] <= RTOL, (where, r)
        assert r["grad_rel_err"] <= RTOL, (where, r)
        assert r["nograd_rel_err"] <= RTOL, (where, r)  # the WANT_GRAD=False kernel variant
        assert r["reference"] > 0, where


def test_interpreter_rows_cover_every_case(interpreter_rows):
    assert len([r for r in interpreter_rows if r["case"] != "layout"]) == 3 * len(INTERPRETER_CASES)


def test_interpreter_takes_any_layout_and_mixed_dtypes(interpreter_rows):
    """A column-major student and a float64 teacher give the numbers of contiguous float32 inputs."""
    (row,) = [r for r in interpreter_rows if r["case"] == "layout"]
    assert row["loss_diff"] <= 1e-6 and row["grad_diff"] <= 1e-6, row
    assert row["dtype"] == "torch.float32" and row["grad_shape"] == [9, 21]


# ----------------------------------------------------------------------------- no Triton execution needed


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0), (1.0, 2.0)], ids=["distance", "angle", "both"])
def test_reference_is_the_direct_formulation_and_the_packages_rule(weights):
    """``kernels.check``'s own float64 reference = ``losses.direct`` (official code) on distinct points,
    and = the package's chunked path (``RKDLoss`` in float64) with coincident points."""
    from rkd_tutorial.kernels.check import _rel, make_inputs, reference_loss
    from rkd_tutorial.losses import RKDLoss
    from rkd_tutorial.losses.direct import direct_angle_loss, direct_distance_loss

    wd, wa = weights
    s, t = make_inputs(17, 8, 12)
    loss, grad = reference_loss(s, t, wd, wa)
    s64 = s.double().requires_grad_(True)
    direct = wd * direct_distance_loss(s64, t.double()) + wa * direct_angle_loss(s64, t.double())
    (direct_grad,) = torch.autograd.grad(direct, s64)
    assert max(_rel(loss, direct), _rel(grad, direct_grad)) <= 1e-12

    s, t = make_inputs(17, 8, 12, coincident=True)
    loss, grad = reference_loss(s, t, wd, wa)
    s64 = s.double().requires_grad_(True)
    package = RKDLoss(wd, wa)(s64, t.double())
    (package_grad,) = torch.autograd.grad(package, s64)
    assert torch.isfinite(grad).all()
    assert max(_rel(loss, package), _rel(grad, package_grad)) <= 1e-6


def test_available_is_a_bool_and_import_is_lazy():
    import rkd_tutorial.kernels as kernels

    assert isinstance(kernels.available(), bool)
    assert {"available", "rkd_loss", "rkd_angle_loss", "rkd_distance_loss"} <= set(kernels.__all__)


@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
def test_gradient_assembly_matches_autograd():
    """``gradient_from_dq`` (the gradient kernel's formula) is the chain rule through Q_ij = ||x_i - x_j||^2."""
    from rkd_tutorial.kernels.check import gradient_from_dq

    g = torch.Generator().manual_seed(3)
    x = (torch.randn(9, 4, dtype=torch.float64, generator=g) + 5.0).requires_grad_(True)
    dq = torch.randn(9, 9, dtype=torch.float64, generator=g)
    q = (x[:, None, :] - x[None, :, :]).pow(2).sum(-1)
    (expected,) = torch.autograd.grad((dq * q).sum(), x)
    torch.testing.assert_close(gradient_from_dq(dq, x.detach()), expected, rtol=1e-10, atol=1e-10)
    # translation invariance: the kernel centres the rows first, the result is the same
    centred = x.detach() - x.detach().mean(0)
    torch.testing.assert_close(gradient_from_dq(dq, centred), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
def test_launch_config_covers_all_anchors():
    from rkd_tutorial.kernels.functions import launch_config

    for n, splits in ((5, None), (70, None), (1000, 7), (4096, 1)):
        block, tiles, per, grid, warps = launch_config(n, torch.device("cpu"), None, splits)
        assert tiles * block >= n > (tiles - 1) * block
        assert grid[0] == tiles * (tiles + 1) // 2
        assert grid[1] * per >= n and (grid[1] - 1) * per < n


# ----------------------------------------------------------------------------- CUDA, compiled


def _cuda_ready() -> bool:
    if not (HAVE_TRITON and torch.cuda.is_available()):
        return False
    return os.environ.get("TRITON_INTERPRET", "0") in ("", "0")


cuda_only = pytest.mark.skipif(not _cuda_ready(), reason="needs a CUDA GPU and Triton (compiled, not interpreted)")

CUDA_CASES = [(5, 8, 12, False), (17, 8, 12, True), (70, 20, 7, False), (130, 64, 96, True), (257, 128, 512, False)]


@cuda_only
@pytest.mark.parametrize("case", CUDA_CASES, ids=[f"n{c[0]}-ds{c[1]}-dt{c[2]}{'-coincident' if c[3] else ''}" for c in CUDA_CASES])
def test_cuda_matches_float64_direct(case):
    from rkd_tutorial.kernels.check import compare

    n, ds, dt, coincident = case
    for r in compare(n, ds, dt, "cuda", coincident):
        assert r["ok"], r
    for r in compare(n, ds, dt, "cuda", coincident, block=32, anchor_splits=3):
        assert r["ok"], r


@cuda_only
def test_cuda_rkdloss_dispatches_to_kernels_and_matches_cpu_path():
    from rkd_tutorial.kernels.check import make_inputs
    from rkd_tutorial.losses import RKDLoss, rkd_angle_loss, rkd_distance_loss
    from rkd_tutorial.losses.relational import _kernels

    assert _kernels() is not None
    s_cpu, t_cpu = make_inputs(96, 32, 48)
    for fn in (RKDLoss(1.0, 2.0), RKDLoss(0.0, 2.0), RKDLoss(25.0, 0.0), rkd_angle_loss, rkd_distance_loss):
        a = s_cpu.clone().requires_grad_(True)
        fn(a, t_cpu).backward()
        b = s_cpu.cuda().requires_grad_(True)
        loss = fn(b, t_cpu.cuda())
        loss.backward()
        assert loss.device.type == "cuda"
        torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-4, atol=1e-4 * a.grad.abs().max().item())


@cuda_only
def test_cuda_memory_is_quadratic():
    """N = 1024: forward+backward of RKD-DA stays far below one N x N x D tensor."""
    from rkd_tutorial.kernels import rkd_loss

    n = 1024
    s = torch.randn(n, 128, device="cuda", requires_grad=True)
    t = torch.randn(n, 512, device="cuda")
    rkd_loss(s, t, 1.0, 2.0).backward()  # compile, cuBLAS workspaces
    s.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    rkd_loss(s, t, 1.0, 2.0).backward()
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base <= 64 * 2**20


# ----------------------------------------------------------------------------- compiled for the GPU, without one


def _can_compile_for_sm90() -> bool:
    if not HAVE_TRITON or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return False
    import triton

    return os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas"))


@pytest.mark.skipif(not _can_compile_for_sm90(), reason="needs Triton's NVIDIA backend (ptxas), not the interpreter")
def test_kernels_compile_for_h100_without_spilling():
    """Triton -> PTX -> ptxas for sm_90 (H100/H200) and sm_75 (T4) here: catches what the interpreter cannot."""
    from rkd_tutorial.kernels.aot import compile_all

    for arch, divisible in ((90, True), (90, False), (75, True)):  # H100/H200; Colab's T4
        rows = compile_all(arch, divisible=divisible)
        assert {r["kernel"] for r in rows} >= {"pair_geometry", "angle(WANT_GRAD=True)", "distance", "gradient"}
        for r in rows:
            if r["regs"] is not None:
                assert r["spill_bytes"] == 0, r
                assert r["regs"] <= 255, r


@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
def test_tune_knobs_are_restored_and_tune_needs_a_gpu(capsys):
    """``python -m rkd_tutorial.kernels.tune`` sets launch knobs only inside its block; no GPU: a clear exit."""
    from rkd_tutorial.kernels import functions as F
    from rkd_tutorial.kernels import tune

    before = (F.ANGLE_BLOCK, F.ANGLE_WARPS, F.STAGGER)
    with tune.knobs(ANGLE_BLOCK=32, ANGLE_WARPS=1, STAGGER=False):
        assert (F.ANGLE_BLOCK, F.ANGLE_WARPS, F.STAGGER) == (32, 1, False)
        assert F.launch_config(100, torch.device("cpu"))[0] == 32
    assert (F.ANGLE_BLOCK, F.ANGLE_WARPS, F.STAGGER) == before
    assert F.launch_config(100, torch.device("cpu"))[0] == before[0]  # the cache was cleared again
    assert tune.SETTINGS[0][1]["ANGLE_BLOCK"] == before[0]  # the reference row is the default
    if not torch.cuda.is_available():
        assert tune.main(["--n", "64"]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err
