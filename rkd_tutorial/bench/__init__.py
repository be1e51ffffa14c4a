"""Benchmarks of the companion package: ``python -m rkd_tutorial.bench <subcommand>``.

Subcommands (each a module with ``add_arguments(parser)`` and ``run(args) -> int``,
imported only when chosen, see :mod:`rkd_tutorial.bench.__main__`):

* ``losses`` (:mod:`.losses`): RKD-D+A forward+backward, the direct
  formulation vs the package (fused Triton kernels on CUDA, chunked on CPU)
  vs the chunked path forced on CUDA; time and peak memory.
* ``pipeline`` (:mod:`.pipeline`): epochs of distillation with
  :func:`rkd_tutorial.train.fit`, the loop that readers run, against the
  conventional loop of the official code (:mod:`.conventional`).

The benchmarks measure; they hold no training loop of the package's own.
Results go to ``results/bench-<subcommand>-<device>.json``, written atomically,
with a ``provenance`` block (:func:`rkd_tutorial.provenance.stamp`).
"""
