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
  ``clear_refs`` cannot be written (not Linux, or not allowed), the peak is
  not measured (NaN); :func:`cpu_memory_method` says which applies.
"""

from __future__ import annotations

import ctypes
import re
import statistics
import time

import torch

from ..provenance import device_name, stamp, write_json_atomic  # noqa: F401  (re-exported)

MIB = 1 << 20


# ----------------------------------------------------------------------------- naming, provenance


def device_slug(device: torch.device) -> str:
    """``cpu`` or the GPU's name as a slug, e.g. ``nvidia-h100-80gb-hbm3``."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


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


def _proc_kib(field: str, path: str = "/proc/self/status") -> int | None:
    """A ``Field:  123 kB`` line of a Linux ``/proc`` file, in KiB (None where there is none)."""
    try:
        with open(path) as f:
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
    if _proc_kib("VmHWM") is not None and _reset_hwm():
        return "peak RSS: VmHWM after malloc_trim + clear_refs(5), minus VmRSS before"
    return "not measured: /proc/self/clear_refs cannot be written here"


def peak_mib(fn, device: torch.device) -> float:
    """Peak memory of one call of ``fn()`` above what was allocated before it, in MiB (NaN if unmeasurable)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MIB
    _malloc_trim()
    base = _proc_kib("VmRSS")
    if base is None or not _reset_hwm():
        fn()
        return float("nan")
    fn()
    return (_proc_kib("VmHWM") - base) / 1024


def memory_limit_bytes(device: torch.device, cpu_cap_gib: float) -> int:
    """What a run may use: 80% of free GPU memory, or on the CPU min(60% of MemAvailable, cap)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.8 * free)
    avail = _proc_kib("MemAvailable", "/proc/meminfo")
    cap = int(cpu_cap_gib * (1 << 30))
    return min(cap, int(0.6 * avail * 1024)) if avail else cap
