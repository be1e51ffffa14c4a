"""Time the angle kernel's launch settings on a GPU, and check that each gives the same numbers.

``python -m rkd_tutorial.kernels.tune [--n 128 1024 4096] [--out results/]``

The fused loss has a few knobs (module constants of :mod:`.functions`): the
tile edge ``ANGLE_BLOCK``, the warps per program ``ANGLE_WARPS``, Triton's
prefetch depth ``ANGLE_STAGES``, the resident programs per multiprocessor
``PROGRAMS_PER_SM`` (which sets how anchors are split over programs) and the
staggered anchor order ``STAGGER``. Which setting is fastest depends on the
GPU, and can only be measured there. For every setting of :data:`SETTINGS`
and every ``N`` this times RKD-D + 2 RKD-A forward + backward (fp32,
``Ds = 128``, ``Dt = 512``, CUDA events, median; the first calls compile) and
compares loss and gradient with the default setting's (relative error; the
settings differ only in summation order). Prints a table; with ``--out``
also writes ``tune-angle-<device>.json`` with provenance (device, versions,
date; the commit is the run script's to record). It changes
nothing: copy a better setting into :mod:`.functions` by hand, with the
measurement in ``rkd_tutorial/kernels_NOTES.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from . import functions as F

#: (name, knob values): the current default first (the reference of the error column).
SETTINGS = [
    ("default (64, 4 warps, 3 stages)", dict(ANGLE_BLOCK=64, ANGLE_WARPS=4, ANGLE_STAGES=3, PROGRAMS_PER_SM=2)),
    ("no prefetch (1 stage)", dict(ANGLE_BLOCK=64, ANGLE_WARPS=4, ANGLE_STAGES=1, PROGRAMS_PER_SM=2)),
    ("8 warps", dict(ANGLE_BLOCK=64, ANGLE_WARPS=8, ANGLE_STAGES=3, PROGRAMS_PER_SM=1)),
    ("lock-step anchors", dict(ANGLE_BLOCK=64, ANGLE_WARPS=4, ANGLE_STAGES=3, PROGRAMS_PER_SM=2, STAGGER=False)),
    ("32-tiles, 1 warp (no cross-warp sums)", dict(ANGLE_BLOCK=32, ANGLE_WARPS=1, ANGLE_STAGES=3, PROGRAMS_PER_SM=8)),
    ("32-tiles, 1 warp, no prefetch", dict(ANGLE_BLOCK=32, ANGLE_WARPS=1, ANGLE_STAGES=1, PROGRAMS_PER_SM=8)),
    ("32-tiles, 2 warps", dict(ANGLE_BLOCK=32, ANGLE_WARPS=2, ANGLE_STAGES=3, PROGRAMS_PER_SM=4)),
]


@contextlib.contextmanager
def knobs(**values):
    """Set module constants of :mod:`.functions` inside the block (launch cache cleared), restore after."""
    old = {k: getattr(F, k) for k in values}
    try:
        for k, v in values.items():
            setattr(F, k, v)
        F.launch_config.cache_clear()
        yield
    finally:
        for k, v in old.items():
            setattr(F, k, v)
        F.launch_config.cache_clear()


def time_ms(fn, reps: int, warmup: int = 3, budget_s: float = 10.0) -> float:
    """Median milliseconds of ``fn()`` on the GPU (CUDA events), after ``warmup`` calls (the first ones compile).

    Stops repeating once the repetitions took ``budget_s`` seconds. (A few lines
    of :mod:`rkd_tutorial.bench.common`'s timer, repeated here: the kernels
    import nothing above them.)
    """
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    while len(samples) < max(1, reps) and sum(samples) < budget_s * 1e3:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def measure(ns, reps: int = 10, ds: int = 128, dt: int = 512) -> list[dict]:
    rows = []
    for n in ns:
        g = torch.Generator(device="cuda").manual_seed(n)
        s = torch.randn(n, ds, device="cuda", generator=g).requires_grad_(True)
        t = torch.randn(n, dt, device="cuda", generator=g)
        reference = None
        for name, values in SETTINGS:
            row = {"n": n, "setting": name, **{k.lower(): v for k, v in values.items()}}
            try:
                with knobs(**values):
                    def call():
                        s.grad = None
                        loss = F.rkd_loss(s, t, 1.0, 2.0)
                        loss.backward()
                        return loss

                    ms = time_ms(call, reps)
                    row["ms"] = round(ms, 4)
                    loss = call().detach().double()
                    grad = s.grad.detach().double()
                if reference is None:
                    reference = (loss, grad)
                row["loss_rel_err"] = float((loss - reference[0]).abs() / reference[0].abs())
                row["grad_rel_err"] = float((grad - reference[1]).norm() / reference[1].norm())
            except Exception as exc:  # noqa: BLE001 - a setting that does not compile or run is a result too
                row["error"] = f"{type(exc).__name__}: {exc}"[:500]
            rows.append(row)
            print(f"  N={n:5d}  {name:40s} " + (f"{row['ms']:9.3f} ms  loss err {row['loss_rel_err']:.1e}  "
                  f"grad err {row['grad_rel_err']:.1e}" if "ms" in row else row["error"][:120]), flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rkd_tutorial.kernels.tune", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[128, 1024, 4096])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="folder for tune-angle-<device>.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("python -m rkd_tutorial.kernels.tune: needs a CUDA GPU (timings of GPU launch settings)", file=sys.stderr)
        return 2
    start = time.time()
    rows = measure(args.n, args.reps)
    if args.out is not None:
        import triton

        name = torch.cuda.get_device_name()
        provenance = {"device": name, "torch": torch.__version__, "triton": triton.__version__,
                      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      "wall_s": round(time.time() - start, 3)}
        path = Path(args.out) / f"tune-angle-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"provenance": provenance, "rows": rows}, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
