"""Plots the chapters share: relations, embeddings, training curves, results.

Every function takes tensors (or arrays) as the rest of the package produces
them, draws with matplotlib (and seaborn where it helps), and returns the
:class:`matplotlib.figure.Figure`, so a chapter can save it or adjust it.

In a notebook, assign the result (``fig = viz.distance_heatmaps(...)``): the
inline backend shows the figure once at the end of the cell. (A figure left as
the cell's last expression is shown twice.)

* :func:`distance_heatmaps`: normalised distance matrices ``psi_D``, side by
  side on one colour scale (chapters 2, 4, 6).
* :func:`angle_histograms`: distributions of the angle potentials ``psi_A``
  (chapters 2, 4, 6).
* :func:`potential_agreement`: the teacher's against the student's
  potentials, entry by entry (chapters 2, 4, 6).
* :func:`embedding_scatter`: 2-D views of embeddings (PCA above 2-D),
  coloured by label (chapters 2, 4, 6).
* :func:`training_curves`: per-epoch columns of
  :class:`~rkd_tutorial.train.History` objects (chapters 1, 4, 5, 6).
* :func:`results_bar`: a results dict (``{"rows": [...]}``) as bars
  (chapters 4, 5, 7).

The potentials are those of :mod:`rkd_tutorial.losses.relational`: what a
heatmap or a histogram shows is exactly what RKD-D and RKD-A compare.
"""

from __future__ import annotations

import re

from typing import Dict, List, Mapping, Optional, Sequence, Union

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .losses.relational import angle_potential, distance_potential
from .train import History

__all__ = [
    "PALETTE",
    "distance_heatmaps",
    "angle_histograms",
    "potential_agreement",
    "embedding_scatter",
    "training_curves",
    "results_bar",
]

#: Colours used throughout the book: the teacher is always blue, the student orange.
PALETTE: Dict[str, str] = {"teacher": "#0173b2", "student": "#de8f05", "other": "#029e73"}

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float]]
Panels = Union[ArrayLike, Mapping[str, ArrayLike], Sequence[ArrayLike]]


# ----------------------------------------------------------------------------- helpers

def _tensor(x: ArrayLike) -> torch.Tensor:
    """A detached float64 CPU tensor (exact potentials, no autograd)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def _numpy(x: ArrayLike) -> np.ndarray:
    return _tensor(x).numpy()


def _panels(data: Panels, titles: Optional[Sequence[str]] = None) -> Dict[str, ArrayLike]:
    """Normalise one array, a list of arrays or a ``{title: array}`` mapping to a dict."""
    if isinstance(data, Mapping):
        panels = dict(data)
    elif isinstance(data, (torch.Tensor, np.ndarray)):
        panels = {"": data}
    else:
        data = list(data)
        names = list(titles) if titles is not None else [f"#{i + 1}" for i in range(len(data))]
        if len(names) != len(data):
            raise ValueError(f"got {len(data)} arrays but {len(names)} titles")
        panels = dict(zip(names, data))
    if not panels:
        raise ValueError("nothing to plot: give at least one array")
    return panels


def _colours(names: Sequence[str]) -> List[str]:
    """Teacher blue, student orange; when several names share a role, the others get distinct colours."""
    roles = ["teacher" if n.lower().startswith("teacher") else "student" if n.lower().startswith("student")
             else "other" for n in names]
    extra = [c for i, c in enumerate(sns.color_palette("colorblind").as_hex()) if i not in (0, 1)]
    out, used = [], set()
    for role in roles:
        if role != "other" and role not in used:
            out.append(PALETTE[role])
            used.add(role)
        else:
            out.append(extra[(len(out) - len(used)) % len(extra)])
    return out


def _subsample(n: int, max_points: Optional[int]) -> torch.Tensor:
    """Evenly spaced indices (deterministic), all of them if ``n <= max_points``."""
    if max_points is None or n <= max_points:
        return torch.arange(n)
    return torch.linspace(0, n - 1, max_points).round().long()


# ----------------------------------------------------------------------------- relations

def distance_heatmaps(
    embeddings: Panels,
    labels: Optional[ArrayLike] = None,
    titles: Optional[Sequence[str]] = None,
    normalized: bool = True,
    cmap: str = "viridis",
    vmax: Optional[float] = None,
    panel_size: float = 3.2,
    class_names: Optional[Sequence[str]] = None,
) -> Figure:
    """Distance matrices of several embeddings of the same examples, side by side.

    Args:
        embeddings: ``{title: N x D}`` (e.g. ``{"teacher": t, "student": s}``),
            or a list of ``N x D`` arrays (then give ``titles``), or one array.
            The widths ``D`` may differ; ``N`` must not.
        labels: optional ``N`` class labels; the examples are then sorted by
            label (stably) and the class blocks outlined, so clusters show as
            dark squares on the diagonal.
        normalized: plot ``psi_D`` (distances divided by their mean over
            ``i != j``, RKD paper Eq. 3-4), which is what RKD-D compares; with
            ``False``, raw Euclidean distances.
        vmax: top of the shared colour scale (default: the 99th percentile of
            all panels, so one far outlier does not wash out the rest).
        class_names: with ``labels``, names of the classes (indexed by label):
            each block is labelled on the left (first panel) and below.

    Returns:
        The figure: one heatmap per embedding and one shared colour bar.
    """
    panels = _panels(embeddings, titles)
    sizes = {len(_tensor(x)) for x in panels.values()}
    if len(sizes) != 1:
        raise ValueError(f"distance_heatmaps: all embeddings must have the same N, got sizes {sorted(sizes)}")
    n = sizes.pop()
    order = torch.arange(n)
    y = None
    if labels is not None:
        y = _tensor(labels).long()
        if len(y) != n:
            raise ValueError(f"distance_heatmaps: {len(y)} labels for {n} examples")
        order = torch.sort(y, stable=True).indices
        y = y[order]
    mats = []
    for x in panels.values():
        x = _tensor(x).reshape(n, -1)[order]
        if normalized:
            mats.append(distance_potential(x).numpy())
        else:
            mats.append(torch.cdist(x, x).numpy())
    top = vmax if vmax is not None else float(np.percentile(np.concatenate([m.ravel() for m in mats]), 99))

    k = len(mats)
    fig, axes = plt.subplots(1, k, figsize=(panel_size * k + 0.8, panel_size), squeeze=False,
                             layout="constrained")
    for ax, (title, m) in zip(axes[0], zip(panels, mats)):
        im = ax.imshow(m, cmap=cmap, vmin=0.0, vmax=top, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        if y is not None:
            edges = np.flatnonzero(np.diff(y.numpy())) + 0.5
            for e in edges:
                ax.axhline(e, color="white", lw=0.6)
                ax.axvline(e, color="white", lw=0.6)
            if class_names is not None:
                bounds = np.concatenate([[-0.5], edges, [n - 0.5]])
                centres = (bounds[:-1] + bounds[1:]) / 2
                names = [class_names[int(c)] for c in torch.unique_consecutive(y).tolist()]
                ax.set_xticks(centres, names, rotation=45, ha="right", fontsize="x-small")
                if ax is axes[0][0]:
                    ax.set_yticks(centres, names, fontsize="x-small")
    label = r"$\psi_D$ (distance / mean distance)" if normalized else "distance"
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85, label=label)
    return fig


def _angles(x: torch.Tensor) -> np.ndarray:
    """The angle potentials of all triplets with three distinct points, flattened."""
    psi = angle_potential(x)
    n = len(x)
    i = torch.arange(n)
    distinct = (i[:, None, None] != i[None, :, None]) & (i[:, None, None] != i[None, None, :]) & (
        i[None, :, None] != i[None, None, :])
    return psi[distinct].numpy()


def angle_histograms(
    embeddings: Panels,
    titles: Optional[Sequence[str]] = None,
    max_points: int = 48,
    bins: int = 60,
    ax: Optional[plt.Axes] = None,
) -> Figure:
    """Distributions of the angle potentials ``psi_A`` (cosines, RKD paper Eq. 6), overlaid.

    Only triplets of three distinct points are counted (the degenerate ones
    are 0 by convention and would pile up in the middle). ``psi_A`` has
    ``N^3`` entries, so at most ``max_points`` examples are used (evenly
    spaced, the same ones in every embedding).

    Args:
        embeddings: ``{title: N x D}``, a list of arrays (with ``titles``) or one array.
        ax: draw into this axes instead of a new figure.

    Returns:
        The figure.
    """
    panels = _panels(embeddings, titles)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
    else:
        fig = ax.figure
    for (title, x), colour in zip(panels.items(), _colours(list(panels))):
        x = _tensor(x)
        x = x.reshape(len(x), -1)[_subsample(len(x), max_points)]
        values = _angles(x)
        ax.hist(values, bins=bins, range=(-1, 1), density=True, histtype="step", lw=1.8,
                color=colour, label=title or None)
    ax.set_xlim(-1, 1)
    ax.set_xlabel(r"$\psi_A$ = cosine of the angle at the anchor")
    ax.set_ylabel("density")
    if any(panels):
        ax.legend(frameon=False)
    sns.despine(ax=ax)
    return fig


def potential_agreement(
    teacher: ArrayLike,
    students: Panels,
    potential: str = "angle",
    titles: Optional[Sequence[str]] = None,
    max_points: int = 48,
    panel_size: float = 3.3,
) -> Figure:
    """Teacher's against student's potentials, entry by entry: what RKD-D / RKD-A compare.

    Each panel is a 2-D histogram of the pairs ``(psi(teacher), psi(student))``
    over all pairs (``potential="distance"``, ``psi_D``) or all triplets of
    distinct points (``"angle"``, ``psi_A``), with a logarithmic colour scale
    (counts); a student that matches its teacher puts everything on the diagonal. The title gives Pearson's
    correlation. Histograms of each side alone (:func:`angle_histograms`)
    cannot show this: two clouds can have the same distribution of angles and
    disagree on every triplet.

    Args:
        teacher: ``N x Dt`` teacher outputs.
        students: ``{title: N x Ds}`` (e.g. before and after training), a list
            of arrays (with ``titles``) or one array.
        potential: ``"angle"`` or ``"distance"``.
        max_points: at most this many examples (evenly spaced) enter the potentials.

    Returns:
        The figure.
    """
    if potential not in ("angle", "distance"):
        raise ValueError(f"potential_agreement: potential must be 'angle' or 'distance', got {potential!r}")
    panels = _panels(students, titles)
    t = _tensor(teacher)
    t = t.reshape(len(t), -1)
    index = _subsample(len(t), max_points)

    def values(x: torch.Tensor) -> np.ndarray:
        x = x.reshape(len(x), -1)[index]
        if potential == "angle":
            return _angles(x)
        d = distance_potential(x)
        return d[~torch.eye(len(x), dtype=torch.bool)].numpy()

    tv = values(t)
    if potential == "angle":
        lo, hi, symbol = -1.0, 1.0, r"\psi_A"
    else:
        lo, hi, symbol = 0.0, None, r"\psi_D"
    k = len(panels)
    fig, axes = plt.subplots(1, k, figsize=(panel_size * k, panel_size), squeeze=False, layout="constrained")
    for ax, (title, x) in zip(axes[0], panels.items()):
        sx = _tensor(x)
        if len(sx) != len(t):
            raise ValueError(f"potential_agreement: student {title!r} has {len(sx)} examples, the teacher {len(t)}")
        sv = values(sx)
        top = hi if hi is not None else float(np.percentile(np.concatenate([tv, sv]), 99.5))
        ax.hist2d(tv, sv, bins=60, range=[[lo, top], [lo, top]], cmap="viridis", cmin=1, norm=LogNorm())
        ax.plot([lo, top], [lo, top], color=PALETTE["student"], lw=1, ls="--")
        r = f"{float(np.corrcoef(tv, sv)[0, 1]):.2f}".replace("-0.00", "0.00")
        ax.set_title(f"{title}  (r = {r})" if title else f"r = {r}", fontsize="medium")
        ax.set_xlabel(f"teacher ${symbol}$")
        ax.set_ylabel(f"student ${symbol}$")
        ax.set_aspect("equal")
    return fig


# ----------------------------------------------------------------------------- embeddings

def _to_2d(x: torch.Tensor) -> torch.Tensor:
    """Project onto the first two principal components (identity for 2-D data)."""
    if x.shape[1] == 2:
        return x
    if x.shape[1] == 1:
        return torch.cat([x, torch.zeros_like(x)], 1)
    centred = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].t()


def embedding_scatter(
    embeddings: Panels,
    labels: Optional[ArrayLike] = None,
    class_names: Optional[Sequence[str]] = None,
    titles: Optional[Sequence[str]] = None,
    panel_size: float = 3.6,
    point_size: float = 12.0,
) -> Figure:
    """Scatter plots of embeddings in 2-D, one panel each, coloured by label.

    Embeddings wider than 2 are projected onto their first two principal
    components (PCA, computed per panel), so the picture is a linear view of
    the geometry, never a re-arrangement of it (as t-SNE would be). Titles
    get the dimension appended, e.g. "teacher (128-D, PCA)", unless they
    already mention one (a number followed by "-D", e.g. "16-D"; "RKD-DA" does not count).

    Args:
        embeddings: ``{title: N x D}``, a list of arrays (with ``titles``) or one array.
        labels: optional ``N`` integer labels (the same for every panel).
        class_names: names for the labels in the legend, e.g.
            :data:`rkd_tutorial.data.FASHION_CLASSES`.

    Returns:
        The figure, with equal aspect ratio in every panel.
    """
    panels = _panels(embeddings, titles)
    k = len(panels)
    fig, axes = plt.subplots(1, k, figsize=(panel_size * k + (1.6 if labels is not None else 0), panel_size),
                             squeeze=False, layout="constrained")
    y = None if labels is None else _numpy(labels).astype(int)
    classes = [] if y is None else sorted(set(y.tolist()))
    colours = sns.color_palette("tab10" if len(classes) <= 10 else "husl", max(1, len(classes)))
    for ax, (title, x), colour in zip(axes[0], panels.items(), _colours(list(panels))):
        x = _tensor(x)
        xy = _to_2d(x.reshape(len(x), -1)).numpy()
        if y is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=point_size, color=colour, alpha=0.8, lw=0)
        else:
            for c, colour in zip(classes, colours):
                sel = y == c
                name = class_names[c] if class_names is not None else str(c)
                ax.scatter(xy[sel, 0], xy[sel, 1], s=point_size, color=colour, alpha=0.8, lw=0, label=name)
        dim = x.reshape(len(x), -1).shape[1]
        if title and not re.search(r"\d-D\b", title):  # say what is shown, unless the title already does
            title = f"{title} ({dim}-D{', PCA' if dim > 2 else ''})"
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
    if y is not None:
        handles, names = axes[0, -1].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside right center", frameon=False, markerscale=1.5)
    return fig


# ----------------------------------------------------------------------------- training and results

def training_curves(
    histories: Union[History, Mapping[str, History]],
    keys: Sequence[str] = ("loss",),
    log_y: bool = False,
    panel_size: float = 3.6,
) -> Figure:
    """Per-epoch curves of one or several :class:`~rkd_tutorial.train.History` objects.

    Args:
        histories: one history, or ``{name: history}`` to compare runs (e.g.
            ``{"baseline": h0, "hkd": h1}``): one line per run.
        keys: the columns to plot, one panel each: ``"loss"`` (the weighted
            total), a term's name (``"ce"``, ``"hkd"``, ``"rkd-da"``) or a
            metric returned by ``evaluate`` (``"recall@1"``, ``"accuracy"``).
            Runs without a column are skipped in that panel.
        log_y: logarithmic y axis (useful for losses spanning decades).

    Returns:
        The figure.
    """
    runs = {"": histories} if isinstance(histories, History) else dict(histories)
    if not runs:
        raise ValueError("training_curves: give at least one History")
    keys = list(keys)
    fig, axes = plt.subplots(1, len(keys), figsize=(panel_size * len(keys) + 0.4, panel_size * 0.8),
                             squeeze=False, layout="constrained")
    for ax, key in zip(axes[0], keys):
        drawn = 0
        for (name, h), colour in zip(runs.items(), _colours(list(runs))):
            values = h.series(key)
            if not values:
                continue
            epochs = [r["epoch"] for r in h.records if key in r]
            ax.plot(epochs, values, marker="o", ms=3, color=colour, label=name or None)
            drawn += 1
        if drawn == 0:
            ax.text(0.5, 0.5, f"no '{key}' column", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        if log_y:
            ax.set_yscale("log")
        ax.xaxis.get_major_locator().set_params(integer=True)
        sns.despine(ax=ax)
        if any(runs) and drawn:
            ax.legend(frameon=False, fontsize="small")
    return fig


def results_bar(
    results: Mapping,
    metric: Optional[str] = None,
    title: Optional[str] = None,
    ax: Optional[plt.Axes] = None,
) -> Figure:
    """A results dict (``{"rows": [...]}``, as :mod:`rkd_tutorial.experiments` writes) as bars.

    One bar per method (mean over seeds, with the standard deviation as an
    error bar where there are several seeds; none from a single seed), grouped by ``embedding_dim`` when rows
    have several. The ``teacher`` row is drawn as a dashed horizontal line,
    so "does the student beat its teacher?" can be read off directly. The y
    axis is zoomed to the range of the values (differences between methods
    are often a few points): read the printed numbers, not the bar heights.

    Args:
        results: a dict with ``"rows"``, each row a dict with ``"method"`` and
            the metric (plus optionally ``"seed"``, ``"embedding_dim"``).
        metric: the column to plot; default ``"recall@1"`` if the rows have it,
            else ``"accuracy"``.

    Returns:
        The figure.
    """
    rows = list(results["rows"]) if isinstance(results, Mapping) else list(results)
    if not rows:
        raise ValueError("results_bar: the results have no rows")
    if metric is None:
        metric = "recall@1" if "recall@1" in rows[0] else "accuracy"
    if any(metric not in r for r in rows):
        raise ValueError(f"results_bar: every row needs a {metric!r} value")
    teacher = [r[metric] for r in rows if r["method"] == "teacher"]
    students = [r for r in rows if r["method"] != "teacher"]
    methods = list(dict.fromkeys(r["method"] for r in students))
    dims = list(dict.fromkeys(r.get("embedding_dim") for r in students))
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.5, 0.75 * len(methods) * max(1, len(dims)) + 1.5), 3.6),
                               layout="constrained")
    else:
        fig = ax.figure
    width = 0.8 / max(1, len(dims))
    colours = sns.color_palette("colorblind")[1:] + sns.color_palette("colorblind")[:1]  # teacher blue last
    for j, dim in enumerate(dims):
        means, errs = [], []
        for m in methods:
            v = np.array([r[metric] for r in students if r["method"] == m and r.get("embedding_dim") == dim])
            means.append(v.mean() if len(v) else np.nan)
            errs.append(v.std(ddof=1) if len(v) > 1 else np.nan)      # no error bar from one seed
        pos = np.arange(len(methods)) + (j - (len(dims) - 1) / 2) * width
        label = f"student, d = {dim}" if dim is not None and len(dims) > 1 else None
        ax.bar(pos, means, width * 0.95, color=colours[j] if len(dims) > 1 else PALETTE["student"],
               label=label)
        several = [i for i, e in enumerate(errs) if np.isfinite(e)]
        if several:
            ax.errorbar(pos[several], np.array(means)[several], yerr=np.array(errs)[several], fmt="none",
                        ecolor="black", elinewidth=1, capsize=3)
        for x, m, e in zip(pos, means, errs):               # the value above its error bar, if any
            if np.isfinite(m):
                ax.annotate(f"{m:.3f}", (x, m + (e if np.isfinite(e) else 0.0)), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize="x-small")
    if teacher:
        ax.axhline(float(np.mean(teacher)), color=PALETTE["teacher"], ls="--", lw=1.5,
                   label=f"teacher ({np.mean(teacher):.3f})")
    ax.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel(metric)
    values = [r[metric] for r in rows]
    low = min(values)
    ax.set_ylim(max(0.0, low - 0.15 * (max(values) - low + 1e-9) - 0.05), min(1.0, max(values) + 0.06))
    if title:
        ax.set_title(title)
    if teacher or len(dims) > 1:
        ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    sns.despine(ax=ax)
    return fig


# ----------------------------------------------------------------------------- benchmarks (chapter 3)

#: Colours of the three implementations in :func:`loss_benchmarks`.
IMPL_COLOURS: Dict[str, str] = {"direct": "#cc78bc", "package": "#029e73", "chunked": "#ca9161"}


def loss_benchmarks(
    benches: Mapping[str, Union[Mapping, Sequence[Mapping]]],
    title: Optional[str] = None,
) -> Figure:
    """Time and peak memory of the RKD loss against the batch size ``N``, per implementation.

    Args:
        benches: ``{label: results}``, ``results`` either what ``python -m
            rkd_tutorial.bench losses`` writes (a dict with ``"rows"``) or its
            list of rows; each row has ``impl``, ``n``, ``ms`` and ``peak_mib``
            (``None`` where the cell was skipped). One line style per label
            (e.g. per device), one colour per implementation
            (:data:`IMPL_COLOURS`).
        title: the figure's title.

    Returns:
        The figure: time (ms) on the left, peak memory above the inputs (MiB)
        on the right, both log-log. Skipped cells are left out of the lines.
    """
    if not benches:
        raise ValueError("loss_benchmarks: nothing to plot")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    for i, (label, results) in enumerate(benches.items()):
        rows = list(results["rows"]) if isinstance(results, Mapping) else list(results)
        ls, marker = styles[i % len(styles)]
        for impl in dict.fromkeys(r["impl"] for r in rows):
            for ax, key in zip(axes, ("ms", "peak_mib")):
                pts = sorted((r["n"], r[key]) for r in rows if r["impl"] == impl and r.get(key) is not None)
                if not pts:
                    continue
                n, v = zip(*pts)
                ax.plot(n, v, ls=ls, marker=marker, color=IMPL_COLOURS.get(impl, PALETTE["other"]),
                        label=f"{impl} ({label})" if len(benches) > 1 else impl)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ns = sorted({r["n"] for results in benches.values()
                 for r in (results["rows"] if isinstance(results, Mapping) else results)})
    for ax, ylabel in zip(axes, ("forward + backward, ms", "peak memory above inputs, MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = [n for n in ns if n & (n - 1) == 0] or ns          # powers of two: labels never collide
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if v < 1e5 else f"$10^{{{round(np.log10(v))}}}$"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("batch size N")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        sns.despine(ax=ax)
    handles, labels = axes[1].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0].get_legend_handles_labels()
    axes[1].legend(handles, labels, frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title)
    return fig


__all__ += ["IMPL_COLOURS", "loss_benchmarks"]


# ----------------------------------------------------------------------------- retrieval (chapter 4)

def retrieval_grid(
    images: torch.Tensor,
    labels: ArrayLike,
    embeddings: Mapping[str, ArrayLike],
    queries: Sequence[int],
    k: int = 5,
    class_names: Optional[Sequence[str]] = None,
    cell: float = 0.95,
) -> Figure:
    """Queries and their ``k`` nearest neighbours under several embeddings: what Recall@K counts.

    One block of rows per query, one row per embedding (e.g. teacher, triplet
    student, RKD-DA student): the query image, then its neighbours by
    Euclidean distance, nearest first (the query itself excluded, as in
    :func:`rkd_tutorial.evaluate.recall_at_k`). A neighbour of the query's
    class gets a green frame, any other a red one.

    Args:
        images: ``N x 1 x H x W`` (or ``N x H x W``) images, in the order of the embeddings.
        labels: ``N`` labels.
        embeddings: ``{name: N x D}``.
        queries: indices of the query images.
    """
    imgs = _tensor(images)
    imgs = imgs.reshape(len(imgs), -1, *imgs.shape[-2:])[:, 0]
    y = _tensor(labels).long()
    names = list(embeddings)
    rows = len(queries) * len(names)
    fig, axes = plt.subplots(rows, k + 1, figsize=(cell * (k + 1) + 1.2, cell * rows), squeeze=False,
                             layout="constrained")
    for qi, q in enumerate(queries):
        for ei, name in enumerate(names):
            e = _tensor(embeddings[name])
            d = torch.cdist(e[q:q + 1], e)[0]
            d[q] = float("inf")
            nearest = d.topk(k, largest=False).indices.tolist()
            row = axes[qi * len(names) + ei]
            for j, idx in enumerate([q] + nearest):
                ax = row[j]
                ax.imshow(imgs[idx].numpy(), cmap="gray_r")
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(name, fontsize="x-small", rotation=0, ha="right", va="center")
                    title = class_names[int(y[q])] if class_names is not None else f"class {int(y[q])}"
                    if ei == 0:
                        ax.set_title(f"query: {title}", fontsize="x-small")
                    colour = "black"
                else:
                    colour = "#029e73" if y[idx] == y[q] else "#d55e00"
                for spine in ax.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(2.0 if j else 1.0)
            if qi == 0 and ei == 0:
                for j in range(1, k + 1):
                    row[j].set_title(f"#{j}", fontsize="x-small")
    return fig


# ----------------------------------------------------------------------------- where each loss attaches

def loss_diagram(stages: int = 3) -> Figure:
    """A diagram of teacher and student networks and where each distillation loss compares them.

    The two networks run on the same batch: ``stages`` convolution stages
    (feature maps, :attr:`rkd_tutorial.models.Output.stages`), global pooling
    (``pooled``), and a head (``embedding`` for metric learning, ``logits``
    for classification). FitNet compares one stage's feature maps through a
    regressor; attention transfer compares the attention maps of several
    stages; Hinton KD the softened logits; RKD and DarkRank the relations
    among the examples' embeddings (or pooled features): example by example
    versus batch by batch.
    """
    fig, ax = plt.subplots(figsize=(9.5, 4.2), layout="constrained")
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 6)
    ax.axis("off")
    boxes = ["input"] + [f"stage {i + 1}" for i in range(stages)] + ["pooled", "embedding /\nlogits"]
    xs = np.linspace(0.7, 8.3, len(boxes))
    for y0, who in ((4.3, "teacher"), (0.9, "student")):
        colour = PALETTE[who]
        ax.text(0.05, y0 + 0.95, who, color=colour, fontsize="large", fontweight="bold")
        for i, (x, name) in enumerate(zip(xs, boxes)):
            ax.add_patch(plt.Rectangle((x - 0.55, y0), 1.1, 0.75, facecolor=colour, alpha=0.18 if i else 0.08,
                                       edgecolor=colour))
            ax.text(x, y0 + 0.375, name, ha="center", va="center", fontsize="small")
            if i:
                ax.annotate("", (x - 0.56, y0 + 0.375), (xs[i - 1] + 0.56, y0 + 0.375),
                            arrowprops=dict(arrowstyle="->", color=colour))
    at = "#ca9161"
    for x in xs[1:stages + 1]:
        ax.annotate("", (x - 0.2, 1.68), (x - 0.2, 4.28), arrowprops=dict(arrowstyle="<->", color=at, lw=1.2))
    ax.text(xs[1] - 0.3, 2.98, "attention transfer\n(every stage's\nattention map)", color=at, fontsize="x-small",
            va="center", ha="right")
    links = [
        (xs[stages] + 0.2, 2.3, "FitNet\n(one stage,\nvia a regressor)", "#cc78bc"),
        (xs[-2], 3.55, "RKD\n(classification:\npooled features)", PALETTE["other"]),
        (xs[-1], 2.6, "Hinton KD (logits)\nRKD, DarkRank\n(embedding)", "#d55e00"),
    ]
    for x, y, text, colour in links:
        ax.annotate("", (x, 1.68), (x, 4.28), arrowprops=dict(arrowstyle="<->", color=colour, lw=2))
        ax.text(x + 0.08, y, text, color=colour, fontsize="x-small", va="center")
    ax.text(5.0, 5.75, "individual losses compare each example's outputs; relational losses (RKD, DarkRank) "
            "compare the relations among a batch's outputs", ha="center", fontsize="x-small", style="italic")
    return fig


# ----------------------------------------------------------------------------- how the angle loss walks the cube (chapter 3)

def anchor_walk(n: int = 8, chunk: int = 3, block: int = 4) -> Figure:
    """How the chunked PyTorch loss and the fused kernel cover the ``N x N x N`` cube of triplets.

    Left: the chunked loss takes the anchors ``a`` a chunk at a time and
    builds that chunk's ``chunk x N x N`` slab of angle potentials. Right: the
    kernel holds one ``block x block`` tile of pairs ``(b, c)`` (upper
    triangle only, by symmetry) and walks along the anchors, so a column of
    the cube passes through registers and nothing of size ``N^3`` is stored.
    """
    fig = plt.figure(figsize=(10, 4.2), layout="constrained")

    def cube(ax, colours, title):
        filled = np.zeros((n, n, n), dtype=bool)
        facecolors = np.empty((n, n, n), dtype=object)
        for (a, b, c), colour in colours.items():
            filled[a, b, c] = True
            facecolors[a, b, c] = colour
        ax.voxels(filled, facecolors=facecolors, edgecolor=(0, 0, 0, 0.15), linewidth=0.3)
        ax.set_xlabel("anchor a")
        ax.set_ylabel("b")
        ax.set_zlabel("c")
        ax.set_title(title, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        ax.view_init(elev=22, azim=-58)

    left = {}
    for a in range(n):
        shade = (1.0, 0.55, 0.1, 0.85) if a < chunk else ((0.6, 0.6, 0.6, 0.12) if a < 2 * chunk else None)
        if shade is None:
            continue
        for b in range(n):
            for c in range(n):
                left[(a, b, c)] = shade
    cube(fig.add_subplot(1, 2, 1, projection="3d"), left,
         f"chunked loss: anchors {chunk} at a time\n(one slab of {chunk} x N x N in memory)")
    right = {}
    for a in range(n):
        for b in range(n):
            for c in range(n):
                if b // block <= c // block:                    # the upper block triangle of tiles
                    in_tile = b < block <= c                      # the tile (b in 0..3, c in 4..7)
                    alpha = (0.95 if a == 2 else 0.45) if in_tile else 0.08
                    right[(a, b, c)] = (0.0, 0.45, 0.7, alpha)
    cube(fig.add_subplot(1, 2, 2, projection="3d"), right,
         f"fused kernel: a {block} x {block} tile of pairs (b, c) (tiles below the diagonal\nare skipped) "
         "walks along the anchors; dark: the current anchor")
    return fig


__all__ += ["retrieval_grid", "loss_diagram", "anchor_walk"]


# ----------------------------------------------------------------------------- embedding size (chapter 4)

def metric_by_size(
    results: Mapping,
    metric: str = "recall@1",
    methods: Sequence[str] = ("triplet", "rkd-da"),
    labels: Optional[Mapping[str, str]] = None,
    title: Optional[str] = None,
    ax: Optional[plt.Axes] = None,
) -> Figure:
    """``metric`` against the students' embedding size, one line per method, the teacher as a dashed line.

    Each point is a method's mean over its seeds at one ``embedding_dim``, with
    the standard deviation over seeds as an error bar where there are several
    seeds (none from one seed); the methods' points are shifted slightly sideways
    so that their error bars do not hide each other. The x axis is logarithmic (base 2) with a tick
    at each size. The ``teacher`` rows (any size) give the horizontal line.

    Args:
        results: a dict with ``"rows"`` (``method``, ``embedding_dim``, ``seed``, ``metric``).
        methods: the methods to draw; the first gets the student colour (orange).
        labels: display names of the methods (default: the names).

    Returns:
        The figure.
    """
    rows = list(results["rows"]) if isinstance(results, Mapping) else list(results)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.6, 3.6), layout="constrained")
    else:
        fig = ax.figure
    colours = [PALETTE["student"], PALETTE["other"]] + sns.color_palette("colorblind")[3:]
    markers = ["o", "s", "^", "D", "v"]
    sizes = set()
    for i, m in enumerate(methods):
        dims = sorted({r["embedding_dim"] for r in rows if r["method"] == m and metric in r})
        if not dims:
            raise ValueError(f"metric_by_size: no rows of {m!r} with {metric!r}")
        sizes.update(dims)
        vals = [np.array([r[metric] for r in rows if r["method"] == m and r["embedding_dim"] == d]) for d in dims]
        means = np.array([v.mean() for v in vals])
        errs = np.array([v.std(ddof=1) if len(v) > 1 else np.nan for v in vals])
        name = (labels or {}).get(m, m)
        x = np.array(dims, dtype=float) * 2.0 ** (0.06 * (i - (len(methods) - 1) / 2))   # side by side
        ax.plot(x, means, marker=markers[i % len(markers)], color=colours[i % len(colours)], lw=1.8,
                label=name)
        if np.isfinite(errs).any():
            ok = np.isfinite(errs)
            ax.errorbar(x[ok], means[ok], yerr=errs[ok], fmt="none", ecolor=colours[i % len(colours)],
                        elinewidth=1, capsize=3)
    teacher = [r[metric] for r in rows if r["method"] == "teacher" and metric in r]
    if teacher:
        dim_t = {r.get("embedding_dim") for r in rows if r["method"] == "teacher"}
        size = f", {dim_t.pop()}-d" if len(dim_t) == 1 else ""
        ax.axhline(float(np.mean(teacher)), color=PALETTE["teacher"], ls="--", lw=1.5,
                   label=f"teacher{size} ({np.mean(teacher):.3f})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(sizes), [str(d) for d in sorted(sizes)])
    ax.minorticks_off()
    ax.set_xlabel("student embedding size")
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, fontsize="small", loc="lower right")
    sns.despine(ax=ax)
    return fig


__all__ += ["metric_by_size"]


# ----------------------------------------------------------------------------- paired comparisons (chapters 5, 6)

def interval_panel(
    comparisons: Sequence,
    ax: Optional[plt.Axes] = None,
    xs: Optional[Sequence[float]] = None,
    names: Optional[Sequence[str]] = None,
    reference_x: Optional[float] = None,
    reference_name: Optional[str] = None,
    relative: bool = False,
    title: Optional[str] = None,
    xlabel: Optional[str] = None,
    ylabel: Optional[str] = None,
    colour: Optional[str] = None,
) -> Figure:
    """Comparisons against a reference (:class:`rkd_tutorial.stats.Comparison`) as points with their 95% intervals.

    Each comparison ``c`` (``c.a`` against ``c.b``) is a point at its mean
    ``c.mean_a``, with a bar (no caps) over ``c.mean_b + [c.low, c.high]``:
    the interval of the paired difference placed around the point, so a bar
    that crosses the reference's dotted line is "no detectable difference" and
    one that clears it is a verdict. Decisive comparisons are filled, the
    others hollow; each is labelled with its difference in points. One seed
    (no interval) gives a point without a bar.

    Args:
        xs: x positions (default 0, 1, ...); ``names``: their tick labels.
        reference_x: where to mark the reference itself (a ringed point at its
            mean, with ``reference_name`` added to the tick labels), or None.
        relative: plot the differences in points (``100 * c.diff``, interval
            ``100 * [c.low, c.high]``) around a zero line instead, e.g. when
            each comparison has its own reference.

    Returns:
        The figure.
    """
    comparisons = list(comparisons)
    if not comparisons:
        raise ValueError("interval_panel: no comparisons")
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(comparisons) + 1.5), 3.4), layout="constrained")
    else:
        fig = ax.figure
    colour = colour or PALETTE["student"]
    xs = list(xs) if xs is not None else list(range(len(comparisons)))
    labels = list(names) if names is not None else [c.a for c in comparisons]
    scale = 100.0 if relative else 1.0
    for x, c in zip(xs, comparisons):
        base = 0.0 if relative else c.mean_b
        y = scale * c.diff + base if relative else c.mean_a
        top = y
        if c.low is not None:
            lo, hi = base + scale * c.low, base + scale * c.high
            ax.plot([x, x], [lo, hi], color=colour, lw=2, solid_capstyle="butt")
            top = hi
        ax.plot([x], [y], "o", ms=7, color=colour, mfc=colour if c.decisive else "white", mew=1.8, zorder=3)
        ax.annotate(f"{100 * c.diff:+.1f}", (x, top), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize="x-small")
    refs = sorted({c.mean_b for c in comparisons})
    if relative:
        ax.axhline(0.0, color="0.4", ls=":", lw=1.2)
    elif len(refs) == 1:
        ax.axhline(refs[0], color="0.4", ls=":", lw=1.2)
        if reference_x is not None:
            ax.plot([reference_x], [refs[0]], "o", ms=11, mfc="none", mew=2, color=colour, zorder=3)
    ticks, tick_labels = list(xs), list(labels)
    if reference_x is not None and not relative:
        ticks.append(reference_x)
        tick_labels.append(reference_name or comparisons[0].b)
    order = np.argsort(ticks)
    ax.set_xticks([ticks[i] for i in order], [tick_labels[i] for i in order], fontsize="small")
    ax.margins(x=0.25, y=0.15)
    if title:
        ax.set_title(title, fontsize="medium")
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    sns.despine(ax=ax)
    return fig


__all__ += ["interval_panel"]
