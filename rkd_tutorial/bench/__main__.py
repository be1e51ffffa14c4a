"""Command line of the benchmarks: ``python -m rkd_tutorial.bench {losses,pipeline} [options]``.

Each subcommand lives in its own module of this package and is imported only
when chosen, so a missing optional dependency of one benchmark never breaks
another. A subcommand module provides two functions:

* ``add_arguments(parser)`` -- declare its options on an ``argparse`` parser;
* ``run(args) -> int`` -- run it and return the exit status.

To add one, add a line to :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: name -> (module inside rkd_tutorial.bench, one-line help)
SUBCOMMANDS = {
    "losses": (".losses", "RKD-D+A forward+backward: direct vs package (Triton on CUDA) vs chunked"),
    "pipeline": (".pipeline", "epochs of distillation: train.fit vs the conventional loop of the official code"),
}


def _load(name: str):
    module_name, _ = SUBCOMMANDS[name]
    try:
        return importlib.import_module(module_name, __package__ or "rkd_tutorial.bench")
    except ModuleNotFoundError as exc:
        if exc.name == f"rkd_tutorial.bench{module_name}":
            raise SystemExit(f"python -m rkd_tutorial.bench {name}: not available yet ({module_name[1:]}.py is missing)")
        raise


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m rkd_tutorial.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    sub.required = True
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, (_, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the benchmark that runs
            module = _load(name)
            module.add_arguments(p)
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
