"""Tables and sentences the chapters show, made from results files.

The chapters read results (:func:`rkd_tutorial.resultfiles.load_results`)
and show them as Markdown: one table of every method's mean over its seeds,
and one table of comparisons by the book's rule (:mod:`rkd_tutorial.stats`).
Keeping that bookkeeping here leaves the chapters' code to what a student
should read. Every number printed comes from the rows; nothing is typed in.

In a notebook, show a table with ``display(Markdown(text))``
(``from IPython.display import Markdown``).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence

from .stats import Comparison, compare_methods, mean_std

__all__ = [
    "fmt", "seeds_of", "value", "summary_table", "metrics_table", "comparisons", "comparison_table",
    "verdict_table", "verdict_groups", "bounds_sentence", "range_table", "provenance_line",
    "bench_losses_table", "bench_losses_summary", "pipeline_table",
]


def fmt(v: float, digits: int = 3) -> str:
    """A metric in [0, 1] as the book prints it everywhere: 3 decimals."""
    return f"{v:.{digits}f}"


def _select(rows: Sequence[dict], **where) -> List[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def seeds_of(results: dict, **where) -> List[int]:
    """The seeds of the (selected) rows."""
    return sorted({int(r["seed"]) for r in _select(results["rows"], **where)})


def value(results: dict, method: str, metric: str, **where) -> float:
    """The mean over seeds of ``metric`` for ``method`` (selected by ``where``)."""
    vals = [r[metric] for r in _select(results["rows"], method=method, **where) if metric in r]
    if not vals:
        raise KeyError(f"no rows of {method!r} with {metric!r} ({where or 'any'})")
    return mean_std(vals)[0]


def summary_table(results: dict, metric: str, methods: Optional[Iterable[str]] = None,
                  labels: Optional[Dict[str, str]] = None, **where) -> str:
    """Markdown: one line per method, its mean and standard deviation over seeds, and the seed count."""
    rows = _select(results["rows"], **where)
    order = list(methods) if methods is not None else list(dict.fromkeys(r["method"] for r in rows))
    lines = [f"| method | {metric} (mean) | sd over seeds | seeds |", "|---|---|---|---|"]
    for m in order:
        vals = [r[metric] for r in rows if r["method"] == m and metric in r]
        if not vals:
            continue
        mean, sd = mean_std(vals)
        name = (labels or {}).get(m, m)
        lines.append(f"| {name} | {fmt(mean)} | {fmt(sd) if len(vals) > 1 else '-'} | {len(vals)} |")
    return "\n".join(lines) + "\n"


def comparisons(results: dict, metric: str, reference: str, methods: Optional[Iterable[str]] = None,
                **where) -> List[Comparison]:
    """Each method against ``reference`` by the book's rule (see :func:`rkd_tutorial.stats.compare_methods`)."""
    return compare_methods(results["rows"], metric, reference, list(methods) if methods is not None else None,
                           **where)


def comparison_table(results: dict, metric: str, reference: str, methods: Optional[Iterable[str]] = None,
                     labels: Optional[Dict[str, str]] = None, **where) -> str:
    """Markdown: each method against ``reference``: means, the difference in points, its 95% interval, the verdict."""
    lines = [f"| method | {metric} | {reference} | difference (points) | 95% interval | verdict |",
             "|---|---|---|---|---|---|"]
    for c in comparisons(results, metric, reference, methods, **where):
        name = (labels or {}).get(c.a, c.a)
        interval = "-" if c.low is None else f"[{100 * c.low:+.1f}, {100 * c.high:+.1f}]"
        lines.append(f"| {name} | {fmt(c.mean_a)} | {fmt(c.mean_b)} | {100 * c.diff:+.1f} | {interval} | "
                     f"{c.verdict} |")
    return "\n".join(lines) + "\n"


def range_table(results: dict, metric: str, methods: Sequence[str], reference: Optional[str] = None,
                labels: Optional[Dict[str, str]] = None, **where) -> str:
    """Markdown: the range (lowest to highest over seeds) of each method's ``metric``.

    With ``reference``, also the range of each method's per-seed difference from
    it, in points: what a reader repeating the experiment can expect to see.
    """
    rows = _select(results["rows"], **where)
    per = {m: {int(r["seed"]): r[metric] for r in rows if r["method"] == m and metric in r} for m in methods}
    head = f"| method | {metric}: lowest - highest | seeds |"
    sep = "|---|---|---|"
    if reference is not None:
        per.setdefault(reference, {int(r["seed"]): r[metric] for r in rows
                                   if r["method"] == reference and metric in r})
        head += f" difference from {reference} (points) |"
        sep += "---|"
    lines = [head, sep]
    for m in methods:
        vals = per[m]
        if not vals:
            continue
        line = f"| {(labels or {}).get(m, m)} | {fmt(min(vals.values()))} - {fmt(max(vals.values()))} | {len(vals)} |"
        if reference is not None and m != reference:
            d = [100 * (vals[s] - per[reference][s]) for s in vals if s in per[reference]]
            line += f" {min(d):+.1f} to {max(d):+.1f} |" if d else " - |"
        elif reference is not None:
            line += " (reference) |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def verdict_table(comparisons: Sequence[Comparison], labels: Optional[Dict[str, str]] = None) -> str:
    """Markdown: any list of comparisons (:func:`rkd_tutorial.stats.compare`), one line each.

    For comparisons that :func:`comparison_table` cannot select from the rows
    alone (e.g. students of several embedding sizes against one teacher, or a
    method against another at each size). Columns: the two sides, their means,
    the mean paired difference in points, its 95% interval, the verdict.
    """
    name = lambda n: (labels or {}).get(n, n)
    lines = ["| A | B | A (mean) | B (mean) | A - B (points) | 95% interval | seeds | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        interval = "-" if c.low is None else f"[{100 * c.low:+.1f}, {100 * c.high:+.1f}]"
        lines.append(f"| {name(c.a)} | {name(c.b)} | {fmt(c.mean_a)} | {fmt(c.mean_b)} | {100 * c.diff:+.1f} | "
                     f"{interval} | {c.n} | {c.verdict} |")
    return "\n".join(lines) + "\n"



# ----------------------------------------------------------------------------- provenance and benchmarks (chapters 3, 7)

def _duration_s(seconds: float) -> str:
    return (f"{seconds / 3600:.1f} h" if seconds >= 3600 else
            f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s")


def provenance_line(results: dict, name: str = "") -> str:
    """One Markdown sentence on where a results or benchmark file came from.

    Device, torch (and Triton) version, the commit's first 12 characters, the
    date, the seeds and the wall time, all read from ``results["provenance"]``;
    ``name`` (e.g. the file's name) starts the sentence.
    """
    p = results.get("provenance", {})
    parts = [f"{p.get('device', '?')}", f"torch {p.get('torch', '?')}"]
    if p.get("triton"):
        parts.append(f"Triton {p['triton']}")
    if p.get("commit"):
        parts.append(f"commit `{str(p['commit'])[:12]}`")
    if p.get("date"):
        parts.append(str(p["date"])[:10])
    if p.get("seeds") is not None:
        parts.append(f"seeds {', '.join(str(s) for s in p['seeds'])}")
    if isinstance(p.get("wall_s"), (int, float)):
        parts.append(f"wall time {_duration_s(p['wall_s'])}")
    head = f"`{name}`: " if name else ""
    return head + ", ".join(parts) + "."


def _digits3(v: float) -> str:
    """``v`` with three significant digits, trailing zeros kept (1.00, 61.0, 504)."""
    return f"{v:.{max(0, 2 - math.floor(math.log10(abs(v))))}f}" if v else "0"


def _mib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{_digits3(mib)} MiB"


def _ms(ms: float) -> str:
    return f"{_digits3(ms / 1000)} s" if ms >= 1000 else f"{_digits3(ms)} ms"


def bench_losses_table(results, impls: Sequence[str] = ("direct", "package", "chunked")) -> str:
    """Markdown: the loss benchmark (``python -m rkd_tutorial.bench losses``), one line per batch size.

    ``results``: what the benchmark writes (a dict with ``"rows"``) or its
    list of rows (``impl``, ``n``, ``ms``, ``peak_mib``, and a ``note`` where a
    cell was not run). Each cell gives the time of a forward and backward
    pass and the peak memory above the inputs; a column whose cells were all
    left out (on a CPU the package *is* the chunked path) is dropped.
    """
    rows = list(results["rows"]) if isinstance(results, dict) else list(results)
    by = {(r["impl"], r["n"]): r for r in rows}
    shown = [i for i in impls if any(r["impl"] == i and r.get("ms") is not None for r in rows)]
    lines = ["| N | " + " | ".join(f"{i}: time, peak memory" for i in shown) + " |",
             "|---|" + "---|" * len(shown)]
    for n in sorted({r["n"] for r in rows}):
        cells = []
        for i in shown:
            r = by.get((i, n))
            if r is None:
                cells.append("-")
            elif r.get("ms") is None:
                cells.append(str(r.get("note", "not run")).replace("skipped: ", "not run: "))
            else:
                cells.append(f"{_ms(r['ms'])}, {_mib(r['peak_mib'])}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bench_losses_summary(results: dict, n: int = 1024) -> str:
    """Markdown bullets: what one loss-benchmark file says, each number computed from its rows.

    The package against the direct formulation at batch size ``n`` (or the
    largest size where both ran): time and memory ratios, and the chunked
    path where it ran; where the direct formulation stopped and why; the
    largest size the package ran; whether its time stays flat at small sizes
    (a fixed cost per call); and the file's float64 checks, if any.
    """
    rows = results["rows"]
    by = {(r["impl"], r["n"]): r for r in rows}
    ran = lambda impl, m: by.get((impl, m), {}).get("ms") is not None  # noqa: E731
    ns = sorted({r["n"] for r in rows})
    out = []
    both = [m for m in ns if ran("direct", m) and ran("package", m)]
    if both:
        m = n if n in both else max(both)
        d, p = by["direct", m], by["package", m]
        text = (f"At $N = {m}$ the package takes {_ms(p['ms'])} and {_mib(p['peak_mib'])}, the direct "
                f"formulation {_ms(d['ms'])} and {_mib(d['peak_mib'])}: {d['ms'] / p['ms']:.1f}x the time "
                f"and {d['peak_mib'] / p['peak_mib']:.0f}x the memory")
        if ran("chunked", m):
            c = by["chunked", m]
            text += (f". The chunked path on the same device: {_ms(c['ms'])} ({c['ms'] / p['ms']:.1f}x the "
                     f"package's time) and {_mib(c['peak_mib'])} ({c['peak_mib'] / p['peak_mib']:.1f}x its "
                     "memory)")
        out.append(text + ".")
    skipped = [m for m in ns if ("direct", m) in by and not ran("direct", m)]
    if skipped:
        m0 = skipped[0]
        last = max((m for m in both if m < m0), default=None)
        note = str(by["direct", m0].get("note", "")).replace("skipped: ", "")
        text = (f"The direct formulation ran up to $N = {last}$, where it needed "
                f"{_mib(by['direct', last]['peak_mib'])}; " if last else "The direct formulation did not run; ")
        text += f"from $N = {m0}$ on it was not run ({note})"
        if ran("package", m0):
            text += f", while the package needed {_mib(by['package', m0]['peak_mib'])} there"
        out.append(text + ".")
    top = max((m for m in ns if ran("package", m)), default=None)
    if top is not None:
        p = by["package", top]
        text = f"At the largest size, $N = {top}$, the package takes {_ms(p['ms'])} and {_mib(p['peak_mib'])}"
        if ran("chunked", top):
            c = by["chunked", top]
            text += (f"; the chunked path {_ms(c['ms'])} ({c['ms'] / p['ms']:.0f}x the time) and "
                     f"{_mib(c['peak_mib'])}")
        out.append(text + ".")
    small = [m for m in ns if m <= 256 and ran("package", m)]
    if len(small) > 1 and any(ran("chunked", m) for m in small):
        times = [by["package", m]["ms"] for m in small]
        lo, hi = min(times), max(times)
        text = (f"From $N = {small[0]}$ to ${small[-1]}$ the package's time stays between {lo:.2f} and "
                f"{hi:.2f} ms while the work grows {(small[-1] / small[0]) ** 3:.0f}-fold")
        if hi < 2 * lo:
            text += ": at these sizes the time is a fixed cost per call, not the kernels' arithmetic"
        out.append(text + ".")
    checks = results.get("checks") or []
    if checks:
        ok = all(c["ok"] for c in checks)
        out.append(f"Checked against float64 at every size: largest relative error "
                   f"{max(c['loss_rel_err'] for c in checks):.1e} for the loss and "
                   f"{max(c['grad_rel_err'] for c in checks):.1e} for the gradient"
                   + ("" if ok else " (some checks failed)") + ".")
    return "\n".join(f"* {t}" for t in out) + "\n"


def pipeline_table(results: dict) -> str:
    """Markdown: the pipeline benchmark (``python -m rkd_tutorial.bench pipeline``), one line per variant.

    ``train.fit`` (the package's way) and the conventional loop with each
    number of ``DataLoader`` workers: the median timed epoch, images per
    second, each epoch's mean loss (warm-up epochs first), and the speed-up
    of ``fit`` over that loop (none where a variant's losses were not finite).
    """
    project = results.get("project") or {}
    lines = ["| variant | epoch | images/s | mean loss of each epoch | fit's speed-up |", "|---|---|---|---|---|"]

    def losses(m):
        return ", ".join(f"{x:.4f}" for x in m.get("losses", [])) or "-"

    if project:
        lines.append(f"| `train.fit` | {project['epoch_s']:.2f} s | {project['images_per_s']:.0f} | "
                     f"{losses(project)} | - |")
    for r in results.get("runs", []):
        c = r.get("conventional") or {}
        if not c:
            lines.append(f"| conventional, {r['workers']} workers | failed | - | - | - |")
            continue
        speedup = f"{r['speedup']:.2f}x" if isinstance(r.get("speedup"), (int, float)) else "-"
        lines.append(f"| conventional, {r['workers']} workers | {c['epoch_s']:.2f} s | "
                     f"{c['images_per_s']:.0f} | {losses(c)} | {speedup} |")
    return "\n".join(lines) + "\n"



# ----------------------------------------------------------------------------- verdicts in words (chapters 5, 6)

def verdict_groups(comparisons: Sequence[Comparison], labels: Optional[Dict[str, str]] = None) -> str:
    """Markdown bullets: which methods are better, worse, or not detectably different from the reference.

    ``comparisons``: method against one reference each (e.g. from
    :func:`comparisons`); every bullet is computed from their verdicts, with
    each method's difference and 95% interval in points after its name.
    """
    name = lambda n: (labels or {}).get(n, n)  # noqa: E731
    if not comparisons:
        return "* no comparisons\n"
    reference = ", ".join(dict.fromkeys(name(c.b) for c in comparisons))
    groups = {"better": [], "worse": [], "no detectable difference": [], "one seed: no verdict": []}
    for c in comparisons:
        groups[c.verdict].append(f"{name(c.a)} ({c.interval()})")
    heads = {"better": f"**better** than {reference}", "worse": f"**worse** than {reference}",
             "no detectable difference": f"**no detectable difference** from {reference}",
             "one seed: no verdict": "**one seed, no verdict**"}
    lines = [f"* {heads[v]}: {'; '.join(found) if found else 'none'}"
             for v, found in groups.items() if found or v != "one seed: no verdict"]
    return "\n".join(lines) + "\n"


def bounds_sentence(c: Comparison, scale: float = 100.0, digits: int = 1, unit: str = "points") -> str:
    """:meth:`Comparison.sentence`, and for a null result what its interval rules out.

    A 95% interval ``[low, high]`` that contains 0 is not "no effect": it
    rules out ``a`` being better than ``b`` by more than ``high``, or worse by
    more than ``-low``; this sentence says so, in ``unit``.
    """
    text = c.sentence(scale, digits, unit)
    if c.low is None or c.decisive:
        return text + "."
    return (text + f"; the interval rules out {c.a} being better than {c.b} by more than "
            f"{scale * c.high:.{digits}f} {unit}, or worse by more than {-scale * c.low:.{digits}f}.")


def metrics_table(results: dict, metrics: Sequence[str], methods: Optional[Iterable[str]] = None,
                  labels: Optional[Dict[str, str]] = None, **where) -> str:
    """Markdown: one line per method, each metric's mean over seeds (and its standard deviation).

    :func:`summary_table` for several metrics at once (e.g. the omitted
    class's AUC and accuracy): cells read ``mean (sd)``, the sd left out for
    one seed.
    """
    rows = _select(results["rows"], **where)
    order = list(methods) if methods is not None else list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | " + " | ".join(f"{m}: mean (sd)" for m in metrics) + " | seeds |",
             "|---|" + "---|" * len(metrics) + "---|"]
    for m in order:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        cells = []
        for metric in metrics:
            vals = [r[metric] for r in mine if metric in r]
            if not vals:
                cells.append("-")
                continue
            mean, sd = mean_std(vals)
            cells.append(fmt(mean) + (f" ({fmt(sd)})" if len(vals) > 1 else ""))
        lines.append(f"| {(labels or {}).get(m, m)} | " + " | ".join(cells) + f" | {len(mine)} |")
    return "\n".join(lines) + "\n"

