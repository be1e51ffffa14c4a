"""Relational knowledge distillation: the distance-wise and angle-wise losses.

Park, Kim, Lu, Cho, *Relational Knowledge Distillation*, CVPR 2019
(arXiv:1904.05068), Section 3.2. Notation of the paper: ``t_i`` are the
teacher's outputs, ``s_i`` the student's, for the ``N`` examples of a batch.

* Distance-wise potential, Eq. (3)-(4)::

      psi_D(t_i, t_j) = ||t_i - t_j||_2 / mu,
      mu = mean of ||t_i - t_j|| over i != j

* Angle-wise potential, Eq. (6)::

      psi_A(t_i, t_j, t_k) = cos angle(t_i t_j t_k) = < e_ij , e_kj >,
      e_ij = (t_i - t_j) / ||t_i - t_j||

  the angle at vertex ``t_j``; below the vertex is called the anchor ``a`` and
  the two other points ``b`` and ``c``.

* Both losses, Eq. (5) and (7), compare the student's and the teacher's
  potentials with the Huber loss (smooth L1, delta = 1)::

      L_RKD-D = mean over all N^2 pairs of
                l_delta(psi_D(t_i, t_j), psi_D(s_i, s_j))
      L_RKD-A = mean over all N^3 triplets of
                l_delta(psi_A(t_i, t_j, t_k), psi_A(s_i, s_j, s_k))

Conventions, those of the official code (github.com/lenscloth/RKD): the
diagonal of the distance matrix is 0; angle entries whose ``b`` or ``c`` equals
the anchor are 0 (a zero vector normalises to zero); the mean runs over all
``N^2`` (``N^3``) entries, degenerate ones included; the teacher side carries no
gradient. The mean distance ``mu`` is taken over the ``N (N - 1)`` off-diagonal
pairs; the official ``d[d > 0].mean()`` is the same average, because its
distances are clamped to at least ``1e-6`` before the mask (``sqrt`` of
``clamp(d^2, 1e-12)``), so every off-diagonal pair counts there too. Ours needs
no boolean mask, so it never synchronises with the GPU.

Coincident points. Both losses use one rule: two points closer than
:data:`EPS` coincide. Their distance is 0 (the official code gives them
``1e-6``, a difference of ``1e-6 / mu`` in one entry) and their direction is
the zero vector, and neither carries a gradient.

Precision. Inputs in float16 or bfloat16 are upcast to float32 inside the
losses (a squared distance above 65504 overflows float16), and the loss comes
back in float32. Distances are computed from the differences ``x_i - x_j``
(:func:`torch.cdist` without the Gram-matrix shortcut), so a large common
offset or coincident points cost no accuracy.

The student and the teacher may have different widths (``Ds != Dt``): only
relations among examples are compared, never the coordinates themselves.

Memory. The direct angle formulation builds the ``N x N x D`` tensor of
differences (about 21 GiB at N = 1024, D = 512 in float32, forward and
backward: measured in chapter 3). :func:`rkd_angle_loss` instead walks over
chunks of anchors and computes the loss *and* its gradient in the same pass
(Eq. (7) has a closed-form gradient, derived in :class:`_AngleLossFunction`),
so its peak memory is ``O(N^2)`` plus one chunk, in the backward pass too.
The price: RKD-A can be differentiated once, not twice (a second derivative,
e.g. a gradient penalty, raises an error that says so; RKD-D can).
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "check_pair",
    "pairwise_distances",
    "distance_potential",
    "angle_potential",
    "rkd_distance_loss",
    "rkd_angle_loss",
    "RKDDistance",
    "RKDAngle",
    "RKDLoss",
]

#: Two points closer than this coincide: distance 0, direction the zero vector, no gradient.
EPS = 1e-12

#: Elements of one anchor chunk (``chunk x N x (N + D)``) the angle loss may hold at once.
CHUNK_ELEMENTS = 1 << 24


def check_pair(
    student: torch.Tensor, teacher: torch.Tensor, min_n: int, name: str
) -> None:
    """Raise ``ValueError`` with a helpful message unless (student, teacher) is a valid batch.

    Shapes and dtypes are checked everywhere; the values (no NaN or inf) only
    for CPU tensors, because on a GPU that check is a host synchronisation.
    """
    for side, x in (("student", student), ("teacher", teacher)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(
                f"{name}: {side} must be a torch.Tensor, got {type(x).__name__}"
            )
        if x.dim() != 2:
            raise ValueError(
                f"{name}: {side} must be a 2-D batch of embeddings (N x D), got shape "
                f"{tuple(x.shape)}; flatten feature maps first, e.g. x.flatten(1)"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"{name}: {side} must be a floating-point tensor, got {x.dtype}"
            )
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"{name}: student and teacher must describe the same examples, got batch sizes "
            f"{student.shape[0]} (student) and {teacher.shape[0]} (teacher)"
        )
    if student.shape[0] < min_n:
        raise ValueError(
            f"{name}: needs a batch of at least {min_n} examples to form relations, "
            f"got {student.shape[0]}"
        )
    for side, x in (("student", student), ("teacher", teacher)):
        if x.is_cuda:
            # Reading a GPU value on the host would stall the pipeline on every call.
            # There a NaN or inf input gives a NaN loss, and rkd_tutorial.train.fit
            # stops with a clear error at the end of the epoch.
            continue
        if not torch.isfinite(x).all():
            raise ValueError(
                f"{name}: {side} contains NaN or inf; check the learning rate and the "
                "inputs of the network that produced it"
            )


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 to float32 (the losses' arithmetic needs its range); others as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _pair(student: torch.Tensor, teacher: torch.Tensor):
    """The student upcast (:func:`_upcast`), and the teacher detached in the student's dtype."""
    student = _upcast(student)
    return student, teacher.detach().to(student.dtype)


def _centered(x: torch.Tensor) -> torch.Tensor:
    # Relations are translation invariant; centring keeps the differences below accurate.
    return x - x.mean(dim=0, keepdim=True)


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``||x_i - x_j||`` of the rows of ``x``: ``N x N``.

    The diagonal is zero.

    Computed from the differences (``torch.cdist`` without its Gram-matrix
    shortcut), so coincident rows give exactly 0. Pairs closer than
    :data:`EPS` count as coincident: distance 0 and no gradient.
    """
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    return torch.where(d > EPS, d, torch.zeros_like(d))


def distance_potential(x: torch.Tensor) -> torch.Tensor:
    """Normalised pairwise distances ``psi_D`` (Eq. 3-4): ``N x N``.

    ``d_ij = ||x_i - x_j||`` (:func:`pairwise_distances`) divided by the mean
    of the ``N (N - 1)`` off-diagonal distances. All points coincident:
    all 0.
    """
    n = x.shape[0]
    d = pairwise_distances(x)
    mean = d.sum() / (n * (n - 1))
    return d / mean.clamp_min(EPS)


def angle_potential(x: torch.Tensor) -> torch.Tensor:
    """All angle potentials ``psi_A`` (Eq. 6): an ``N x N x N`` tensor.

    ``psi[a, b, c] = <e_ab, e_ac>`` with
    ``e_ab = (x_b - x_a) / ||x_b - x_a||``: the cosine of the angle at the
    anchor ``x_a``. Meant for small ``N`` (plots,
    exercises); the loss never builds this tensor.
    """
    e = _unit_differences(x, torch.arange(x.shape[0], device=x.device))[0]
    return e @ e.transpose(1, 2)


def _unit_differences(x: torch.Tensor, anchors: torch.Tensor):
    """Unit vectors ``e[a, b] = (x_b - x_a) / ||x_b - x_a||`` for the given anchors.

    Returns ``(e, inv_norm)``: ``e`` is ``len(anchors) x N x D``, ``inv_norm`` the
    reciprocal norms, 0 where ``x_b`` coincides with ``x_a`` (then ``e = 0``).
    """
    v = x[None, :, :] - x[anchors, None, :]
    norm = v.norm(dim=2, keepdim=True)
    inv_norm = torch.where(
        norm > EPS, 1.0 / norm.clamp_min(EPS), torch.zeros_like(norm)
    )
    return v * inv_norm, inv_norm


#: Set when the fused kernels failed once in this process; the PyTorch path is used from then on.
_KERNELS_FAILED = False
#: Where the fused kernels run.
_KERNEL_DEVICES = ("cuda",)


@functools.lru_cache(maxsize=None)
def _kernels():
    """The fused Triton kernels (:mod:`rkd_tutorial.kernels`), or None where Triton is missing."""
    try:
        from .. import kernels
    except ImportError:
        return None
    return kernels if kernels.available() else None


def _fused(student: torch.Tensor):
    """The Triton kernels where they apply (a CUDA student in float32), else None."""
    if (
        _KERNELS_FAILED
        or student.device.type not in _KERNEL_DEVICES
        or student.dtype != torch.float32
    ):
        return None
    return _kernels()


def _run_fused(fused, student, teacher, distance_weight, angle_weight):
    """The fused kernels' loss, or None (after one warning) where Triton cannot compile or run them.

    A Triton that imports but cannot build kernels for this GPU or driver (an old
    GPU, a missing compiler) must not stop training: the PyTorch path computes
    the same loss, only more slowly.
    """
    global _KERNELS_FAILED
    try:
        return fused.rkd_loss(
            student, teacher, distance_weight, angle_weight
        )
    except Exception as err:  # triton's CompilationError, OutOfResources, a driver's RuntimeError...
        _KERNELS_FAILED = True
        first_line = str(err).splitlines()[0] if str(err) else ""
        warnings.warn(
            f"rkd_tutorial: the fused Triton kernels failed here ({type(err).__name__}: {first_line}); "
            "RKD uses the PyTorch path from now on, which gives the same loss more slowly. "
            "Set RKD_DISABLE_TRITON=1 to skip the kernels from the start.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _huber(diff: torch.Tensor) -> torch.Tensor:
    """Huber loss with delta 1 (PyTorch's smooth L1) of a difference, elementwise."""
    a = diff.abs()
    return torch.where(a < 1.0, 0.5 * diff * diff, a - 0.5)


def _chunk_size(n: int, d: int) -> int:
    return max(1, min(n, CHUNK_ELEMENTS // max(1, n * (n + d))))


class _AngleLossFunction(torch.autograd.Function):
    """RKD-A (Eq. 7) over anchor chunks, with its gradient in the same pass.

    For one anchor ``a`` let ``E_a`` be the ``N x D`` matrix of unit vectors
    ``e_ab`` (student) and ``S_a = E_a E_a^T`` its angle potentials, ``T_a``
    the teacher's. With ``h`` the Huber loss,
    ``L = sum_a sum_bc h(S_a - T_a) / N^3`` and
    ``G_a = h'(S_a - T_a) / N^3`` (``h'`` = clamp to [-1, 1]):

    * ``dL/dE_a = (G_a + G_a^T) E_a = 2 G_a E_a``   (``G_a`` is symmetric)
    * ``dL/dv_ab = (g_b - <g_b, e_ab> e_ab) / ||v_ab||`` with ``g_b`` row
      ``b`` of ``dL/dE_a`` and ``v_ab = x_b - x_a`` (the derivative of
      ``v / ||v||``)
    * ``dL/dx_b += dL/dv_ab`` and ``dL/dx_a -= sum_b dL/dv_ab``.

    The loss is a scalar, so the forward pass stores only ``dL/dx``
    (``N x D``) and the backward pass scales it: no chunk is ever kept for
    later. That gradient is a constant to autograd, so a second derivative
    cannot be taken: the backward pass raises when asked for one
    (``create_graph=True``).
    Coincident pairs (``||v_ab|| <= EPS``) contribute a zero gradient.
    """

    @staticmethod
    def forward(ctx, student, teacher, want_grad: bool):
        n, ds = student.shape
        s, t = _centered(student), _centered(teacher)
        chunk = _chunk_size(n, max(ds, teacher.shape[1]))
        loss = student.new_zeros(())
        grad = torch.zeros_like(student) if want_grad else None
        for start in range(0, n, chunk):
            a = torch.arange(
                start, min(n, start + chunk), device=student.device
            )
            e_s, inv_norm = _unit_differences(s, a)
            e_t, _ = _unit_differences(t, a)
            diff = e_s @ e_s.transpose(1, 2) - e_t @ e_t.transpose(1, 2)
            del e_t
            loss = loss + _huber(diff).sum()
            if want_grad:
                g = 2.0 * (diff.clamp_(-1.0, 1.0) @ e_s)  # dL/dE_a, unscaled
                g = (
                    g - (g * e_s).sum(2, keepdim=True) * e_s
                ) * inv_norm  # dL/dv_ab
                grad += g.sum(0)  # x_b
                grad.index_add_(0, a, -g.sum(1))  # x_a
        scale = 1.0 / n**3
        ctx.want_grad = want_grad
        if want_grad:
            ctx.save_for_backward(grad * scale)
        return loss * scale

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "rkd_angle_loss cannot be differentiated twice (its "
                "gradient is computed in closed form during the forward "
                "pass). For a second derivative use rkd_tutorial.losses."
                "direct.direct_angle_loss, which builds the N x N x D "
                "tensor."
            )
        if not ctx.want_grad:
            raise RuntimeError(
                "rkd_angle_loss: the gradient was not computed in the "
                "forward pass; call it with gradients enabled on a student "
                "that requires grad"
            )
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None


def rkd_distance_loss(
    student: torch.Tensor, teacher: torch.Tensor
) -> torch.Tensor:
    """RKD-D, the distance-wise distillation loss (Eq. 5).

    Args:
        student: ``N x Ds`` student embeddings (receives the gradient).
        teacher: ``N x Dt`` teacher embeddings (detached: no gradient).

    Returns:
        The Huber loss between the normalised distance matrices, averaged
        over all ``N^2`` entries: a scalar tensor (float32 for
        half-precision inputs).
    """
    check_pair(student, teacher, min_n=2, name="rkd_distance_loss")
    student, teacher = _pair(student, teacher)
    if _fused(student) is not None:
        loss = _run_fused(_fused(student), student, teacher, 1.0, 0.0)
        if loss is not None:
            return loss
    with torch.no_grad():
        t = distance_potential(teacher)
    return F.smooth_l1_loss(
        distance_potential(student), t, reduction="mean", beta=1.0
    )


def rkd_angle_loss(
    student: torch.Tensor, teacher: torch.Tensor
) -> torch.Tensor:
    """RKD-A, the angle-wise distillation loss (Eq. 7).

    Args:
        student: ``N x Ds`` student embeddings (receives the gradient).
        teacher: ``N x Dt`` teacher embeddings (detached: no gradient).

    Returns:
        The Huber loss between the angle potentials of all ``N^3`` ordered
        triplets, averaged: a scalar tensor. Computed over chunks of anchors
        with peak memory ``O(N^2)`` plus one chunk, forward and backward.

    On CUDA, when :mod:`rkd_tutorial.kernels` is available, a fused Triton
    kernel computes the same quantity; this function is the CPU path.
    """
    check_pair(student, teacher, min_n=3, name="rkd_angle_loss")
    student, teacher = _pair(student, teacher)
    if _fused(student) is not None:
        loss = _run_fused(_fused(student), student, teacher, 0.0, 1.0)
        if loss is not None:
            return loss
    want_grad = torch.is_grad_enabled() and student.requires_grad
    return _AngleLossFunction.apply(student, teacher, want_grad)


class RKDDistance(nn.Module):
    """Module form of :func:`rkd_distance_loss`: ``RKDDistance()(student, teacher)``."""

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor
    ) -> torch.Tensor:
        return rkd_distance_loss(student, teacher)


class RKDAngle(nn.Module):
    """Module form of :func:`rkd_angle_loss`: ``RKDAngle()(student, teacher)``."""

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor
    ) -> torch.Tensor:
        return rkd_angle_loss(student, teacher)


class RKDLoss(nn.Module):
    """Weighted RKD: ``distance_weight * L_RKD-D + angle_weight * L_RKD-A`` (Eq. 8).

    The paper's weights: 1 and 2 for metric learning (no task loss), 25 and 50
    for classification on the pooled penultimate features (added to
    cross-entropy). A weight of 0 skips that term's computation.
    """

    def __init__(
        self, distance_weight: float = 1.0, angle_weight: float = 2.0
    ):
        super().__init__()
        if (
            distance_weight < 0
            or angle_weight < 0
            or not math.isfinite(distance_weight + angle_weight)
        ):
            raise ValueError(
                f"RKDLoss weights must be finite and >= 0, got distance_weight={distance_weight}, "
                f"angle_weight={angle_weight}"
            )
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor
    ) -> torch.Tensor:
        fused = _fused(_upcast(student))
        if fused is not None:
            # Both terms in one fused pass (float32 inside; float64 keeps the exact path).
            check_pair(
                student,
                teacher,
                min_n=3 if self.angle_weight else 2,
                name="RKDLoss",
            )
            loss = _run_fused(
                fused,
                *_pair(student, teacher),
                self.distance_weight,
                self.angle_weight,
            )
            if loss is not None:
                return loss
        loss = _upcast(student).new_zeros(())
        if self.distance_weight:
            loss = loss + self.distance_weight * rkd_distance_loss(
                student, teacher
            )
        if self.angle_weight:
            loss = loss + self.angle_weight * rkd_angle_loss(
                student, teacher
            )
        return loss

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}"
