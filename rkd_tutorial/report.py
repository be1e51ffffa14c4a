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

from typing import Dict, Iterable, List, Optional, Sequence

from .stats import Comparison, compare_methods, mean_std

__all__ = ["summary_table", "comparison_table", "comparisons", "range_table", "fmt", "seeds_of", "value"]


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
