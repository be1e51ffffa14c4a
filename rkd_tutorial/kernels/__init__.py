"""Fused Triton kernels for RKD-D and RKD-A: loss *and* gradient, no N^3 tensor.

Park, Kim, Lu, Cho, *Relational Knowledge Distillation*, CVPR 2019
(arXiv:1904.05068), Eq. (3)-(8). The semantics are exactly those of
:mod:`rkd_tutorial.losses.relational` (read it first); this subpackage only
changes *how* the numbers are computed, so that a GPU never holds anything of
size ``N^3`` or ``N x N x D``.

The idea in one paragraph. Everything RKD needs is in the ``N x N`` matrix of
squared distances ``Q_ab = ||x_a - x_b||^2`` (student and teacher): the
distances of Eq. (3), and, by the law of cosines, the angle potential at
anchor ``a`` (Eq. 6)::

      cos(b a c) = (Q_ab + Q_ac - Q_bc) / (2 d_ab d_ac).

(Squared distances are computed from the differences, not from a Gram matrix,
so coincident points give exactly 0.) One Triton program keeps a
``BLOCK x BLOCK`` tile ``(b, c)`` in registers and walks over the anchors
``a``: per anchor it loads ``O(BLOCK)`` numbers of row ``a`` and evaluates
``BLOCK^2`` student and teacher cosines, their Huber loss (Eq. 7) and the
derivative of the loss with respect to ``Q`` (``N x N``). Tiles below the
diagonal are skipped (``cos(b a c) = cos(c a b)``). The student's gradient then
follows from ``dL/dQ`` in two matrix products. Nothing of size ``N^3`` or
``N x N x D`` is ever stored. Modules:

* :mod:`.triton_kernels`: the ``@triton.jit`` kernels (angle, and the three
  small ``N x N`` passes of the distance loss);
* :mod:`.functions`: the host side: centring, squared distances, launches,
  the gradient assembly and the ``torch.autograd.Function``;
* :mod:`.check`: compares them with a float64 reference, the direct
  formulation written out again (``python -m rkd_tutorial.kernels.check``);
* :mod:`.env`: whether Triton and its CPU interpreter are there.

The subpackage imports nothing else of ``rkd_tutorial``: :mod:`rkd_tutorial.losses`
calls it, never the other way round.

Public API (same calling convention as :mod:`rkd_tutorial.losses`):

* :func:`available` -- can the kernels run here?
* :func:`rkd_distance_loss`, :func:`rkd_angle_loss` -- Eq. (5), Eq. (7);
* :func:`rkd_loss` -- ``distance_weight * L_D + angle_weight * L_A`` (Eq. 8),
  both terms in one pass over the squared distances.

Triton is imported lazily: importing this package never fails, and
:func:`available` says whether the kernels can run (Triton importable and
either a CUDA device or Triton's CPU interpreter, ``TRITON_INTERPRET=1``,
which must be set before Triton is first imported).
"""

from __future__ import annotations

import os

from .env import interpreter_enabled, triton_importable

__all__ = ["available", "interpreter_enabled", "rkd_distance_loss", "rkd_angle_loss", "rkd_loss"]


def available() -> bool:
    """True when the kernels can run: Triton importable, and CUDA present or the interpreter on.

    ``RKD_DISABLE_TRITON=1`` in the environment turns them off (the losses then
    take the chunked PyTorch path on every device).
    """
    if os.environ.get("RKD_DISABLE_TRITON", "0") not in ("", "0"):
        return False
    if not triton_importable():
        return False
    if interpreter_enabled():
        return True
    import torch

    return torch.cuda.is_available()


def rkd_loss(student, teacher, distance_weight: float = 1.0, angle_weight: float = 2.0, **launch):
    """``distance_weight * RKD-D + angle_weight * RKD-A`` (Eq. 8) with the fused kernels.

    See :func:`rkd_tutorial.kernels.functions.rkd_loss`.
    """
    from .functions import rkd_loss as _rkd_loss

    return _rkd_loss(student, teacher, distance_weight, angle_weight, **launch)


def rkd_distance_loss(student, teacher, **launch):
    """RKD-D (Eq. 5) with the kernels: ``rkd_loss(student, teacher, 1, 0)``."""
    return rkd_loss(student, teacher, 1.0, 0.0, **launch)


def rkd_angle_loss(student, teacher, **launch):
    """RKD-A (Eq. 7) with the kernels: ``rkd_loss(student, teacher, 0, 1)``."""
    return rkd_loss(student, teacher, 0.0, 1.0, **launch)
