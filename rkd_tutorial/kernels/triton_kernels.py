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
  :func:`gradient_kernel` turns it into the gradient:
  ``dL/dx_a = 2 sum_b (DQ_ab + DQ_ba) (x_a - x_b)``
  (:func:`rkd_tutorial.kernels.check.gradient_from_dq` is the same in torch).

Four kernels, launched in this order by :mod:`.functions`:
:func:`pair_geometry_kernel` (both networks, one launch; also ``STATS[0:2]``),
:func:`distance_kernel`, :func:`angle_kernel`, :func:`gradient_kernel`.

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
``tl.dot`` (full float32), ``tl.atomic_add`` (relaxed), loops with run-time bounds (``tl.range`` with
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


@triton.jit(do_not_specialize=["STRIDE_S", "STRIDE_T", "DS", "DT"])
def pair_geometry_kernel(
    XS, XT, STRIDE_S, STRIDE_T, DS, DT, Q, U, B, STATS, N, LD,
    BLOCK: tl.constexpr, EPS: tl.constexpr, EPS2: tl.constexpr,
    WITH_ANGLE: tl.constexpr, WITH_DISTANCE: tl.constexpr,
):
    """One ``BLOCK x BLOCK`` tile of ``Q_ij = sum_k (x_ik - x_jk)^2`` (and of ``U``, ``B``).

    One launch serves both networks: ``program_id(2)`` is the side, 0 for
    the student ``XS`` (``N x DS``, row stride ``STRIDE_S``), 1 for the
    teacher ``XT``. ``Q``, ``U``, ``B`` are ``2 x LD x LD`` buffers (student,
    then teacher); the grid covers them whole, and the padding (``i >= N`` or
    ``j >= N``) gets zeros. With ``WITH_ANGLE`` the tile also stores the
    per-pair factors of the angle kernel, ``U_ij = 1 / d_ij`` and
    ``B_ij = d_ij / 2``, both 0 for coincident points (``Q_ij <= EPS2``; also
    on the diagonal) and in the padding. With ``WITH_DISTANCE`` it adds the
    tile's sum of distances (Eq. 3, diagonal excluded) to ``STATS[side]``,
    for the mean distance ``mu`` of Eq. (4).
    """
    side = tl.program_id(2)
    if side == 0:
        X = XS
        stride = STRIDE_S
        D = DS
    else:
        X = XT
        stride = STRIDE_T
        D = DT
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    in_i = offs_i < N
    in_j = offs_j < N
    acc = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    for k in tl.range(0, D):
        x_i = tl.load(X + offs_i * stride + k, mask=in_i, other=0.0).to(tl.float32)
        x_j = tl.load(X + offs_j * stride + k, mask=in_j, other=0.0).to(tl.float32)
        diff = x_i[:, None] - x_j[None, :]
        acc += diff * diff
    # This side's matrix (64-bit offset: 2 LD^2 can exceed 2^31), then the tile inside it.
    Q += side.to(tl.int64) * LD * LD
    U += side.to(tl.int64) * LD * LD
    B += side.to(tl.int64) * LD * LD
    pairs = offs_i[:, None] * LD + offs_j[None, :]
    valid = in_i[:, None] & in_j[None, :]
    q = tl.where(valid, acc, 0.0)
    tl.store(Q + pairs, q)
    if WITH_ANGLE:
        u = tl.where(q > EPS2, 1.0 / tl.sqrt(tl.maximum(q, EPS2)), 0.0)
        tl.store(U + pairs, u)
        tl.store(B + pairs, 0.5 * q * u)
    if WITH_DISTANCE:
        off_diag = valid & (offs_i[:, None] != offs_j[None, :])
        d = tl.where(off_diag, tl.sqrt(tl.maximum(q, EPS)), 0.0)
        tl.atomic_add(STATS + side, tl.sum(d), sem="relaxed")


# ---------------------------------------------------------------------------
# Distance-wise loss, Eq. (3)-(5): one light pass over the N x N pairs.
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
def distance_kernel(QS, QT, STATS, DQ, N, LD, scale, BLOCK: tl.constexpr, EPS: tl.constexpr, WANT_GRAD: tl.constexpr):
    """The distance loss of one tile of pairs, after the geometry kernel has summed the distances.

    With ``mu = STATS[0] / (N (N-1))`` (student; teacher: ``STATS[1]``),
    ``x_ij = d_s,ij / mu_s - d_t,ij / mu_t`` (Eq. 4) and ``clip = h'(x)``:

    * ``STATS[2] += scale * sum h(x)`` (Eq. 5, ``scale = distance_weight / N^2``);
    * ``STATS[3] += sum clip * d_s`` (for the gradient through ``mu_s``);
    * with ``WANT_GRAD``, *store* (not add: this pass runs before the angle
      kernel) the part of ``dL/dQ_ij`` that needs no global sum::

          L = scale * sum_ij h(d_ij / mu - t_ij),  mu = sum_{i != j} d_ij / (N (N-1))
          dL/dd_ij = scale * (clip_ij / mu - K / (N (N-1))),   K = sum_kl clip_kl d_kl / mu^2
          dL/dQ_ij = dL/dd_ij / (2 d_ij)                        (d = sqrt(Q))

      The ``K`` term needs this whole pass first; :func:`gradient_kernel`
      adds it.
    """
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    pairs = N * (N - 1)
    mu_s = tl.maximum(tl.load(STATS + 0) / pairs, EPS)
    mu_t = tl.maximum(tl.load(STATS + 1) / pairs, EPS)
    d_s, half_inv_d_s = _pair_distances(QS, offs_i, offs_j, N, LD, EPS)
    d_t, _ = _pair_distances(QT, offs_i, offs_j, N, LD, EPS)
    diff = d_s / mu_s - d_t / mu_t
    clip = tl.minimum(tl.maximum(diff, -1.0), 1.0)
    tl.atomic_add(STATS + 2, tl.sum(clip * (diff - 0.5 * clip)) * scale, sem="relaxed")
    if WANT_GRAD:
        tl.atomic_add(STATS + 3, tl.sum(clip * d_s), sem="relaxed")
        in_ij = (offs_i < N)[:, None] & (offs_j < N)[None, :]
        tl.store(DQ + offs_i[:, None] * LD + offs_j[None, :], (scale / mu_s) * clip * half_inv_d_s, mask=in_ij)


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


# ---------------------------------------------------------------------------
# The student's gradient from dL/dQ, O(N^2 D).
# ---------------------------------------------------------------------------


@triton.jit
def gradient_kernel(
    X, STRIDE, MEAN, DQ, QS, STATS, G, N, LD, D, dist_scale,
    BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, EPS: tl.constexpr, WITH_DISTANCE: tl.constexpr,
):
    """Rows ``a`` x columns ``k`` of ``G = dL/dX`` from ``DQ = dL/dQ`` (both losses' terms).

    ``L`` depends on ``X`` only through ``Q_ab = ||x_a - x_b||^2``, and
    ``dQ_ab/dx_a = 2 (x_a - x_b)`` (likewise for ``x_b``), so with
    ``A = DQ + DQ^T`` (diagonal left out: ``Q_aa = 0`` always)::

        dL/dx_a = 2 sum_b A_ab (x_a - x_b) = 2 (rowsum(A)_a x_a - (A X)_a)

    A program loops over blocks of ``b``: it adds up the row sums and
    ``A X`` with ``tl.dot`` in full float32 (``input_precision="ieee"``, no
    TF32). The rows are centred first (``MEAN``, the batch mean): the result
    is the same in exact arithmetic (translation invariance), but the
    difference of the two terms loses fewer digits. With ``WITH_DISTANCE`` it
    also adds the distance loss's ``K`` term (see :func:`distance_kernel`),
    ``2 * (-dist_scale K / (N (N-1))) / (2 d_ab)``, from ``QS`` and ``STATS``.
    Padding entries of ``DQ`` are never read.
    """
    offs_a = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_k = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    in_a = offs_a < N
    in_k = offs_k < D
    mean = tl.load(MEAN + offs_k, mask=in_k, other=0.0)
    coef = 0.0
    if WITH_DISTANCE:
        pairs = N * (N - 1)
        mu = tl.maximum(tl.load(STATS + 0) / pairs, EPS)
        coef = -dist_scale * (tl.load(STATS + 3) / (mu * mu)) / pairs
    rowsum = tl.zeros([BLOCK], dtype=tl.float32)
    acc = tl.zeros([BLOCK, BLOCK_D], dtype=tl.float32)
    for b0 in tl.range(0, N, BLOCK):
        offs_b = b0 + tl.arange(0, BLOCK)
        in_b = offs_b < N
        m = in_a[:, None] & in_b[None, :] & (offs_a[:, None] != offs_b[None, :])
        a_ab = tl.load(DQ + offs_a[:, None] * LD + offs_b[None, :], mask=m, other=0.0)
        a_ab += tl.load(DQ + offs_b[None, :] * LD + offs_a[:, None], mask=m, other=0.0)
        if WITH_DISTANCE:
            q = tl.load(QS + offs_a[:, None] * LD + offs_b[None, :], mask=m, other=0.0)
            a_ab += tl.where(m & (q > EPS), coef / tl.sqrt(tl.maximum(q, EPS)), 0.0)
        rowsum += tl.sum(a_ab, axis=1)
        x_b = tl.load(X + offs_b[:, None] * STRIDE + offs_k[None, :], mask=in_b[:, None] & in_k[None, :], other=0.0)
        x_b = tl.where(in_b[:, None], x_b.to(tl.float32) - mean[None, :], 0.0)
        acc = tl.dot(a_ab, x_b, acc, input_precision="ieee")
    x_a = tl.load(X + offs_a[:, None] * STRIDE + offs_k[None, :], mask=in_a[:, None] & in_k[None, :], other=0.0)
    x_a = x_a.to(tl.float32) - mean[None, :]
    g = 2.0 * (rowsum[:, None] * x_a - acc)
    tl.store(G + offs_a[:, None] * D + offs_k[None, :], g, mask=in_a[:, None] & in_k[None, :])
