"""Check the fused kernels against a float64 reference.

``python -m rkd_tutorial.kernels.check [--n 5 17 33 70] [--block 16] [--json]``
runs the kernels (on CUDA, or on the CPU under ``TRITON_INTERPRET=1``, which
must be in the environment before Python starts) and prints the relative
errors of the loss and of the student's gradient for RKD-D, RKD-A and
RKD-DA, against :func:`reference_loss` in float64.

The reference is the direct formulation of Eq. (3)-(7) (the official code's,
:mod:`rkd_tutorial.losses.direct`), written out again here so that the kernels
import nothing above them; ``tests/test_kernels.py`` checks that the two agree.
It makes the package's conventions for coincident points explicit
(``relational.py``): such a pair has distance ``sqrt(1e-12)`` and no
direction, and passes no gradient. (The direct angle formulation's
``F.normalize`` would divide a zero difference by ``1e-12`` instead, which
multiplies whatever gradient reaches it by ``1e12``.)
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

EPS = 1e-12

#: Tolerance of the acceptance criterion: relative error of loss and gradient.
RTOL = 1e-4


def potentials(x: torch.Tensor):
    """The distance potentials (``N x N``, Eq. 3-4) and angle potentials (``N^3``, flat, Eq. 6) of ``x``'s rows.

    From the differences ``v[a, b] = x_b - x_a``: distances ``sqrt(max(|v|^2, EPS))``
    off the diagonal, 0 on it, divided by their mean over the ``N (N - 1)``
    pairs; unit vectors ``v / |v|``, 0 for a coincident pair; the angle
    potential at anchor ``a`` is ``<e_ab, e_ac>``.
    """
    n = x.shape[0]
    v = x[None, :, :] - x[:, None, :]
    sq = (v * v).sum(dim=2)
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    d = torch.where(eye, torch.zeros_like(sq), sq.clamp_min(EPS).sqrt())
    norm = v.norm(dim=2, keepdim=True)  # its gradient at 0 is 0 (a sqrt's would be inf)
    keep = norm > EPS
    e = v * torch.where(keep, 1.0 / torch.where(keep, norm, torch.ones_like(norm)), torch.zeros_like(norm))
    return d / (d.sum() / (n * (n - 1))), torch.bmm(e, e.transpose(1, 2)).reshape(-1)


def gradient_from_dq(dq: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """What :func:`~.triton_kernels.gradient_kernel` computes, in torch: ``dL/dX`` from ``dq = dL/dQ``.

    ``Q_ij = ||x_i - x_j||^2``, so ``dQ_ij/dx_i = 2 (x_i - x_j)`` and
    ``dQ_ij/dx_j = -2 (x_i - x_j)``; with ``A = dq + dq^T``::

        dL/dx_a = 2 sum_b A_ab (x_a - x_b) = 2 (rowsum(A)_a x_a - (A X)_a)

    (the diagonal of ``dq`` cancels). Kept as the readable reference of the
    kernel's chain rule (``tests/test_kernels.py`` checks it against autograd).
    """
    a = dq + dq.t()
    return 2.0 * (a.sum(dim=1, keepdim=True) * x - a @ x)


def reference_loss(student, teacher, distance_weight, angle_weight):
    """``wd * RKD-D + wa * RKD-A`` (Eq. 5, 7, 8) in float64, and its gradient (autograd) with respect to ``student``."""
    s = student.detach().to(torch.float64).requires_grad_(True)
    with torch.no_grad():
        t_d, t_a = potentials(teacher.detach().to(torch.float64))
    s_d, s_a = potentials(s)
    loss = s.new_zeros(())
    if distance_weight:
        loss = loss + distance_weight * F.smooth_l1_loss(s_d, t_d, reduction="mean", beta=1.0)
    if angle_weight:
        loss = loss + angle_weight * F.smooth_l1_loss(s_a, t_a, reduction="mean", beta=1.0)
    (grad,) = torch.autograd.grad(loss, s)
    return loss.detach(), grad


def make_inputs(n, ds, dt, coincident=False, seed=0, device="cpu", dtype=torch.float32):
    """Random student/teacher batches; with ``coincident``, a few repeated rows.

    Rows 1 and 4 repeat in both (a duplicated example), row 2 repeats row 0 in
    the student only (the student collapsed two examples the teacher separates).
    """
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, ds, generator=g, dtype=torch.float64) + 0.5
    t = 2.0 * torch.randn(n, dt, generator=g, dtype=torch.float64) - 1.0
    if coincident and n >= 5:
        s[4] = s[1]
        t[4] = t[1]
        s[2] = s[0]
    return s.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.detach().to(torch.float64).cpu()
    b = b.detach().to(torch.float64).cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def compare(n, ds, dt, device="cpu", coincident=False, seed=0, **launch) -> list[dict]:
    """Relative errors of the kernels vs :func:`reference_loss` for D, A and DA."""
    from . import rkd_loss

    student, teacher = make_inputs(n, ds, dt, coincident, seed, device)
    rows = []
    for name, wd, wa in (("distance", 1.0, 0.0), ("angle", 0.0, 1.0), ("distance+angle", 1.0, 2.0)):
        ref_loss, ref_grad = reference_loss(student, teacher, wd, wa)
        s = student.detach().clone().requires_grad_(True)
        loss = rkd_loss(s, teacher, wd, wa, **launch)
        loss.backward()
        row = {
            "loss": name, "n": n, "ds": ds, "dt": dt, "coincident": coincident, "device": str(device),
            "value": float(loss.detach()), "reference": float(ref_loss),
            "loss_rel_err": _rel(loss, ref_loss), "grad_rel_err": _rel(s.grad, ref_grad),
            "finite": bool(torch.isfinite(loss).item() and torch.isfinite(s.grad).all().item()),
        }
        with torch.no_grad():  # the no-gradient variant of the kernel gives the same value
            row["nograd_rel_err"] = _rel(rkd_loss(student, teacher, wd, wa, **launch), ref_loss)
        row["ok"] = bool(
            row["finite"] and max(row["loss_rel_err"], row["grad_rel_err"], row["nograd_rel_err"]) <= RTOL
        )
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rkd_tutorial.kernels.check", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[5, 17, 33, 70])
    parser.add_argument("--ds", type=int, default=8)
    parser.add_argument("--dt", type=int, default=12)
    parser.add_argument("--block", type=int, default=None, help="angle tile edge (default: the kernel's)")
    parser.add_argument("--anchor-splits", type=int, default=None)
    parser.add_argument("--coincident", action="store_true", help="also check inputs with repeated rows")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    args = parser.parse_args(argv)
    from . import available

    if not available():
        print("kernels not available (no Triton, or no CUDA and TRITON_INTERPRET unset)", file=sys.stderr)
        return 2
    rows = []
    for n in args.n:
        for coincident in (False, True) if args.coincident else (False,):
            rows += compare(n, args.ds, args.dt, args.device, coincident,
                            block=args.block, anchor_splits=args.anchor_splits)
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['loss']:>15} n={r['n']:<5} coincident={r['coincident']!s:<5} "
                  f"loss_err={r['loss_rel_err']:.2e} grad_err={r['grad_rel_err']:.2e} ok={r['ok']}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
