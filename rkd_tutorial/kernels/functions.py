"""Host side of the fused RKD kernels: buffers, launches, autograd.

One call of :func:`rkd_loss` with a gradient is four Triton launches, two
small torch ops (``zeros`` for the global sums, ``mean`` of the student) and
no synchronisation with the host (no ``.item()``, no boolean-mask indexing,
no value checks):

1. :func:`~.triton_kernels.pair_geometry_kernel`, one launch for both
   networks: squared distances ``Q_s``, ``Q_t``, for the angle loss the
   per-pair factors ``U = 1/d`` and ``B = d/2``, for the distance loss the
   sums of distances (``O(N^2 D)``);
2. distance loss (if ``distance_weight``): :func:`~.triton_kernels.distance_kernel`,
   one ``N x N`` pass, the Huber sum and ``dL/dQ``;
3. angle loss (if ``angle_weight``): one launch of :func:`~.triton_kernels.angle_kernel`
   over the upper block triangle of tiles, which adds its ``dL/dQ`` on top;
4. the student's gradient from ``dL/dQ``: :func:`~.triton_kernels.gradient_kernel`
   (the chain rule through ``Q``, ``tl.dot`` in full float32).

The loss and its gradient come out of the same forward pass, like
``_AngleLossFunction`` in :mod:`rkd_tutorial.losses.relational`: the backward
pass only multiplies the stored gradient by ``grad_output``.

Memory: seven ``N x N`` float32 matrices (``Q``, ``U``, ``B`` of student
and teacher, ``dL/dQ``) and the gradient: about 450 MiB at ``N = 4096``,
29 MiB at ``N = 1024``.
"""

from __future__ import annotations

import functools
import math

import torch
import triton

from . import triton_kernels as K
from .env import interpreter_enabled

__all__ = ["rkd_loss", "launch_config"]

#: Tile edge of the angle kernel (pairs ``(b, c)`` per program: BLOCK^2).
ANGLE_BLOCK = 64
#: Anchors the angle kernel's loop prefetches ahead (``tl.range(num_stages=...)``; 1: none).
ANGLE_STAGES = 3
#: Warps per angle program: 4 warps x 32 threads hold a 64 x 64 tile as 32 values each.
ANGLE_WARPS = 4
#: Tile edge of the ``N x N`` passes (squared distances, distance loss).
PAIR_BLOCK = 64
#: Rows of the gradient per program (and the ``b`` step of its ``tl.dot`` loop).
GRAD_BLOCK = 32
#: Angle programs resident per streaming multiprocessor: 248 registers x 128 threads
#: (``python -m rkd_tutorial.kernels.aot``) leave room for 2 in 64K registers.
PROGRAMS_PER_SM = 2
#: Start each angle program at a different anchor (see ``angle_kernel``); False: all in lock-step.
STAGGER = True
#: Fewest anchors one angle program walks over (so the tile load pays off).
MIN_ANCHORS_PER_PROGRAM = 8
#: Accept an anchor split once the last wave of programs is this full on average.
WAVE_EFFICIENCY = 0.9
#: Largest batch whose padded ``N x N`` buffers fit the kernels' 32-bit offsets.
MAX_N = 46272


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


@functools.lru_cache(maxsize=256)
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


def _forward(student, teacher, distance_weight, angle_weight, want_grad, block, anchor_splits):
    """Loss (float32 0-d tensor) and, if ``want_grad``, ``dL/dstudent`` (float32, ``N x Ds``)."""
    n = student.shape[0]
    device = student.device
    with_angle = bool(angle_weight) and n >= 3
    with_distance = bool(distance_weight)
    angle_launch = launch_config(n, device, block, anchor_splits) if with_angle else None
    # Row stride (and size) of the N x N buffers: N rounded up to whole tiles.
    tile = max(PAIR_BLOCK, angle_launch[0] if with_angle else PAIR_BLOCK)
    ld = -(-n // tile) * tile

    # 1. Squared distances (and U, B, the sums of distances) of both networks, one launch.
    stats = torch.zeros(4, dtype=torch.float32, device=device)  # see triton_kernels
    q = torch.empty((2, ld, ld), dtype=torch.float32, device=device)
    u, b = (torch.empty_like(q), torch.empty_like(q)) if with_angle else (q, q)
    K.pair_geometry_kernel[(ld // PAIR_BLOCK, ld // PAIR_BLOCK, 2)](
        student, teacher, student.stride(0), teacher.stride(0), student.shape[1], teacher.shape[1],
        q, u, b, stats, n, ld,
        BLOCK=PAIR_BLOCK, EPS=K.EPS, EPS2=K.EPS**2, WITH_ANGLE=with_angle, WITH_DISTANCE=with_distance,
        num_warps=4,
    )
    dq = None
    if want_grad:
        # The distance pass stores every entry; without it the angle kernel adds onto zeros.
        dq = (torch.empty if with_distance else torch.zeros)((ld, ld), dtype=torch.float32, device=device)

    # 2. Distance loss (Eq. 5): one pass over the pairs.
    if with_distance:
        grid = (-(-n // PAIR_BLOCK), -(-n // PAIR_BLOCK))
        K.distance_kernel[grid](q[0], q[1], stats, dq if want_grad else stats, n, ld, distance_weight / n**2,
                                BLOCK=PAIR_BLOCK, EPS=K.EPS, WANT_GRAD=bool(want_grad), num_warps=4)

    # 3. Angle loss (Eq. 7): the N^3 part.
    if with_angle:
        blk, tiles, per_program, grid, num_warps = angle_launch
        tile_b, tile_c = _tile_pairs(tiles, device)
        K.angle_kernel[grid](
            q[0], q[1], u[0], u[1], b[0], b[1], dq if want_grad else stats, stats, tile_b, tile_c,
            n, ld, per_program, max(1, per_program // (2 * tiles)) if STAGGER else 0, angle_weight / n**3,
            BLOCK=blk, STAGES=ANGLE_STAGES, WANT_GRAD=bool(want_grad), num_warps=num_warps,
        )

    # 4. The student's gradient from dL/dQ.
    grad = None
    if want_grad:
        d = student.shape[1]
        grad = torch.empty((n, d), dtype=torch.float32, device=device)
        block_d = min(64, max(16, triton.next_power_of_2(d)))
        K.gradient_kernel[(-(-n // GRAD_BLOCK), -(-d // block_d))](
            student, student.stride(0), student.mean(dim=0, dtype=torch.float32), dq, q[0], stats, grad,
            n, ld, d, distance_weight / n**2,
            BLOCK=GRAD_BLOCK, BLOCK_D=block_d, EPS=K.EPS, WITH_DISTANCE=with_distance, num_warps=4,
        )
    return stats[2], grad  # the loss: both terms, weighted and normalised by the kernels


def _kernel_inputs(student, teacher):
    """What the kernels read: one dtype for both (float32 when they differ), contiguous rows.

    No copy in the usual case (two contiguous tensors of one dtype). Contiguous,
    the row stride is ``D``, which ``_check`` has bounded for 32-bit offsets.
    """
    if student.dtype != teacher.dtype:
        student, teacher = student.float(), teacher.float()
    return student.contiguous(), teacher.contiguous()


class _RKDFunction(torch.autograd.Function):
    """``distance_weight * L_D + angle_weight * L_A`` with its gradient computed in the forward pass."""

    @staticmethod
    def forward(ctx, student, teacher, distance_weight, angle_weight, want_grad, block, anchor_splits):
        xs, xt = _kernel_inputs(student, teacher)
        loss, grad = _forward(xs, xt, distance_weight, angle_weight, want_grad, block, anchor_splits)
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
