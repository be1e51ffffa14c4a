"""Command line: ``python -m rkd_tutorial metric|classify --profile quick --out DIR``.

Each command trains a teacher and every method's student, prints a table,
and writes ``DIR/<experiment>-<profile>.json`` and ``.md`` with provenance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import experiments as ex


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rkd_tutorial", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="experiment", required=True)
    for name, profiles, methods in (("metric", ex.METRIC_PROFILES, ex.METRIC_METHODS),
                                    ("classify", ex.CLASSIFY_PROFILES, ex.CLASSIFY_METHODS)):
        p = sub.add_parser(name, help=f"the {name} experiment on Fashion-MNIST")
        p.add_argument("--profile", choices=sorted(profiles), default=ex.default_profile(),
                       help="quick: CPU, minutes; full: GPU, all data (default: full with CUDA, else quick)")
        p.add_argument("--out", default="results", help="folder for the .json and .md results (default: results)")
        p.add_argument("--seeds", type=int, default=1, help="number of seeds, 0..N-1 (default: 1)")
        p.add_argument("--seed", type=int, default=None,
                       help="run this one seed only, into <experiment>-<profile>-seed<K>.json (merge them with 'merge')")
        p.add_argument("--methods", nargs="+", choices=methods, default=list(methods), metavar="METHOD",
                       help=f"subset of: {' '.join(methods)}")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        if name == "metric":
            p.add_argument("--dims", type=int, nargs="+", default=None, help="student embedding sizes")
    m = sub.add_parser("merge", help="merge per-seed results files of one experiment into one")
    m.add_argument("parts", nargs="+", help="the per-seed .json files")
    m.add_argument("-o", "--output", required=True, help="the merged .json (a .md is written beside it)")
    t = sub.add_parser("teacher", help="train a teacher and store it with its sha256 (the chapters load it)")
    t.add_argument("kind", choices=["metric", "classify"])
    t.add_argument("--profile", default="quick", choices=sorted(ex.METRIC_PROFILES))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=str(ex.CHECKPOINTS), help="folder (default: the package's checkpoints/)")
    t.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if args.experiment == "merge":
        import json
        merged = ex.merge_results([json.loads(Path(f).read_text()) for f in args.parts])
        out = Path(args.output)
        path = ex.write_results(merged, out.parent, out.stem)
        print(ex.markdown_table(merged))
        print(f"wrote {path} and {path.with_suffix('.md')}")
        return 0
    if args.experiment == "teacher":
        path = ex.save_teacher(args.kind, args.profile, args.seed, args.out, args.device)
        print(f"wrote {path} and its line in {path.parent / 'SHA256SUMS'}")
        return 0
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    seeds = list(range(args.seeds)) if args.seed is None else [args.seed]
    stem = f"{args.experiment}-{args.profile}" + ("" if args.seed is None else f"-seed{args.seed}")
    print(f"{args.experiment} experiment, profile {args.profile}, seeds {seeds}", flush=True)
    if args.experiment == "metric":
        results = ex.run_metric(args.profile, seeds, args.methods, args.dims, args.device, not args.no_progress,
                                out=args.out, stem=stem)
    else:
        results = ex.run_classify(args.profile, seeds, args.methods, args.device, not args.no_progress,
                                  out=args.out, stem=stem)
    path = Path(args.out) / f"{stem}.json"
    print()
    print(ex.markdown_table(results))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
