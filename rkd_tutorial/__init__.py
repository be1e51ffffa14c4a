"""rkd_tutorial: the companion package of "Relational Knowledge Distillation, step by step".

A small, complete reference implementation of knowledge distillation, from
individual (Hinton KD, FitNets, attention transfer) to relational (the
distance-wise and angle-wise losses of Park, Kim, Lu, Cho, *Relational
Knowledge Distillation*, CVPR 2019, arXiv:1904.05068).

Data flows one way: ``data`` -> ``models`` -> ``train`` (uses ``losses``) ->
``evaluate`` -> ``experiments`` -> ``viz`` and the book's chapters.
"""

__version__ = "0.1.0"
