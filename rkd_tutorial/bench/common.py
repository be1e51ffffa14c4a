"""Shared helpers of the benchmarks: device naming, provenance, timing, peak memory, output.

Timing. On CUDA each repetition is bracketed by CUDA events after warm-up
(which also absorbs Triton's compilation); on the CPU by
``time.perf_counter``. The reported number is the median over repetitions.

Peak memory *above the inputs*:

* CUDA: ``torch.cuda.max_memory_allocated()`` after
  ``reset_peak_memory_stats()``, minus ``memory_allocated()`` just before the
  run (the inputs are allocated by then). Counts tensors only, not the
  caching allocator's reserve nor cuBLAS workspaces.
* CPU (Linux): the process's peak resident set size. Before the run, freed
  heap memory is returned to the OS (``malloc_trim(0)``) and the kernel's
  high-water mark is reset (``echo 5 > /proc/self/clear_refs``); after it,
  ``VmHWM - VmRSS(before)`` from ``/proc/self/status``. Resident pages, so
  it counts what the run touched (allocations never written are not
  counted), for every allocator, exactly at page granularity. Where
  ``clear_refs`` cannot be written, a thread samples ``VmRSS`` every
  millisecond instead (may miss short peaks); :func:`cpu_memory_method`
  says which was used.
"""

from __future__ import annotations

import ctypes
import re
import statistics
import threading
import time

import torch

from ..provenance import device_name, git_commit, stamp, write_json_atomic  # noqa: F401  (re-exported)

MIB = 1 << 20


# ----------------------------------------------------------------------------- naming, provenance


def device_slug(device: torch.device) -> str:
    """``cpu`` or the GPU's name as a slug, e.g. ``nvidia-h100-80gb-hbm3``."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def provenance(device: torch.device, wall_s: float) -> dict:
    """The provenance block of a benchmark file (:func:`rkd_tutorial.provenance.stamp`)."""
    return stamp(device, wall_s)


# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, reps: int, warmup: int, budget_s: float) -> tuple[float, int]:
    """Median milliseconds of ``fn()`` over up to ``reps`` repetitions after ``warmup`` calls.

    Stops early once the repetitions have used ``budget_s`` seconds (at least
    one repetition is always timed), and warms up only once if that call alone
    takes longer than the budget. Returns ``(ms, repetitions)``.
    """
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        if time.perf_counter() - t0 > budget_s:
            break
    samples: list[float] = []
    spent = 0.0
    while len(samples) < max(1, reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            fn()
            ms = (time.perf_counter() - t0) * 1e3
        samples.append(ms)
        spent += ms / 1e3
        if spent > budget_s:
            break
    return statistics.median(samples), len(samples)


# ----------------------------------------------------------------------------- peak memory


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_memory_method() -> str:
    if _proc_status_kib("VmHWM") is not None and _reset_hwm():
        return "peak RSS: VmHWM after malloc_trim + clear_refs(5), minus VmRSS before"
    return "peak RSS: VmRSS sampled every 1 ms by a thread, minus VmRSS before"


def peak_mib(fn, device: torch.device) -> float:
    """Peak memory of one call of ``fn()`` above what was allocated before it, in MiB."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MIB
    _malloc_trim()
    base = _proc_status_kib("VmRSS")
    if base is None:
        return float("nan")
    if _reset_hwm():
        fn()
        return (_proc_status_kib("VmHWM") - base) / 1024
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _proc_status_kib("VmRSS") or 0)
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], _proc_status_kib("VmRSS") or 0)
    return (peak[0] - base) / 1024


def memory_limit_bytes(device: torch.device, cpu_cap_gib: float) -> int:
    """What a run may use: 80% of free GPU memory, or on the CPU min(60% of MemAvailable, cap)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.8 * free)
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    cap = int(cpu_cap_gib * (1 << 30))
    return min(cap, int(0.6 * avail)) if avail else cap
