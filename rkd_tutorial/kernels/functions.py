"""Host side of the fused RKD kernels: squared distances, launches, gradient, autograd.

One call of :func:`rkd_loss` does, on the device, without synchronising with
the host (no ``.item()``, no boolean-mask indexing):

1. centre both batches and form their squared-distance matrices ``Q_s``,
   ``Q_t`` (:func:`~.triton_kernels.sqdist_kernel`, ``O(N^2 D)``);
2. distance loss (if ``distance_weight``): three ``N x N`` passes,
   ``sum d`` -> Huber sums -> ``dL/dQ`` (:mod:`.triton_kernels`);
3. angle loss (if ``angle_weight``): one launch of :func:`~.triton_kernels.angle_kernel`
   over the upper block triangle of tiles, which adds its ``dL/dQ`` on top;
4. the student's gradient from ``dL/dQ`` (:func:`_gradient_from_dq`), two
   matrix products in full float32 (TF32 off).

The loss and its gradient come out of the same forward pass, like
``_AngleLossFunction`` in :mod:`rkd_tutorial.losses.relational`: the backward
pass only multiplies the stored gradient by ``grad_output``.

Memory: three ``N x N`` float32 matrices (``Q_s``, ``Q_t``, ``dL/dQ``), the
centred and transposed copies of the inputs and the gradient: about 200 MiB
at ``N = 4096``, 13 MiB at ``N = 1024``.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch

from . import interpreter_enabled
from . import triton_kernels as K

__all__ = ["rkd_loss", "launch_config"]

#: Tile edge of the angle kernel (pairs ``(b, c)`` per program: BLOCK^2).
ANGLE_BLOCK = 64
#: Tile edge of the three ``N x N`` distance passes.
PAIR_BLOCK = 64
#: Aim for this many angle programs per streaming multiprocessor.
PROGRAMS_PER_SM = 4
#: Fewest anchors one angle program walks over (so the tile load pays off).
MIN_ANCHORS_PER_PROGRAM = 8
#: Largest batch whose ``N^2`` indices fit the kernels' 32-bit offsets.
MAX_N = 46340


@contextlib.contextmanager
def _ieee_fp32_matmul():
    """Full-precision float32 matrix products inside the block (no TF32), restored after.

    TF32's 10-bit mantissa would cost the gradient three decimal digits. Uses
    the per-backend switch of recent PyTorch where it exists.
    """
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):
        prev = m.fp32_precision
        if prev == "ieee":
            yield
            return
        m.fp32_precision = "ieee"
        try:
            yield
        finally:
            m.fp32_precision = prev
    else:  # older PyTorch
        prev = m.allow_tf32
        m.allow_tf32 = False
        try:
            yield
        finally:
            m.allow_tf32 = prev


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@functools.lru_cache(maxsize=64)
def _tile_pairs(tiles: int, device: torch.device):
    """Indices ``(b, c)``, ``b <= c``, of the upper block triangle, as int32 device vectors."""
    idx = torch.triu_indices(tiles, tiles, device=device).to(torch.int32)
    return idx[0].contiguous(), idx[1].contiguous()


def launch_config(n: int, device: torch.device, block: int | None = None, anchor_splits: int | None = None):
    """Launch parameters of the angle kernel: ``(block, tiles, anchors_per_program, grid, num_warps)``.

    A tile of ``block x block`` pairs is one program's register state; when
    there are fewer tiles than the GPU has room for (small ``N``), the anchors
    are split over several programs per tile (``anchor_splits``), whose
    results meet through atomic adds.
    """
    block = block or ANGLE_BLOCK
    tiles = -(-n // block)
    num_tiles = tiles * (tiles + 1) // 2
    if anchor_splits is None:
        sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" else 1
        anchor_splits = -(-PROGRAMS_PER_SM * sms // num_tiles)
        anchor_splits = max(1, min(anchor_splits, n // MIN_ANCHORS_PER_PROGRAM))
    anchors_per_program = -(-n // max(1, anchor_splits))
    grid = (num_tiles, -(-n // anchors_per_program))
    num_warps = 8 if block >= 64 else 4
    return block, tiles, anchors_per_program, grid, num_warps


def _gradient_from_dq(dq: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``dL/dX`` for the centred ``X`` from ``dq = dL/dQ``, ``Q_ij = ||x_i - x_j||^2``.

    ``dQ_ij/dx_i = 2 (x_i - x_j)`` and ``dQ_ij/dx_j = -2 (x_i - x_j)``, so with
    ``A = dq + dq^T``::

        dL/dx_a = 2 sum_b A_ab (x_a - x_b) = 2 (rowsum(A)_a x_a - (A X)_a)

    (the diagonal of ``dq`` cancels, so the kernels may leave anything there).
    Then the centring ``x - mean(x)`` is differentiated: subtract the mean
    gradient (zero up to rounding, since RKD is translation invariant).
    """
    with _ieee_fp32_matmul():
        ax = dq @ x
        ax.addmm_(dq.t(), x)
    g = (dq.sum(dim=0) + dq.sum(dim=1)).unsqueeze(1) * x - ax
    g = g - g.mean(dim=0, keepdim=True)
    return g.mul_(2.0)


def _centered_sqdist(x: torch.Tensor):
    """The centred batch (float32, ``N x D``) and its squared distances (``N x N``)."""
    x = x.detach().to(torch.float32)
    x = x - x.mean(dim=0, keepdim=True)
    n, d = x.shape
    q = torch.empty((n, n), dtype=torch.float32, device=x.device)
    grid = (-(-n // PAIR_BLOCK), -(-n // PAIR_BLOCK))
    K.sqdist_kernel[grid](x.t().contiguous(), q, n, d, BLOCK=PAIR_BLOCK, UNROLL=4, num_warps=4)
    return x, q


def _forward(student, teacher, distance_weight, angle_weight, want_grad, block, anchor_splits):
    """Loss (float32 0-d tensor) and, if ``want_grad``, ``dL/dstudent`` (float32, ``N x Ds``)."""
    n = student.shape[0]
    xs, qs = _centered_sqdist(student)
    _, qt = _centered_sqdist(teacher)
    stats = torch.zeros(8, dtype=torch.float32, device=student.device)
    dq = None
    if want_grad:
        # The distance pass stores every entry; without it the angle kernel adds onto zeros.
        dq = (torch.empty if distance_weight else torch.zeros)((n, n), dtype=torch.float32, device=student.device)

    if distance_weight:
        grid = (-(-n // PAIR_BLOCK), -(-n // PAIR_BLOCK))
        K.distance_sums_kernel[grid](qs, qt, stats, n, BLOCK=PAIR_BLOCK, EPS=K.EPS)
        K.distance_loss_kernel[grid](qs, qt, stats, n, BLOCK=PAIR_BLOCK, EPS=K.EPS)
        if want_grad:
            K.distance_grad_kernel[grid](qs, qt, stats, dq, n, distance_weight / n**2, BLOCK=PAIR_BLOCK, EPS=K.EPS)

    if angle_weight and n >= 3:
        blk, tiles, per_program, grid, num_warps = launch_config(n, student.device, block, anchor_splits)
        tile_b, tile_c = _tile_pairs(tiles, student.device)
        K.angle_kernel[grid](
            qs, qt, dq if want_grad else stats, stats, tile_b, tile_c, n, per_program, angle_weight / n**3,
            BLOCK=blk, EPS2=K.EPS**2, WANT_GRAD=bool(want_grad), num_warps=num_warps,
        )

    loss = stats[2] * (distance_weight / n**2) + stats[4]
    grad = _gradient_from_dq(dq, xs) if want_grad else None
    return loss, grad


class _RKDFunction(torch.autograd.Function):
    """``distance_weight * L_D + angle_weight * L_A`` with its gradient computed in the forward pass."""

    @staticmethod
    def forward(ctx, student, teacher, distance_weight, angle_weight, want_grad, block, anchor_splits):
        loss, grad = _forward(student, teacher, distance_weight, angle_weight, want_grad, block, anchor_splits)
        if want_grad:
            ctx.save_for_backward(grad.to(student.dtype))
        return loss.to(student.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None, None, None, None, None


def _check(student, teacher, need: int):
    for side, x in (("student", student), ("teacher", teacher)):
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"rkd kernels: {side} must be a 2-D floating-point tensor (N x D)")
    n = student.shape[0]
    if teacher.shape[0] != n:
        raise ValueError(f"rkd kernels: batch sizes differ, {n} (student) vs {teacher.shape[0]} (teacher)")
    if n < need:
        raise ValueError(f"rkd kernels: need at least {need} examples, got {n}")
    if n > MAX_N:
        raise ValueError(f"rkd kernels: N = {n} exceeds the 32-bit indexing limit {MAX_N}")
    if student.device != teacher.device:
        raise ValueError(f"rkd kernels: student on {student.device}, teacher on {teacher.device}")
    if student.device.type != "cuda" and not interpreter_enabled():
        raise RuntimeError(
            "rkd kernels: CPU tensors need Triton's interpreter (set TRITON_INTERPRET=1 before importing "
            "triton); use rkd_tutorial.losses for the ordinary CPU path"
        )


def rkd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    distance_weight: float = 1.0,
    angle_weight: float = 2.0,
    *,
    block: int | None = None,
    anchor_splits: int | None = None,
) -> torch.Tensor:
    """``distance_weight * RKD-D + angle_weight * RKD-A`` (Eq. 5, 7, 8), fused.

    Args:
        student: ``N x Ds`` student embeddings (receives the gradient).
        teacher: ``N x Dt`` teacher embeddings (no gradient; ``Dt`` may differ from ``Ds``).
        distance_weight, angle_weight: the weights of Eq. (8); a zero weight skips that term.
        block, anchor_splits: launch overrides for tests (tile edge, anchor groups per tile).

    Returns:
        A scalar tensor in the student's dtype (computed in float32), whose
        gradient with respect to ``student`` was computed in the same pass.
    """
    if not (math.isfinite(distance_weight) and math.isfinite(angle_weight)):
        raise ValueError("rkd kernels: weights must be finite")
    _check(student, teacher, need=3 if angle_weight else 2)
    want_grad = torch.is_grad_enabled() and student.requires_grad
    return _RKDFunction.apply(
        student, teacher.detach(), float(distance_weight), float(angle_weight), want_grad, block, anchor_splits
    )
