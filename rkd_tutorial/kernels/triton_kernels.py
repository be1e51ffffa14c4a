"""The Triton kernels of RKD: squared distances in, loss sums and ``dL/dQ`` out.

Everything RKD needs is in the two matrices of squared distances
``Q_ij = ||x_i - x_j||^2`` (student ``QS`` and teacher ``QT``, ``N x N``
float32, stored in ``LD x LD`` buffers, ``LD`` = ``N`` rounded up to a
multiple of the tile edge, zero-padded: the angle kernel then needs no masks
and Triton can vectorise its loads for every ``N``), computed first by
:func:`pair_geometry_kernel`:

* the distances of Eq. (3) are ``sqrt(Q_ij)``;
* the angle potential of Eq. (6) follows from the law of cosines::

      cos(b a c) = <x_b - x_a, x_c - x_a> / (d_ab d_ac) = (Q_ab + Q_ac - Q_bc) / (2 d_ab d_ac).

Squared distances are formed from differences, not from a Gram matrix
(``|x_i|^2 + |x_j|^2 - 2 <x_i, x_j>``): two coincident points then give
exactly ``Q_ij = 0`` (a BLAS Gram matrix need not be bitwise consistent
between ``<x_i, x_i>`` and ``<x_i, x_j>``, and ``1e-6`` of rounding noise
would give a coincident pair a random direction).

The kernels write into

* ``STATS``, a small float32 vector of global sums (filled with atomics):

  ====  ============================================================
  [0]   sum of the student's off-diagonal distances  (``N (N-1) mu_s``)
  [1]   sum of the teacher's off-diagonal distances  (``N (N-1) mu_t``)
  [2]   the loss: distance_weight / N^2 * sum over pairs of Huber(psi_D s - psi_D t)
        + angle_weight / N^3 * sum over triplets of Huber(psi_A s - psi_A t)
  [3]   sum over all pairs of h'(...) * d_s  (needed for ``dL/dmu_s``)
  ====  ============================================================

* ``DQ``, the ``N x N`` derivative of the weighted loss with respect to the
  student's squared distances, each entry ``Q_ij`` of the formulas treated as
  its own variable (``DQ`` need not be symmetric; its diagonal is unused).
  :func:`rkd_tutorial.kernels.functions._gradient_from_dq` turns it into the
  gradient: ``dL/dx_a = 2 sum_b (DQ_ab + DQ_ba) (x_a - x_b)``.

Notation inside the angle kernel (one anchor ``a`` at a time, ``b`` and ``c``
index a tile):

* ``u_ab = U_ab = 1 / d_ab`` and ``b_ab = B_ab = d_ab / 2``, both 0 when the
  two points coincide (``d_ab <= 1e-12``: a zero vector has no direction),
  precomputed per pair by :func:`pair_geometry_kernel`;
* with ``Q_bc / 2`` of the tile in registers, the cosine is three multiply-adds::

      cos_abc = u_ab (b_ac - u_ac Q_bc / 2) + b_ab u_ac

* Huber with delta 1 of ``x = cos_s - cos_t`` and its derivative, with
  ``clip = clamp(x, -1, 1) = h'(x)``: ``h(x) = clip * (x - clip / 2)``.

Only plain Triton is used: masked ``tl.load``/``tl.store``, ``tl.sum``,
``tl.atomic_add`` (relaxed), loops with run-time bounds (``tl.range`` with
``num_stages`` for the anchor loop, which lets Triton prefetch). The same source runs
on a GPU and under Triton's CPU interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import triton
import triton.language as tl

#: Norms (and, for distances, squared norms) at or below this count as zero, as in
#: :mod:`rkd_tutorial.losses.relational`.
EPS = 1e-12


# ---------------------------------------------------------------------------
# Squared distances, O(N^2 D): the only pass that reads the embeddings.
# ---------------------------------------------------------------------------


@triton.jit
def pair_geometry_kernel(
    XT, Q, U, B, N, LD, D,
    BLOCK: tl.constexpr, UNROLL: tl.constexpr, EPS2: tl.constexpr, WITH_ANGLE: tl.constexpr,
):
    """One ``BLOCK x BLOCK`` tile of ``Q_ij = sum_k (x_ik - x_jk)^2`` (and of ``U``, ``B``).

    ``XT`` is ``X^T`` (``D x LD``, so that column ``k`` of the batch is
    contiguous). The grid covers the whole ``LD x LD`` buffers, whose padding
    (``i >= N`` or ``j >= N``) gets zeros. With ``WITH_ANGLE`` it also stores
    the per-pair factors of the angle kernel, ``U_ij = 1 / d_ij`` and
    ``B_ij = d_ij / 2``, both 0 for coincident points (``Q_ij <= EPS2``; also
    on the diagonal) and in the padding.
    """
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    in_i = offs_i < N
    in_j = offs_j < N
    acc = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    for k0 in range(0, D, UNROLL):
        for kk in tl.static_range(UNROLL):
            k = k0 + kk
            x_i = tl.load(XT + k * LD + offs_i, mask=in_i & (k < D), other=0.0)
            x_j = tl.load(XT + k * LD + offs_j, mask=in_j & (k < D), other=0.0)
            diff = x_i[:, None] - x_j[None, :]
            acc += diff * diff
    pairs = offs_i[:, None] * LD + offs_j[None, :]
    valid = in_i[:, None] & in_j[None, :]
    q = tl.where(valid, acc, 0.0)
    tl.store(Q + pairs, q)
    if WITH_ANGLE:
        u = tl.where(q > EPS2, 1.0 / tl.sqrt(tl.maximum(q, EPS2)), 0.0)
        tl.store(U + pairs, u)
        tl.store(B + pairs, 0.5 * q * u)


# ---------------------------------------------------------------------------
# Distance-wise loss, Eq. (3)-(5): three light passes over the N x N pairs.
# ---------------------------------------------------------------------------


@triton.jit
def _pair_distances(Q, offs_i, offs_j, N, LD, EPS: tl.constexpr):
    """Distances of a tile of pairs from squared distances.

    Returns ``(d, half_inv_d)``: ``d_ij = sqrt(max(Q_ij, EPS))`` off the
    diagonal and 0 on it (and outside the matrix); ``half_inv_d = dd/dQ =
    1 / (2 d)`` where the distance has a gradient (off-diagonal,
    ``Q_ij > EPS``), else 0 -- the clamp of ``pairwise_distances`` has zero
    gradient below ``EPS``.
    """
    in_i = offs_i < N
    in_j = offs_j < N
    q = tl.load(Q + offs_i[:, None] * LD + offs_j[None, :], mask=in_i[:, None] & in_j[None, :], other=0.0)
    off_diag = (offs_i[:, None] != offs_j[None, :]) & in_i[:, None] & in_j[None, :]
    root = tl.sqrt(tl.maximum(q, EPS))
    d = tl.where(off_diag, root, 0.0)
    half_inv_d = tl.where(off_diag & (q > EPS), 0.5 / root, 0.0)
    return d, half_inv_d


@triton.jit
def distance_sums_kernel(QS, QT, STATS, N, LD, BLOCK: tl.constexpr, EPS: tl.constexpr):
    """Pass 1: ``STATS[0] += sum d_s``, ``STATS[1] += sum d_t`` over one tile of pairs."""
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    d_s, _ = _pair_distances(QS, offs_i, offs_j, N, LD, EPS)
    d_t, _ = _pair_distances(QT, offs_i, offs_j, N, LD, EPS)
    tl.atomic_add(STATS + 0, tl.sum(d_s), sem="relaxed")
    tl.atomic_add(STATS + 1, tl.sum(d_t), sem="relaxed")


@triton.jit
def _distance_potentials(QS, QT, STATS, offs_i, offs_j, N, LD, EPS: tl.constexpr):
    """psi_D of Eq. (4) for student and teacher, the Huber derivative ``clip``, and helpers."""
    pairs = N * (N - 1)
    mu_s = tl.maximum(tl.load(STATS + 0) / pairs, EPS)
    mu_t = tl.maximum(tl.load(STATS + 1) / pairs, EPS)
    d_s, half_inv_d_s = _pair_distances(QS, offs_i, offs_j, N, LD, EPS)
    d_t, _ = _pair_distances(QT, offs_i, offs_j, N, LD, EPS)
    diff = d_s / mu_s - d_t / mu_t
    clip = tl.minimum(tl.maximum(diff, -1.0), 1.0)
    return diff, clip, d_s, half_inv_d_s, mu_s


@triton.jit
def distance_loss_kernel(QS, QT, STATS, N, LD, scale, BLOCK: tl.constexpr, EPS: tl.constexpr):
    """Pass 2: ``STATS[2] += scale * sum Huber(psi_s - psi_t)``, ``STATS[3] += sum clip * d_s``."""
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    diff, clip, d_s, _, _ = _distance_potentials(QS, QT, STATS, offs_i, offs_j, N, LD, EPS)
    tl.atomic_add(STATS + 2, tl.sum(clip * (diff - 0.5 * clip)) * scale, sem="relaxed")
    tl.atomic_add(STATS + 3, tl.sum(clip * d_s), sem="relaxed")


@triton.jit
def distance_grad_kernel(QS, QT, STATS, DQ, N, LD, scale, BLOCK: tl.constexpr, EPS: tl.constexpr):
    """Pass 3: *store* (not add) the distance loss's ``dL/dQ_ij`` into ``DQ``; it runs before the angle kernel.

    With ``L = scale * sum_ij h(d_ij / mu - t_ij)`` and ``mu = sum_{i != j} d_ij / (N (N-1))``::

        dL/dd_ij = scale * (clip_ij / mu - K / (N (N-1))),   K = sum_kl clip_kl d_kl / mu^2
        dL/dQ_ij = dL/dd_ij / (2 d_ij)                        (d = sqrt(Q))
    """
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    _, clip, _, half_inv_d_s, mu_s = _distance_potentials(QS, QT, STATS, offs_i, offs_j, N, LD, EPS)
    k = tl.load(STATS + 3) / (mu_s * mu_s)
    dl_dd = scale * (clip / mu_s - k / (N * (N - 1)))
    in_ij = (offs_i < N)[:, None] & (offs_j < N)[None, :]
    tl.store(DQ + offs_i[:, None] * LD + offs_j[None, :], dl_dd * half_inv_d_s, mask=in_ij)


# ---------------------------------------------------------------------------
# Angle-wise loss, Eq. (6)-(7): the N^3 part.
# ---------------------------------------------------------------------------


@triton.jit
def angle_kernel(
    QS, QT, US, UT, BS, BT, DQ, STATS, TILE_B, TILE_C, N, LD, anchors_per_program, stagger, scale,
    BLOCK: tl.constexpr, STAGES: tl.constexpr, WANT_GRAD: tl.constexpr,
):
    """RKD-A over one tile ``(b, c)`` of pairs (``c``-tile >= ``b``-tile) and a range of anchors.

    Program ``(t, s)`` owns the tile ``(TILE_B[t], TILE_C[t])`` of the upper
    block triangle -- ``cos_abc = cos_acb``, so a tile off the block diagonal
    stands for itself and its mirror image (weight 2) -- and the anchors
    ``a`` in ``[s * anchors_per_program, (s + 1) * anchors_per_program)``,
    visited cyclically from an offset ``(TILE_B + TILE_C) * stagger``: programs
    sharing a block of columns then work on different anchors at any moment,
    so their atomic adds to row ``a`` of ``DQ`` do not pile up on the same
    addresses (while ~2 x tiles rows stay hot in L2). Inputs: ``Q`` (squared distances), ``U = 1/d`` and ``B = d/2`` (0 for
    coincident pairs), student ``S`` and teacher ``T``, from
    :func:`pair_geometry_kernel`, all ``LD x LD`` with zero padding.

    Differentiating ``cos_abc = (Q_ab + Q_ac - Q_bc) u_ab u_ac / 2`` with
    ``u_ab = Q_ab^(-1/2)``, and with ``clip = h'(cos_s - cos_t)``::

        dL/dQ_bc += -clip u_ab u_ac / 2
        dL/dQ_ab +=  clip u_ab (u_ac - u_ab cos_abc) / 2     (numerator and d_ab)
        dL/dQ_ac +=  clip u_ac (u_ab - u_ac cos_abc) / 2

    The ``Q_bc`` terms accumulate in registers over all anchors and are
    added to ``DQ`` once at the end; the ``Q_ab`` and ``Q_ac`` terms are
    summed over the tile (a row and a column reduction) and added to row
    ``a`` of ``DQ`` once per anchor. All is multiplied by ``scale``
    (``angle_weight / N^3``). Nothing of size ``N^3`` or ``N x N x D`` exists.
    """
    tile = tl.program_id(0)
    a_start = tl.program_id(1) * anchors_per_program
    a_end = tl.minimum(a_start + anchors_per_program, N)
    tb = tl.load(TILE_B + tile)
    tc = tl.load(TILE_C + tile)
    off_diag = tb != tc
    weight = 1.0 + off_diag.to(tl.float32)  # 2 for a tile that also stands for its mirror image

    offs_b = tb * BLOCK + tl.arange(0, BLOCK)
    offs_c = tc * BLOCK + tl.arange(0, BLOCK)
    pairs = offs_b[:, None] * LD + offs_c[None, :]

    # Half the squared distances of the tile, student and teacher: in registers for all anchors.
    # No masks: the buffers are LD x LD with LD a multiple of BLOCK, and U = B = 0 in the
    # padding, which makes every padded pair's cosine 0 and its contributions 0.
    hs_bc = 0.5 * tl.load(QS + pairs)
    ht_bc = 0.5 * tl.load(QT + pairs)

    loss_acc = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    dq_bc = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)

    count = a_end - a_start
    shift = ((tb + tc) * stagger) % count
    # STAGES > 1: Triton's software pipeliner prefetches the next anchors' rows.
    for i in tl.range(0, count, num_stages=STAGES):
        a = a_start + i + shift
        a = tl.where(a >= a_end, a - count, a)  # cyclic: every anchor of the range once
        row_a = a * LD  # row a of the per-pair factors, at the tile's rows b and columns c
        us_b = tl.load(US + row_a + offs_b)
        us_c = tl.load(US + row_a + offs_c)
        bs_b = tl.load(BS + row_a + offs_b)
        bs_c = tl.load(BS + row_a + offs_c)
        ut_b = tl.load(UT + row_a + offs_b)
        ut_c = tl.load(UT + row_a + offs_c)
        bt_b = tl.load(BT + row_a + offs_b)
        bt_c = tl.load(BT + row_a + offs_c)

        # Eq. (6) by the law of cosines, cos_abc = u_ab (b_ac - u_ac Q_bc / 2) + b_ab u_ac,
        # student and teacher; 0 when b or c coincides with the anchor (u = b = 0).
        cos_s = us_b[:, None] * (bs_c[None, :] - us_c[None, :] * hs_bc) + bs_b[:, None] * us_c[None, :]
        # diff = cos_s - cos_t, the teacher's cosine subtracted term by term (3 multiply-adds).
        diff = (cos_s - bt_b[:, None] * ut_c[None, :]) - ut_b[:, None] * (bt_c[None, :] - ut_c[None, :] * ht_bc)

        # Eq. (7): Huber loss (delta 1) and its derivative.
        clip = tl.minimum(tl.maximum(diff, -1.0), 1.0)
        loss_acc += clip * (diff - 0.5 * clip)

        if WANT_GRAD:
            dq_bc += clip * (us_b[:, None] * us_c[None, :])
            row = tl.sum(clip * (us_c[None, :] - us_b[:, None] * cos_s), axis=1) * us_b
            col = tl.sum(clip * (us_b[:, None] - us_c[None, :] * cos_s), axis=0) * us_c
            # Both orders (a, b, c) and (a, c, b) feed Q_ab, which cancels the 1/2. The
            # column sums belong to the mirror tile, which exists only off the diagonal.
            tl.atomic_add(DQ + row_a + offs_b, row * scale, sem="relaxed")
            tl.atomic_add(DQ + row_a + offs_c, col * scale, mask=off_diag, sem="relaxed")

    if WANT_GRAD:
        tl.atomic_add(DQ + pairs, dq_bc * (-0.5 * weight * scale), sem="relaxed")
    tl.atomic_add(STATS + 2, tl.sum(loss_acc) * (weight * scale), sem="relaxed")
