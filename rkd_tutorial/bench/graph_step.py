"""The project's training step, and the same step captured in one CUDA graph.

Part of ``python -m rkd_tutorial.bench pipeline`` (:mod:`.pipeline` explains
the benchmark). :func:`make_train_step` builds the whole step -- teacher
forward, student forward, RKD loss, backward, optimizer step, loss summed on
the device -- as one closure that never synchronises with the host, so the
same code runs eagerly and inside :func:`capture_train_step`. A
:class:`ProjectRunner` is what the benchmark times; :func:`checked_graph_runner`
guards a graph whose replays go wrong.

The rules a whole-step CUDA graph must follow (PyTorch's *CUDA semantics*
notes, "CUDA Graphs"): fixed shapes and addresses (inputs are copied into
static buffers), no host synchronisation inside the step, an optimizer whose
step counter lives on the GPU (``capturable=True``), autocast without its
weight cache, warm-up iterations on a side stream before capture, and Python
references to every tensor made before the capture that the replays read or
write, for as long as the graph is replayed (:class:`CapturedStep`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional

import torch
import torch.nn as nn

#: Eager iterations on a side stream before capture (the CUDA-graphs notes use 3).
GRAPH_WARMUP_ITERS = 3
#: Untimed steps whose mean loss is checked (one host synchronisation) before each timed CUDA-graph epoch.
PROBE_STEPS = 3


def make_train_step(
    teacher: nn.Module,
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loss_sum: torch.Tensor,
    autocast_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The project's whole training step as one closure ``step(x, y) -> loss``.

    Teacher forward (``no_grad``), student forward, RKD loss in float32,
    backward, optimizer step, and ``loss_sum += loss`` on the device: no
    ``.item()``, no Python branch on a tensor's value, the same shapes every
    call, so the *same* closure runs eagerly (CPU, warm-up, fallback) and
    inside :func:`capture_train_step`. ``zero_grad(set_to_none=True)``
    first: eagerly it frees the old gradients; under capture it makes the
    backward pass allocate the ``.grad`` tensors from the graph's private
    memory pool, as the whole-network-capture recipe requires. ``y`` is
    unused (RKD for metric learning has no task loss) but part of the
    signature so that a task loss could be added.
    """
    device_type = next(student.parameters()).device.type
    autocast = (
        (lambda: torch.autocast(device_type, dtype=autocast_dtype, cache_enabled=False))
        if autocast_dtype is not None
        else contextlib.nullcontext
    )

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            with torch.no_grad():
                t = teacher(x).embedding
            s = student(x).embedding
        loss = loss_fn(s.float(), t.float())
        loss.backward()
        optimizer.step()
        loss = loss.detach()
        loss_sum.add_(loss)
        return loss

    return step


class GraphUnsafe(RuntimeError):
    """The step synchronises with the host, so it cannot be captured."""


def _sync_warnings(fn: Callable[[], object]) -> List[str]:
    """Run ``fn`` with CUDA's sync-debug mode on "warn"; the distinct synchronisation warnings it raised."""
    try:
        torch.cuda.set_sync_debug_mode("warn")
    except Exception:  # noqa: BLE001 - the check is optional
        fn()
        return []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    found = {str(w.message).strip().splitlines()[0][:300] for w in caught if "synchroniz" in str(w.message).lower()}
    return sorted(found)


@dataclass
class CapturedStep:
    """A training step recorded in a CUDA graph, replayed on new data with :meth:`__call__`.

    The graph holds raw addresses, not Python references. What it allocated
    during the capture (activations, the ``.grad`` tensors, ``static_loss``)
    lives in its private memory pool and stays valid as long as ``graph``
    does; but the tensors made *before* the capture -- the teacher's and the
    student's weights, Adam's ``exp_avg``/``exp_avg_sq``/``step`` tensors,
    ``loss_sum``, ``static_x`` -- are read and written in place by every
    replay, and nothing in the graph keeps them alive. If their last Python
    reference goes, the caching allocator hands their memory to the next
    tensors of the same size, and the replays silently read and overwrite
    those. ``step`` (the eager closure, which references the models, the
    optimizer and ``loss_sum``) is kept here for that reason only: it is
    never called after the capture.
    """

    graph: "torch.cuda.CUDAGraph"
    static_x: torch.Tensor
    static_y: torch.Tensor
    static_loss: torch.Tensor
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # keeps the graph's outside memory alive

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.static_x.copy_(x)   # fill the graph's input memory (same addresses every replay) ...
        self.static_y.copy_(y)
        self.graph.replay()      # ... and run every kernel of the step with one launch
        return self.static_loss


def capture_train_step(
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    warmup_batches: Iterable[tuple],
    check_syncs: bool = True,
) -> CapturedStep:
    """Capture ``step`` (from :func:`make_train_step`) in one CUDA graph: "whole-network capture".

    The recipe of PyTorch's CUDA-semantics notes: static input buffers; a few
    eager iterations of the step on a side stream (``warmup_batches``, real
    batches because they include ``optimizer.step()``), which run cuDNN's
    and cuBLAS's heuristics, Triton's compilation and create the optimizer's
    state; then the capture, on the same side stream. The last warm-up
    iteration runs with CUDA's sync-debug mode on: a host synchronisation
    there would break the capture, so :class:`GraphUnsafe` is raised instead
    of trying. Raises on any failure; the caller falls back to eager steps.
    The result keeps ``step``, and with it the models and the optimizer,
    alive for as long as the graph can be replayed (see :class:`CapturedStep`).
    """
    if not torch.cuda.is_available():
        raise GraphUnsafe("no CUDA device: CUDA graphs need one")
    batches = list(warmup_batches)
    if not batches:
        raise ValueError("capture_train_step needs at least one warm-up batch")
    x0, y0 = batches[0]
    if x0.device.type != "cuda":
        raise GraphUnsafe(f"the batch is on {x0.device}; CUDA graphs need CUDA tensors")
    static_x = torch.empty_like(x0)
    static_y = torch.empty_like(y0)
    side = torch.cuda.Stream(x0.device)
    side.wait_stream(torch.cuda.current_stream(x0.device))
    syncs: List[str] = []
    with torch.cuda.stream(side):
        for i, (x, y) in enumerate(batches):
            static_x.copy_(x)
            static_y.copy_(y)
            if check_syncs and i == len(batches) - 1:
                syncs = _sync_warnings(lambda: step(static_x, static_y))
            else:
                step(static_x, static_y)
    torch.cuda.current_stream(x0.device).wait_stream(side)
    torch.cuda.synchronize(x0.device)
    if syncs:
        raise GraphUnsafe("the step synchronises with the host: " + " | ".join(syncs))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        static_loss = step(static_x, static_y)
    torch.cuda.synchronize(x0.device)
    return CapturedStep(graph, static_x, static_y, static_loss, step)


@dataclass
class ProjectRunner:
    """The project's step, ready to time: ``runner(x, y)`` runs one step (graph replay or eager)."""

    variant: str                                    # "cuda-graph" or "eager"
    run_step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    loss_sum: torch.Tensor
    student: nn.Module
    setup_s: float = 0.0
    info: dict = field(default_factory=dict)
    cudnn_autotune: bool = False                    # cuDNN's benchmark mode during the project's steps only

    def __call__(self, x, y):
        with cudnn_autotune(self.cudnn_autotune):
            return self.run_step(x, y)


@contextlib.contextmanager
def cudnn_autotune(enabled: bool):
    """``torch.backends.cudnn.benchmark = True`` inside the block (if ``enabled``), restored after.

    With fixed shapes, cuDNN times its convolution algorithms once per shape and
    keeps the fastest. Scoped, so that the conventional variant keeps PyTorch's defaults.
    """
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = prev or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev


def project_epoch(runner: ProjectRunner, loader, epoch: int, steps: int) -> int:
    """One epoch of the project variant: ``steps`` batches of ``epoch``; no host synchronisation inside."""
    loader.set_epoch(epoch)
    n = 0
    for x, y in loader:
        runner(x, y)
        n += 1
        if n >= steps:
            break
    return n


def probe_loss(runner: ProjectRunner, loader, steps: int = PROBE_STEPS) -> float:
    """Mean loss of ``steps`` untimed steps of ``runner`` (the first batches of epoch 0); one host sync."""
    runner.loss_sum.zero_()
    n = project_epoch(runner, loader, 0, steps)
    return float(runner.loss_sum) / max(1, n)


def checked_graph_runner(runner: ProjectRunner, loader, build_eager: Callable[[], tuple]) -> tuple:
    """``(runner, loader, note)``: the CUDA-graph runner if a short probe gives a finite loss, else eager.

    Called just before a CUDA-graph epoch is timed, when everything else (the
    eager baseline, the conventional variant) has allocated its memory: a
    graph that reads or writes memory it no longer owns shows it here, after
    :data:`PROBE_STEPS` steps, instead of after a whole NaN epoch. On a
    non-finite loss, ``build_eager()`` makes a *fresh* eager runner (the
    graph's student has diverged, and its replays may have overwritten
    other tensors); ``note`` says why and is also stored in its ``info``.
    Other runners are returned unchanged, with ``note`` None.
    """
    if runner.variant != "cuda-graph":
        return runner, loader, None
    loss = probe_loss(runner, loader)
    if math.isfinite(loss):
        return runner, loader, None
    note = (f"cuda-graph -> eager: mean loss {loss} over {PROBE_STEPS} replays before the timed epoch "
            "(the graph's setup checks had passed)")
    print(f"  {note}", flush=True)
    eager, eager_loader = build_eager()
    eager.info["graph_fallback"] = note
    eager.info["graph_variant_info"] = {k: v for k, v in runner.info.items() if k != "graph_traceback"}
    return eager, eager_loader, note
