"""Command line: ``python -m rkd_tutorial metric|classify|darkknowledge|consistency|ablation --out DIR``.

Each experiment trains its teachers and students with the package's own code,
prints a table with the book's comparisons (:mod:`rkd_tutorial.stats`), and
writes ``DIR/<experiment>-<profile>.json`` and ``.md`` with provenance.
``--seeds 5`` runs seeds 0..4; ``--resume`` continues an interrupted run (or
adds seeds to a finished one) and trains only the missing rows. ``merge``
joins per-seed files; ``ship`` copies finished results into the package, where
the chapters read them; ``teacher`` trains and stores a teacher.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from . import experiments as ex
from .resultfiles import PACKAGE_RESULTS, ResultsLocked, check_pair, markdown_table, merge_results, write_results

EXPERIMENTS = {
    "metric": ("the metric-learning experiment (chapters 4 and 7)", ex.METRIC_PROFILES, ex.METRIC_METHODS),
    "classify": ("the classification experiment (chapters 5 and 7)", ex.CLASSIFY_PROFILES, ex.CLASSIFY_METHODS),
    "darkknowledge": ("dark knowledge: few labels, a class never seen (chapter 5)", ex.CLASSIFY_PROFILES,
                      tuple(dict.fromkeys(ex.DARK_METHODS + ex.OMIT_METHODS))),
    "consistency": ("Hinton KD without and with augmentation (chapter 5)", ex.CLASSIFY_PROFILES,
                    ex.CONSISTENCY_METHODS),
    "ablation": ("RKD's choices varied one at a time (chapter 6)", ex.METRIC_PROFILES,
                 tuple(ex.ablation_variants())),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rkd_tutorial", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_, profiles, methods) in EXPERIMENTS.items():
        p = sub.add_parser(name, help=help_)
        p.add_argument("--profile", choices=sorted(profiles), default=None,
                       help="quick (the default; minutes on a CPU) or full (opt-in, for a GPU); "
                            "default $RKD_PROFILE or quick. RKD_SMOKE=1 shrinks either to seconds")
        p.add_argument("--out", default="results", help="folder for the .json and .md results (default: results)")
        p.add_argument("--seeds", type=int, default=1, help="number of seeds, 0..N-1 (default: 1)")
        p.add_argument("--seed", type=int, default=None,
                       help="run this one seed only, into <experiment>-<profile>-seed<K>.json (join them with 'merge')")
        p.add_argument("--methods", nargs="+", choices=methods, default=None, metavar="METHOD",
                       help=f"subset of: {', '.join(methods)} (default: all)")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        p.add_argument("--resume", action="store_true",
                       help="keep the rows an earlier run with the same settings measured; train only the missing ones")
        p.add_argument("--overwrite", action="store_true", help="start over, discarding an unfinished run's rows")
        if name == "metric":
            p.add_argument("--dims", type=int, nargs="+", default=None, help="student embedding sizes")
            p.add_argument("--no-self-distill", action="store_true", help="skip the self-distilled student")
        if name == "darkknowledge":
            p.add_argument("--labelled-per-class", type=int, default=10, help="labels per class the students see")
    m = sub.add_parser("merge", help="merge per-seed results files of one experiment into one")
    m.add_argument("parts", nargs="+", help="the per-seed .json files")
    m.add_argument("-o", "--output", required=True, help="the merged .json (a .md is written beside it)")
    m.add_argument("--allow-incomplete", action="store_true", help="merge unfinished parts too (marked incomplete)")
    s = sub.add_parser("ship", help="copy finished results files into the package (where the chapters read them)")
    s.add_argument("files", nargs="+", help="results .json files (their .md goes along; benchmarks have none)")
    t = sub.add_parser("teacher", help="train a teacher and store it with its sha256 (the chapters load it)")
    t.add_argument("kind", choices=["metric", "classify"])
    t.add_argument("--profile", default=None, choices=sorted(ex.METRIC_PROFILES))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=str(ex.CHECKPOINTS), help="folder (default: the package's checkpoints/)")
    t.add_argument("--device", default=None)
    return parser


def _device(parser, name):
    if name is None:
        return None
    try:
        device = torch.device(name)
    except RuntimeError as err:
        parser.error(f"--device {name}: {err}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device cpu")
    return device


def _merge(args) -> int:
    parts = [json.loads(Path(f).read_text()) for f in args.parts]
    merged = merge_results(parts, allow_incomplete=args.allow_incomplete)
    experiment = merged["provenance"].get("experiment")
    baseline = {"metric": "triplet", "classify": "baseline", "darkknowledge": "baseline"}.get(experiment)
    if baseline:
        dims = merged["provenance"].get("dims") or [None]
        where = {"embedding_dim": dims[0]} if experiment == "metric" and dims[0] else {}
        sentence = ex.teacher_check(merged["rows"], "recall@1" if experiment == "metric" else "accuracy",
                                    baseline, **where)
        merged["notes"] = [sentence] if sentence else []
    out = Path(args.output)
    path = write_results(merged, out.parent, out.stem)
    print(markdown_table(merged))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def _ship(args) -> int:
    PACKAGE_RESULTS.mkdir(exist_ok=True)
    for f in args.files:
        path = Path(f)
        data = json.loads(path.read_text()) if path.suffix == ".json" else None
        if data is None or "provenance" not in data:
            raise SystemExit(f"ship: {path} is not a results .json file")
        if not data["provenance"].get("complete", True):
            raise SystemExit(f"ship: {path} is an unfinished run; finish it with --resume first")
        pair = [path]
        if path.with_suffix(".md").exists() or "rows" in data and not path.name.startswith("bench-"):
            if not check_pair(path):
                raise SystemExit(f"ship: {path.with_suffix('.md')} was not made from {path.name}; rerun the "
                                 "command that made them")
            pair.append(path.with_suffix(".md"))
        for src in pair:
            shutil.copyfile(src, PACKAGE_RESULTS / src.name)
            print(f"shipped {src.name} -> {PACKAGE_RESULTS / src.name}")
    return 0


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except (ValueError, FileExistsError, ResultsLocked, OSError) as err:
        # what the user can fix (a setting, a folder, another run): the message, without a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(parser, args) -> int:
    if args.command == "merge":
        return _merge(args)
    if args.command == "ship":
        return _ship(args)
    if args.command == "teacher":
        path = ex.save_teacher(args.kind, args.profile, args.seed, args.out, _device(parser, args.device))
        print(f"wrote {path} and its line in {path.parent / 'SHA256SUMS'}")
        return 0
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite contradict each other; choose one")
    device = _device(parser, args.device)
    profile = args.profile or ex.default_profile()
    seeds = list(range(args.seeds)) if args.seed is None else [args.seed]
    p = (ex.metric_profile if args.command in ("metric", "ablation") else ex.classify_profile)(profile)
    stem = f"{args.command}-{p.name}{'-smoke' if p.smoke else ''}" + ("" if args.seed is None else f"-seed{args.seed}")
    common = dict(seeds=seeds, progress=not args.no_progress, out=args.out, stem=stem, resume=args.resume,
                  overwrite=args.overwrite)
    print(f"{args.command}, profile {p.name}{' (smoke scale)' if p.smoke else ''}, seeds {seeds}", flush=True)
    if args.command == "metric":
        dims = ex.runs.check_dims(args.dims) if args.dims else None
        results = ex.run_metric(p, methods=args.methods or ex.METRIC_METHODS, dims=dims, device=device,
                                self_distill=not args.no_self_distill, **common)
    elif args.command == "classify":
        results = ex.run_classify(p, methods=args.methods or ex.CLASSIFY_METHODS, device=device, **common)
    elif args.command == "darkknowledge":
        results = ex.run_darkknowledge(p, labelled_per_class=args.labelled_per_class, methods=args.methods,
                                       device_=device, **common)
    elif args.command == "consistency":
        results = ex.run_consistency(p, methods=args.methods, device_=device, **common)
    else:
        results = ex.run_ablation(p, variants=args.methods, device_=device, **common)
    print()
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
