"""The book's one rule for comparing two methods: paired seeds, a 95% t interval.

Training is noisy: the same method with another seed lands a point or two
higher or lower. To say that method A beats method B, the book trains both
with the *same* seeds (same teacher, same data order, same initial weights
where the architectures agree) and looks at the per-seed differences
``d_k = A_k - B_k``. Pairing removes what the two runs share, so ``d_k``
varies much less than ``A_k`` or ``B_k``.

With ``n`` seeds, mean difference ``m`` and sample standard deviation ``s``
of the ``d_k``, the 95% confidence interval of the true mean difference is::

    m ± t(0.975, n - 1) * s / sqrt(n)

(Student's t distribution with ``n - 1`` degrees of freedom:
``t = 12.71, 4.30, 3.18, 2.78`` for ``n = 2, 3, 4, 5``; few seeds make wide
intervals). The verdict:

* the interval lies above 0: **A is better** than B;
* it lies below 0: **A is worse**;
* it contains 0: **no detectable difference** with these seeds (which is not
  proof that there is none: a wider study might find one).

One seed gives no interval and no verdict. That is the whole rule; every
chapter, every results table and the command line use it (:func:`compare`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

__all__ = ["Comparison", "compare", "compare_methods", "per_seed", "t_critical", "mean_std"]


def t_critical(df: int, level: float = 0.95) -> float:
    """Two-sided critical value of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"t_critical: needs at least 1 degree of freedom (2 seeds), got {df}")
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def mean_std(values: Sequence[float]):
    """Mean and sample standard deviation (``n - 1``; 0 for one value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std: no values")
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return m, math.sqrt(var)


@dataclass(frozen=True)
class Comparison:
    """Method ``a`` against method ``b`` over paired seeds (see the module's docstring)."""

    a: str
    b: str
    metric: str
    seeds: List[int]
    mean_a: float
    mean_b: float
    diff: float                     # mean of a_k - b_k
    low: Optional[float]            # 95% interval of the mean difference (None for one seed)
    high: Optional[float]

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def verdict(self) -> str:
        """``"better"``, ``"worse"``, ``"no detectable difference"`` or ``"one seed: no verdict"``."""
        if self.low is None:
            return "one seed: no verdict"
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "no detectable difference"

    @property
    def decisive(self) -> bool:
        """True when the interval excludes zero (either way)."""
        return self.verdict in ("better", "worse")

    def interval(self, scale: float = 100.0, digits: int = 1) -> str:
        """The difference and its interval as text, in points (``scale=100``) by default."""
        f = lambda v: f"{scale * v:+.{digits}f}"
        if self.low is None:
            return f"{f(self.diff)} (one seed)"
        return f"{f(self.diff)} [{f(self.low)}, {f(self.high)}]"

    def sentence(self, scale: float = 100.0, digits: int = 1, unit: str = "points") -> str:
        """One sentence a reader can quote, e.g. "rkd-da is better than triplet: ..."."""
        name = self.metric
        if self.low is None:
            return (f"{self.a} against {self.b}: {self.interval(scale, digits)} {unit} of {name} "
                    f"from a single seed, too few for a verdict")
        head = {"better": f"{self.a} is better than {self.b}",
                "worse": f"{self.a} is worse than {self.b}",
                "no detectable difference": f"no detectable difference between {self.a} and {self.b}"}[self.verdict]
        return (f"{head}: {name} {self.interval(scale, digits)} {unit}, mean difference and 95% interval "
                f"over {self.n} paired seeds")

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "metric": self.metric, "seeds": self.seeds, "n": self.n,
                "mean_a": self.mean_a, "mean_b": self.mean_b, "diff": self.diff,
                "low": self.low, "high": self.high, "verdict": self.verdict}


def compare(a: Mapping[int, float], b: Mapping[int, float], name_a: str = "A", name_b: str = "B",
            metric: str = "score", level: float = 0.95) -> Comparison:
    """Compare two methods from their per-seed results, ``{seed: value}`` each.

    Only the seeds both have are used (the pairs). Raises ``ValueError`` when
    there is none in common, or a value is not a finite number.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"compare: {name_a} (seeds {sorted(a)}) and {name_b} (seeds {sorted(b)}) "
                         "share no seed; a paired comparison needs the same seeds for both")
    for name, values in ((name_a, a), (name_b, b)):
        for s in seeds:
            if not isinstance(values[s], (int, float)) or not math.isfinite(values[s]):
                raise ValueError(f"compare: {name} has no finite {metric} for seed {s}: {values[s]!r}")
    diffs = [a[s] - b[s] for s in seeds]
    m, sd = mean_std(diffs)
    low = high = None
    if len(seeds) > 1:
        half = t_critical(len(seeds) - 1, level) * sd / math.sqrt(len(seeds))
        low, high = m - half, m + half
    return Comparison(name_a, name_b, metric, seeds, mean_std([a[s] for s in seeds])[0],
                      mean_std([b[s] for s in seeds])[0], m, low, high)


def per_seed(rows: Sequence[dict], metric: str, **where) -> Dict[str, Dict[int, float]]:
    """``{method: {seed: value}}`` from results rows, keeping those whose fields equal ``where``."""
    out: Dict[str, Dict[int, float]] = {}
    for r in rows:
        if all(r.get(k) == v for k, v in where.items()) and metric in r:
            out.setdefault(r["method"], {})[int(r["seed"])] = float(r[metric])
    return out


def compare_methods(rows: Sequence[dict], metric: str, reference: str, methods: Optional[Sequence[str]] = None,
                    **where) -> List[Comparison]:
    """Every method (or ``methods``) against ``reference``, from results rows (see :func:`per_seed`)."""
    table = per_seed(rows, metric, **where)
    if reference not in table:
        raise ValueError(f"compare_methods: no rows of the reference {reference!r} with {metric} "
                         f"({', '.join(f'{k}={v}' for k, v in where.items()) or 'any'}); have {sorted(table)}")
    names = [m for m in (methods or table) if m != reference and m in table]
    return [compare(table[m], table[reference], m, reference, metric) for m in names]
