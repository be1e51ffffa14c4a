"""``python -m rkd_tutorial.bench losses``: what the fused RKD kernels buy, in time and memory.

For each batch size ``N`` it times the forward and backward pass of
``distance_weight * RKD-D + angle_weight * RKD-A`` (Eq. 8; default weights 1
and 2, the paper's metric-learning setting) on a random student ``N x Ds``
and teacher ``N x Dt``, with three implementations:

* ``direct``: :mod:`rkd_tutorial.losses.direct`, the official code's
  formulation (``N x N x D`` and ``N x N x N`` tensors). Skipped where its
  estimated memory (:func:`direct_bytes`) exceeds 80% of the free GPU memory
  (on the CPU: 60% of the available RAM, at most ``--cpu-cap-gib``).
* ``package``: :class:`rkd_tutorial.losses.RKDLoss`, i.e. the fused Triton
  kernels on CUDA (:mod:`rkd_tutorial.kernels`) and the chunked path on CPU.
* ``chunked``: the package's CPU path forced on CUDA too (the kernels
  switched off), to show what the kernels add over chunking. On the CPU it
  *is* ``package``, so it is not run twice.

It prints a table and the ratios direct/package of the same run, and writes
``<out>/bench-losses-<device>.json`` (see :mod:`.common` for how time and
peak memory are measured). ``--check`` also compares the package's loss and
gradient with a float64 reference: the direct formulation wherever that fits
in memory, else the package's own chunked path run in float64.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path

import torch

from . import common

IMPLS = ("direct", "package", "chunked")
DEFAULT_N = {"cpu": [64, 128, 256, 512, 1024], "cuda": [64, 128, 256, 512, 1024, 1536, 2048, 4096]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: results/)")
    p.add_argument("--n", type=int, nargs="+", default=None,
                   help="batch sizes (default: 64 .. 1024 on CPU, 64 .. 4096 on CUDA)")
    p.add_argument("--ds", type=int, default=128, help="student embedding width (default 128)")
    p.add_argument("--dt", type=int, default=512, help="teacher embedding width (default 512)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per cell (default 20 on CUDA, 5 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 3 on CUDA, 2 on CPU)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop repeating a cell after this many seconds (default 2 on CUDA, 5 on CPU)")
    p.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS))
    p.add_argument("--distance-weight", type=float, default=1.0)
    p.add_argument("--angle-weight", type=float, default=2.0)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--cpu-cap-gib", type=float, default=8.0,
                   help="on CPU, skip direct above this estimated memory (default 8 GiB)")
    p.add_argument("--check", action="store_true",
                   help="also compare the package's loss and gradient with float64 (direct where it fits, else chunked)")


# ----------------------------------------------------------------------------- implementations


def direct_bytes(n: int, ds: int, dt: int, itemsize: int = 4) -> int:
    """Estimated peak bytes of the direct RKD-D+A forward+backward.

    The teacher's ``N x N x Dt`` differences and their normalised copy stay
    alive until the loss returns (2 tensors); the student's differences,
    normalised differences and their gradients (about 5 ``N x N x Ds``); the
    ``N^3`` potentials of both, the Huber terms and their gradients (about 6
    ``N^3``). Checked against measurement on the CPU (within ~30%).
    """
    return itemsize * (n * n * (2 * dt + 5 * ds) + 6 * n**3)


@contextlib.contextmanager
def _kernels_off():
    """Force :mod:`rkd_tutorial.losses.relational` onto its CPU code path (the chunked one)."""
    from ..losses import relational

    saved = relational._kernels
    relational._kernels = lambda: None
    try:
        yield
    finally:
        relational._kernels = saved


def make_loss(impl: str, distance_weight: float, angle_weight: float):
    """``loss(student, teacher)`` for one implementation."""
    if impl == "direct":
        from ..losses.direct import direct_angle_loss, direct_distance_loss

        def loss(s, t):
            out = s.new_zeros(())
            if distance_weight:
                out = out + distance_weight * direct_distance_loss(s, t)
            if angle_weight:
                out = out + angle_weight * direct_angle_loss(s, t)
            return out

        return loss
    from ..losses import RKDLoss

    module = RKDLoss(distance_weight, angle_weight)
    if impl == "package":
        return module

    def chunked(s, t):
        with _kernels_off():
            return module(s, t)

    return chunked


def _inputs(n, ds, dt, device, seed=0):
    g = torch.Generator().manual_seed(seed + n)
    s = torch.randn(n, ds, generator=g).to(device).requires_grad_(True)
    t = torch.randn(n, dt, generator=g).to(device)
    return s, t


# ----------------------------------------------------------------------------- running


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def bench_cell(impl, n, args, device, limit) -> dict:
    row = {"impl": impl, "n": n, "ds": args.ds, "dt": args.dt, "ms": None, "peak_mib": None}
    if impl == "chunked" and device.type != "cuda":
        row["note"] = "not run: on the CPU the package is the chunked path"
        return row
    if impl == "direct":
        need = direct_bytes(n, args.ds, args.dt)
        if need > limit:
            row["note"] = f"skipped: estimated {need / 2**30:.1f} GiB > limit {limit / 2**30:.1f} GiB"
            return row
    loss_fn = make_loss(impl, args.distance_weight, args.angle_weight)
    s, t = _inputs(n, args.ds, args.dt, device)

    def step():
        s.grad = None
        loss_fn(s, t).backward()

    try:
        if device.type == "cuda":  # warm up (compilation, cuBLAS workspaces) before measuring memory
            ms, reps = common.time_ms(step, device, args.reps, args.warmup, args.budget_s)
            peak = common.peak_mib(step, device)
        else:  # the memory run doubles as the warm-up; a slow one is the only sample
            t0 = time.perf_counter()
            peak = common.peak_mib(step, device)
            first = time.perf_counter() - t0
            if first > args.budget_s:
                ms, reps = first * 1e3, 1
            else:
                ms, reps = common.time_ms(step, device, args.reps, max(0, args.warmup - 1), args.budget_s)
        row.update(ms=round(ms, 4), peak_mib=round(peak, 3), reps=reps)
    except RuntimeError as exc:
        if not _is_oom(exc):
            raise
        row["ms"] = row["peak_mib"] = None
        row["note"] = "out of memory"
    finally:
        s.grad = None
        del s, t
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _chunked_float64_reference(s, t, distance_weight, angle_weight):
    """The package's own CPU path in float64 (``RKDLoss`` sends float64 there, also on CUDA)."""
    from ..losses import RKDLoss

    s64 = s.detach().double().requires_grad_(True)
    loss = RKDLoss(distance_weight, angle_weight)(s64, t.detach().double())
    (grad,) = torch.autograd.grad(loss, s64)
    return loss.detach(), grad


def check_cell(n, args, device, limit) -> dict:
    """Package vs a float64 reference: the direct formulation where it fits, else the chunked path.

    The direct reference is the coincidence-safe one of :mod:`rkd_tutorial.kernels.check`
    (identical to :mod:`rkd_tutorial.losses.direct` on these random inputs).
    """
    from ..kernels.check import RTOL, _rel, reference_loss

    s, t = _inputs(n, args.ds, args.dt, device, seed=1)
    out = {"impl": "package", "n": n, "ds": args.ds, "dt": args.dt}
    try:
        if direct_bytes(n, args.ds, args.dt, itemsize=8) <= limit:
            out["reference"] = "direct-float64"
            ref_loss, ref_grad = reference_loss(s, t, args.distance_weight, args.angle_weight)
        else:
            out["reference"] = "chunked-float64"
            ref_loss, ref_grad = _chunked_float64_reference(s, t, args.distance_weight, args.angle_weight)
        loss = make_loss("package", args.distance_weight, args.angle_weight)(s, t)
        loss.backward()
        out["loss_rel_err"] = _rel(loss, ref_loss)
        out["grad_rel_err"] = _rel(s.grad, ref_grad)
        out["ok"] = bool(math.isfinite(out["loss_rel_err"] + out["grad_rel_err"])
                         and max(out["loss_rel_err"], out["grad_rel_err"]) <= RTOL)
    except RuntimeError as exc:
        if not _is_oom(exc):
            raise
        out.update(loss_rel_err=None, grad_rel_err=None, ok=True, note="reference out of memory: not checked")
    finally:
        del s, t
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _fmt(x, spec):
    return format(x, spec) if x is not None else format("-", ">" + spec.split(".")[0])


def print_table(rows, checks, device) -> None:
    print(f"\nRKD-D+A forward+backward on {common.device_name(device)}")
    print(f"{'impl':>8} {'N':>6} {'Ds':>5} {'Dt':>5} {'ms':>11} {'peak MiB':>11}  note")
    for r in rows:
        print(f"{r['impl']:>8} {r['n']:>6} {r['ds']:>5} {r['dt']:>5} {_fmt(r['ms'], '11.3f')} "
              f"{_fmt(r['peak_mib'], '11.1f')}  {r.get('note', '')}")
    by = {(r["impl"], r["n"]): r for r in rows}
    print("\nratios (same run): time and peak memory of direct / package, chunked / package")
    for n in sorted({r["n"] for r in rows}):
        pkg = by.get(("package", n))
        if not pkg or pkg["ms"] is None:
            continue
        parts = []
        for other in ("direct", "chunked"):
            o = by.get((other, n))
            if o and o["ms"] is not None:
                mem = o["peak_mib"] / pkg["peak_mib"] if pkg["peak_mib"] and pkg["peak_mib"] > 0 else float("nan")
                parts.append(f"{other}/package: time x{o['ms'] / pkg['ms']:.1f}, memory x{mem:.1f}")
        print(f"  N={n:>5}: " + ("; ".join(parts) if parts else "(nothing to compare)"))
    if checks:
        print("\ncheck vs float64 reference (max-abs relative errors, tolerance 1e-4)")
        for c in checks:
            print(f"  N={c['n']:>5} vs {c.get('reference', '-'):<15}: loss {_fmt(c['loss_rel_err'], '.2e')}, "
                  f"grad {_fmt(c['grad_rel_err'], '.2e')}  {'ok' if c['ok'] else 'FAIL'} {c.get('note', '')}")


def run(args) -> int:
    t_start = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    sizes = args.n or DEFAULT_N["cuda" if cuda else "cpu"]
    args.reps = args.reps or (20 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 2)
    args.budget_s = args.budget_s or (2.0 if cuda else 5.0)
    torch.manual_seed(0)

    from ..losses.relational import _kernels

    kernels = _kernels() if cuda else None
    print(f"device: {common.device_name(device)}; package = "
          + ("fused Triton kernels" if kernels is not None else "chunked path")
          + f"; memory: {'torch.cuda.max_memory_allocated' if cuda else common.cpu_memory_method()}")

    rows, checks = [], []
    for n in sizes:
        limit = common.memory_limit_bytes(device, args.cpu_cap_gib)
        for impl in args.impl:
            row = bench_cell(impl, n, args, device, limit)
            rows.append(row)
            print(f"  {impl:>8} N={n:<5} ms={_fmt(row['ms'], '.3f'):>10} peak={_fmt(row['peak_mib'], '.1f'):>9} MiB"
                  f"  {row.get('note', '')}", flush=True)
        if args.check:
            checks.append(check_cell(n, args, device, common.memory_limit_bytes(device, args.cpu_cap_gib)))
            c = checks[-1]
            print(f"  check    N={n:<5} vs {c.get('reference')}: loss {_fmt(c['loss_rel_err'], '.2e')}, "
                  f"grad {_fmt(c['grad_rel_err'], '.2e')} {'ok' if c['ok'] else 'FAIL'} {c.get('note', '')}", flush=True)

    print_table(rows, checks, device)
    payload = {
        "provenance": common.stamp(device, time.perf_counter() - t_start),
        "config": {
            "loss": "distance_weight * RKD-D + angle_weight * RKD-A, forward + backward",
            "distance_weight": args.distance_weight, "angle_weight": args.angle_weight,
            "package": "triton kernels" if kernels is not None else "chunked",
            "timing": "CUDA events, median" if cuda else "time.perf_counter, median",
            "memory": "torch.cuda.max_memory_allocated above inputs" if cuda else common.cpu_memory_method(),
        },
        "rows": rows,
    }
    if args.check:
        payload["checks"] = checks
    path = common.write_json_atomic(args.out / f"bench-losses-{common.device_slug(device)}.json", payload)
    print(f"\nwrote {path}")
    return 0 if all(c["ok"] for c in checks) else 1
