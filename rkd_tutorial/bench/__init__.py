"""Benchmarks of the companion package: ``python -m rkd_tutorial.bench <subcommand>``.

Subcommands (each a module with ``add_arguments(parser)`` and ``run(args) -> int``,
imported only when chosen, see :mod:`rkd_tutorial.bench.__main__`):

* ``losses`` (:mod:`.losses`): RKD-D+A forward+backward, the direct
  formulation vs the package (fused Triton kernels on CUDA, chunked on CPU)
  vs the chunked path forced on CUDA; time and peak memory.
* ``pipeline`` (:mod:`.pipeline`): one epoch of distillation, the
  conventional way (:mod:`.conventional`) and the project's way
  (:mod:`.graph_step`: the step, eager or captured in a CUDA graph).

Results go to ``results/bench-<subcommand>-<device>.json``, written atomically,
with a ``provenance`` block (:func:`.common.provenance`).
"""
