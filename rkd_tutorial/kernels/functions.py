"""Host side of the fused RKD kernels: squared distances, launches, gradient, autograd.

One call of :func:`rkd_loss` does, on the device, without synchronising with
the host (no ``.item()``, no boolean-mask indexing):

1. centre both batches and form their squared-distance matrices ``Q_s``,
   ``Q_t`` and, for the angle loss, the per-pair factors ``U = 1/d`` and
   ``B = d/2`` (:func:`~.triton_kernels.pair_geometry_kernel`, ``O(N^2 D)``);
2. distance loss (if ``distance_weight``): three ``N x N`` passes,
   ``sum d`` -> Huber sums -> ``dL/dQ`` (:mod:`.triton_kernels`);
3. angle loss (if ``angle_weight``): one launch of :func:`~.triton_kernels.angle_kernel`
   over the upper block triangle of tiles, which adds its ``dL/dQ`` on top;
4. the student's gradient from ``dL/dQ`` (:func:`_gradient_from_dq`), two
   matrix products in full float32 (TF32 off).

The loss and its gradient come out of the same forward pass, like
``_AngleLossFunction`` in :mod:`rkd_tutorial.losses.relational`: the backward
pass only multiplies the stored gradient by ``grad_output``.

Memory: seven ``N x N`` float32 matrices (``Q``, ``U``, ``B`` of student
and teacher, ``dL/dQ``), the centred and transposed copies of the inputs and
the gradient: about 450 MiB at ``N = 4096``, 29 MiB at ``N = 1024``.
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
#: Anchors the angle kernel's loop prefetches ahead (``tl.range(num_stages=...)``; 1: none).
ANGLE_STAGES = 3
#: Warps per angle program: 4 warps x 32 threads hold a 64 x 64 tile as 32 values each.
ANGLE_WARPS = 4
#: Tile edge of the ``N x N`` passes (squared distances, distance loss).
PAIR_BLOCK = 64
#: Angle programs resident per streaming multiprocessor: 248 registers x 128 threads
#: (``python -m rkd_tutorial.kernels.aot``) leave room for 2 in 64K registers.
PROGRAMS_PER_SM = 2
#: Fewest anchors one angle program walks over (so the tile load pays off).
MIN_ANCHORS_PER_PROGRAM = 8
#: Accept an anchor split once the last wave of programs is this full on average.
WAVE_EFFICIENCY = 0.9
#: Largest batch whose padded ``N x N`` buffers fit the kernels' 32-bit offsets.
MAX_N = 46272


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


def _wave_efficiency(programs: int, slots: int) -> float:
    """Fraction of the GPU's program slots busy on average over all waves."""
    return programs / (-(-programs // slots) * slots)


def launch_config(n: int, device: torch.device, block: int | None = None, anchor_splits: int | None = None):
    """Launch parameters of the angle kernel: ``(block, tiles, anchors_per_program, grid, num_warps)``.

    A tile of ``block x block`` pairs is one program's register state, and
    every program costs the same, so the programs run in "waves" of
    ``PROGRAMS_PER_SM x SMs``. With few tiles (small ``N``) or a last wave
    nearly empty, the anchors of each tile are split over several programs
    (``anchor_splits``), whose results meet through atomic adds: the
    smallest split whose waves are ``WAVE_EFFICIENCY`` full.
    """
    block = block or ANGLE_BLOCK
    tiles = -(-n // block)
    num_tiles = tiles * (tiles + 1) // 2
    if anchor_splits is None:
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            slots = PROGRAMS_PER_SM * _sm_count(index)
        else:  # the interpreter runs programs one by one
            slots = 1
        max_splits = max(1, n // MIN_ANCHORS_PER_PROGRAM)
        candidates = range(1, max_splits + 1)
        anchor_splits = next(
            (s for s in candidates if _wave_efficiency(num_tiles * s, slots) >= WAVE_EFFICIENCY),
            max(candidates, key=lambda s: _wave_efficiency(num_tiles * s, slots)),
        )
    anchors_per_program = -(-n // max(1, anchor_splits))
    grid = (num_tiles, -(-n // anchors_per_program))
    return block, tiles, anchors_per_program, grid, ANGLE_WARPS


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


def _pair_geometry(x: torch.Tensor, ld: int, with_angle: bool):
    """Centre the batch (float32, ``N x D``); its squared distances ``Q`` and, for angles, ``U``, ``B``.

    The matrices are ``LD x LD`` buffers (``LD`` a multiple of ``PAIR_BLOCK``),
    zero past ``N``.
    """
    x = x.detach().to(torch.float32)
    x = x - x.mean(dim=0, keepdim=True)
    n, d = x.shape
    xt = x.new_empty((d, ld))
    xt[:, :n] = x.t()
    q = x.new_empty((ld, ld))
    u, b = (torch.empty_like(q), torch.empty_like(q)) if with_angle else (q, q)
    grid = (ld // PAIR_BLOCK, ld // PAIR_BLOCK)
    K.pair_geometry_kernel[grid](
        xt, q, u, b, n, ld, d,
        BLOCK=PAIR_BLOCK, UNROLL=4, EPS2=K.EPS**2, WITH_ANGLE=with_angle, num_warps=4,
    )
    return x, q, u, b


def _forward(student, teacher, distance_weight, angle_weight, want_grad, block, anchor_splits):
    """Loss (float32 0-d tensor) and, if ``want_grad``, ``dL/dstudent`` (float32, ``N x Ds``)."""
    n = student.shape[0]
    with_angle = bool(angle_weight) and n >= 3
    angle_launch = launch_config(n, student.device, block, anchor_splits) if with_angle else None
    # Row stride (and size) of the N x N buffers: N rounded up to whole tiles.
    tile = max(PAIR_BLOCK, angle_launch[0] if with_angle else PAIR_BLOCK)
    ld = -(-n // tile) * tile
    xs, qs, us, bs = _pair_geometry(student, ld, with_angle)
    _, qt, ut, bt = _pair_geometry(teacher, ld, with_angle)
    stats = torch.zeros(4, dtype=torch.float32, device=student.device)  # see triton_kernels
    dq = None
    if want_grad:
        # The distance pass stores every entry; without it the angle kernel adds onto zeros.
        dq = (torch.empty if distance_weight else torch.zeros)((ld, ld), dtype=torch.float32, device=student.device)

    if distance_weight:
        grid = (-(-n // PAIR_BLOCK), -(-n // PAIR_BLOCK))
        K.distance_sums_kernel[grid](qs, qt, stats, n, ld, BLOCK=PAIR_BLOCK, EPS=K.EPS)
        K.distance_loss_kernel[grid](qs, qt, stats, n, ld, distance_weight / n**2, BLOCK=PAIR_BLOCK, EPS=K.EPS)
        if want_grad:
            K.distance_grad_kernel[grid](qs, qt, stats, dq, n, ld, distance_weight / n**2, BLOCK=PAIR_BLOCK, EPS=K.EPS)

    if with_angle:
        blk, tiles, per_program, grid, num_warps = angle_launch
        tile_b, tile_c = _tile_pairs(tiles, student.device)
        K.angle_kernel[grid](
            qs, qt, us, ut, bs, bt, dq if want_grad else stats, stats, tile_b, tile_c,
            n, ld, per_program, max(1, per_program // (2 * tiles)), angle_weight / n**3,
            BLOCK=blk, STAGES=ANGLE_STAGES, WANT_GRAD=bool(want_grad), num_warps=num_warps,
        )

    loss = stats[2]  # both terms, weighted and normalised by the kernels
    grad = _gradient_from_dq(dq[:n, :n], xs) if want_grad else None
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
    if n > MAX_N or max(student.shape[1], teacher.shape[1]) * (n + 128) >= 2**31:
        raise ValueError(f"rkd kernels: N x D = {n} x {max(student.shape[1], teacher.shape[1])} exceeds "
                         f"the kernels' 32-bit indexing (N <= {MAX_N}, N * D < 2^31)")
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
