"""The Triton kernels of RKD: squared distances in, loss sums and ``dL/dQ`` out.

Everything RKD needs is in the two matrices of squared distances
``Q_ij = ||x_i - x_j||^2`` (student ``QS`` and teacher ``QT``, ``N x N``
float32, row-major), computed first by :func:`sqdist_kernel`:

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
  [2]   sum over all pairs of Huber(psi_D student - psi_D teacher)
  [3]   sum over all pairs of h'(...) * d_s  (needed for ``dL/dmu_s``)
  [4]   the angle loss, already weighted and divided by ``N^3``
  ====  ============================================================

* ``DQ``, the ``N x N`` derivative of the weighted loss with respect to the
  student's squared distances, each entry ``Q_ij`` of the formulas treated as
  its own variable (``DQ`` need not be symmetric; its diagonal is unused).
  :func:`rkd_tutorial.kernels.functions._gradient_from_dq` turns it into the
  gradient: ``dL/dx_a = 2 sum_b (DQ_ab + DQ_ba) (x_a - x_b)``.

Notation inside the angle kernel (one anchor ``a`` at a time, ``b`` and ``c``
index a tile):

* ``u_ab = 1 / d_ab``, and ``beta_ab = d_ab / 2`` -- both 0 when the two
  points coincide (``d_ab <= 1e-12``: a zero vector has no direction);
* ``H_bc = Q_bc / 2``; the cosine is then three multiply-adds::

      cos_abc = u_ab (beta_ac - u_ac H_bc) + beta_ab u_ac

* Huber with delta 1 of ``x = cos_s - cos_t`` and its derivative, with
  ``clip = clamp(x, -1, 1) = h'(x)``: ``h(x) = clip * (x - clip / 2)``.

Only plain Triton is used: masked ``tl.load``/``tl.store``, ``tl.sum``,
``tl.atomic_add`` (relaxed), loops with run-time bounds. The same source runs
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
def sqdist_kernel(XT, Q, N, D, BLOCK: tl.constexpr, UNROLL: tl.constexpr):
    """``Q_ij = sum_k (x_ik - x_jk)^2`` for one ``BLOCK x BLOCK`` tile; ``XT`` is ``X^T`` (``D x N``)."""
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    in_i = offs_i < N
    in_j = offs_j < N
    acc = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    for k0 in range(0, D, UNROLL):
        for kk in tl.static_range(UNROLL):
            k = k0 + kk
            x_i = tl.load(XT + k * N + offs_i, mask=in_i & (k < D), other=0.0)
            x_j = tl.load(XT + k * N + offs_j, mask=in_j & (k < D), other=0.0)
            diff = x_i[:, None] - x_j[None, :]
            acc += diff * diff
    tl.store(Q + offs_i[:, None] * N + offs_j[None, :], acc, mask=in_i[:, None] & in_j[None, :])


# ---------------------------------------------------------------------------
# Distance-wise loss, Eq. (3)-(5): three light passes over the N x N pairs.
# ---------------------------------------------------------------------------


@triton.jit
def _pair_distances(Q, offs_i, offs_j, N, EPS: tl.constexpr):
    """Distances of a tile of pairs from squared distances.

    Returns ``(d, half_inv_d)``: ``d_ij = sqrt(max(Q_ij, EPS))`` off the
    diagonal and 0 on it (and outside the matrix); ``half_inv_d = dd/dQ =
    1 / (2 d)`` where the distance has a gradient (off-diagonal,
    ``Q_ij > EPS``), else 0 -- the clamp of ``pairwise_distances`` has zero
    gradient below ``EPS``.
    """
    in_i = offs_i < N
    in_j = offs_j < N
    q = tl.load(Q + offs_i[:, None] * N + offs_j[None, :], mask=in_i[:, None] & in_j[None, :], other=0.0)
    off_diag = (offs_i[:, None] != offs_j[None, :]) & in_i[:, None] & in_j[None, :]
    root = tl.sqrt(tl.maximum(q, EPS))
    d = tl.where(off_diag, root, 0.0)
    half_inv_d = tl.where(off_diag & (q > EPS), 0.5 / root, 0.0)
    return d, half_inv_d


@triton.jit
def distance_sums_kernel(QS, QT, STATS, N, BLOCK: tl.constexpr, EPS: tl.constexpr):
    """Pass 1: ``STATS[0] += sum d_s``, ``STATS[1] += sum d_t`` over one tile of pairs."""
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    d_s, _ = _pair_distances(QS, offs_i, offs_j, N, EPS)
    d_t, _ = _pair_distances(QT, offs_i, offs_j, N, EPS)
    tl.atomic_add(STATS + 0, tl.sum(d_s), sem="relaxed")
    tl.atomic_add(STATS + 1, tl.sum(d_t), sem="relaxed")


@triton.jit
def _distance_potentials(QS, QT, STATS, offs_i, offs_j, N, EPS: tl.constexpr):
    """psi_D of Eq. (4) for student and teacher, the Huber derivative ``clip``, and helpers."""
    pairs = N * (N - 1)
    mu_s = tl.maximum(tl.load(STATS + 0) / pairs, EPS)
    mu_t = tl.maximum(tl.load(STATS + 1) / pairs, EPS)
    d_s, half_inv_d_s = _pair_distances(QS, offs_i, offs_j, N, EPS)
    d_t, _ = _pair_distances(QT, offs_i, offs_j, N, EPS)
    diff = d_s / mu_s - d_t / mu_t
    clip = tl.minimum(tl.maximum(diff, -1.0), 1.0)
    return diff, clip, d_s, half_inv_d_s, mu_s


@triton.jit
def distance_loss_kernel(QS, QT, STATS, N, BLOCK: tl.constexpr, EPS: tl.constexpr):
    """Pass 2: ``STATS[2] += sum Huber(psi_s - psi_t)``, ``STATS[3] += sum clip * d_s``."""
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    diff, clip, d_s, _, _ = _distance_potentials(QS, QT, STATS, offs_i, offs_j, N, EPS)
    tl.atomic_add(STATS + 2, tl.sum(clip * (diff - 0.5 * clip)), sem="relaxed")
    tl.atomic_add(STATS + 3, tl.sum(clip * d_s), sem="relaxed")


@triton.jit
def distance_grad_kernel(QS, QT, STATS, DQ, N, scale, BLOCK: tl.constexpr, EPS: tl.constexpr):
    """Pass 3: *store* (not add) the distance loss's ``dL/dQ_ij`` into ``DQ``; it runs before the angle kernel.

    With ``L = scale * sum_ij h(d_ij / mu - t_ij)`` and ``mu = sum_{i != j} d_ij / (N (N-1))``::

        dL/dd_ij = scale * (clip_ij / mu - K / (N (N-1))),   K = sum_kl clip_kl d_kl / mu^2
        dL/dQ_ij = dL/dd_ij / (2 d_ij)                        (d = sqrt(Q))
    """
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    _, clip, _, half_inv_d_s, mu_s = _distance_potentials(QS, QT, STATS, offs_i, offs_j, N, EPS)
    k = tl.load(STATS + 3) / (mu_s * mu_s)
    dl_dd = scale * (clip / mu_s - k / (N * (N - 1)))
    in_ij = (offs_i < N)[:, None] & (offs_j < N)[None, :]
    tl.store(DQ + offs_i[:, None] * N + offs_j[None, :], dl_dd * half_inv_d_s, mask=in_ij)


# ---------------------------------------------------------------------------
# Angle-wise loss, Eq. (6)-(7): the N^3 part.
# ---------------------------------------------------------------------------


@triton.jit
def angle_kernel(
    QS, QT, DQ, STATS, TILE_B, TILE_C, N, anchors_per_program, scale,
    BLOCK: tl.constexpr, EPS2: tl.constexpr, WANT_GRAD: tl.constexpr,
):
    """RKD-A over one tile ``(b, c)`` of pairs (``c``-tile >= ``b``-tile) and a range of anchors.

    Program ``(t, s)`` owns the tile ``(TILE_B[t], TILE_C[t])`` of the upper
    block triangle -- ``cos_abc = cos_acb``, so a tile off the block diagonal
    stands for itself and its mirror image (weight 2) -- and the anchors
    ``a`` in ``[s * anchors_per_program, (s + 1) * anchors_per_program)``.
    ``EPS2`` is ``EPS**2``: a pair is coincident when ``Q_ab = d_ab^2 <= EPS2``.

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
    in_b = offs_b < N
    in_c = offs_c < N
    pairs = offs_b[:, None] * N + offs_c[None, :]
    in_bc = in_b[:, None] & in_c[None, :]

    # Half the squared distances of the tile, student and teacher: in registers for all anchors.
    hs_bc = 0.5 * tl.load(QS + pairs, mask=in_bc, other=0.0)
    ht_bc = 0.5 * tl.load(QT + pairs, mask=in_bc, other=0.0)

    loss_acc = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    dq_bc = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)

    # Software pipelining by hand: row a + 1 of Q_s and Q_t is loaded while row a is used.
    # (The helpers are written out inline: Triton's CPU interpreter pays per helper call.)
    qs_ab = tl.load(QS + a_start * N + offs_b, mask=in_b, other=0.0)
    qs_ac = tl.load(QS + a_start * N + offs_c, mask=in_c, other=0.0)
    qt_ab = tl.load(QT + a_start * N + offs_b, mask=in_b, other=0.0)
    qt_ac = tl.load(QT + a_start * N + offs_c, mask=in_c, other=0.0)
    for a in range(a_start, a_end):
        nxt = tl.minimum(a + 1, N - 1) * N
        nqs_ab = tl.load(QS + nxt + offs_b, mask=in_b, other=0.0)
        nqs_ac = tl.load(QS + nxt + offs_c, mask=in_c, other=0.0)
        nqt_ab = tl.load(QT + nxt + offs_b, mask=in_b, other=0.0)
        nqt_ac = tl.load(QT + nxt + offs_c, mask=in_c, other=0.0)

        # u = 1 / d and beta = d / 2 for the pairs (a, b) and (a, c); both 0 for a coincident
        # pair (and for padding, where q = 0): its unit vector e_ab of Eq. (6) is 0.
        us_b = tl.where(qs_ab > EPS2, 1.0 / tl.sqrt(tl.maximum(qs_ab, EPS2)), 0.0)
        us_c = tl.where(qs_ac > EPS2, 1.0 / tl.sqrt(tl.maximum(qs_ac, EPS2)), 0.0)
        ut_b = tl.where(qt_ab > EPS2, 1.0 / tl.sqrt(tl.maximum(qt_ab, EPS2)), 0.0)
        ut_c = tl.where(qt_ac > EPS2, 1.0 / tl.sqrt(tl.maximum(qt_ac, EPS2)), 0.0)
        bs_b = 0.5 * qs_ab * us_b
        bs_c = 0.5 * qs_ac * us_c
        bt_b = 0.5 * qt_ab * ut_b
        bt_c = 0.5 * qt_ac * ut_c

        # Eq. (6) by the law of cosines, student and teacher.
        cos_s = us_b[:, None] * (bs_c[None, :] - us_c[None, :] * hs_bc) + bs_b[:, None] * us_c[None, :]
        cos_t = ut_b[:, None] * (bt_c[None, :] - ut_c[None, :] * ht_bc) + bt_b[:, None] * ut_c[None, :]

        # Eq. (7): Huber loss (delta 1) and its derivative.
        diff = cos_s - cos_t
        clip = tl.minimum(tl.maximum(diff, -1.0), 1.0)
        loss_acc += clip * (diff - 0.5 * clip)

        if WANT_GRAD:
            dq_bc += clip * (us_b[:, None] * us_c[None, :])
            row = tl.sum(clip * (us_c[None, :] - us_b[:, None] * cos_s), axis=1) * us_b
            col = tl.sum(clip * (us_b[:, None] - us_c[None, :] * cos_s), axis=0) * us_c
            # Both orders (a, b, c) and (a, c, b) feed Q_ab, which cancels the 1/2. The
            # column sums belong to the mirror tile, which exists only off the diagonal.
            tl.atomic_add(DQ + a * N + offs_b, row * scale, mask=in_b, sem="relaxed")
            tl.atomic_add(DQ + a * N + offs_c, col * scale, mask=in_c & off_diag, sem="relaxed")

        qs_ab, qs_ac, qt_ab, qt_ac = nqs_ab, nqs_ac, nqt_ab, nqt_ac

    if WANT_GRAD:
        tl.atomic_add(DQ + pairs, dq_bc * (-0.5 * weight * scale), mask=in_bc, sem="relaxed")
    tl.atomic_add(STATS + 4, tl.sum(loss_acc) * (weight * scale), sem="relaxed")
