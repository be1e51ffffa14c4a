"""Results files: written safely, resumed, merged, and found again by the chapters.

A run of ``python -m rkd_tutorial ...`` writes ``<stem>.json`` (the rows and
their provenance) and ``<stem>.md`` (the same as a table, with the book's
comparisons, :mod:`rkd_tutorial.stats`). What this module guarantees:

* **Nothing half-written.** Each file is written to a temporary file and
  renamed into place; the pair is renamed together with Ctrl-C held back, and
  the ``.md`` names the SHA-256 of the JSON it was made from
  (:func:`check_pair`), so a mismatched pair is detected, never read as valid.
* **Nothing destroyed.** While a run is under way its rows go to
  ``<stem>.partial.json`` / ``.md`` (marked incomplete); the finished files
  replace ``<stem>.json`` only at the end. A new run refuses to start over a
  partial one unless told to ``resume`` it (keep the rows already measured
  for the same settings, train only the missing ones) or to ``overwrite`` it.
* **One run per file.** A lock file ``<stem>.lock`` keeps a second run from
  writing the same results at the same time.
* **Merging checks.** :func:`merge_results` refuses parts of different
  experiments or settings, duplicated seeds and unfinished parts, before it
  writes anything.

The chapters read the results shipped with the package (:func:`results_dir`),
the same bytes as the repository's ``results/`` folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .provenance import write_atomic
from .stats import compare_methods

__all__ = [
    "results_dir", "load_results", "results_path", "markdown_table", "write_results", "check_pair",
    "merge_results", "RunFile", "ResultsLocked", "PACKAGE_RESULTS",
]

#: The results shipped with the package (package data; the same bytes as the repository's results/).
PACKAGE_RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- finding results

def results_dir() -> Path:
    """Where the chapters read results: ``$RKD_RESULTS`` if set, else the package's shipped copy.

    To show your own runs in the chapters, point ``RKD_RESULTS`` at the folder
    your ``python -m rkd_tutorial ... --out DIR`` wrote.
    """
    env = os.environ.get("RKD_RESULTS", "").strip()
    return Path(env).expanduser() if env else PACKAGE_RESULTS


def results_path(name: str) -> Path:
    """The path of one results file (e.g. ``"metric-quick.json"``) in :func:`results_dir`."""
    return results_dir() / name


def _how_to_make(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    if stem.startswith("bench-"):
        kind = stem.split("-")[1]
        return f"python -m rkd_tutorial.bench {kind} --out DIR"
    experiment, _, profile = stem.partition("-")
    return f"python -m rkd_tutorial {experiment} --profile {profile or 'quick'} --seeds 5 --out DIR"


def load_results(name: str, required: bool = False) -> Optional[dict]:
    """Read a results file of :func:`results_dir`; None when it is not there (``required``: an error).

    Raises ``ValueError`` for a file that exists but is unfinished or does not
    parse, and ``FileNotFoundError`` (with ``required``) for a missing one; both
    messages say what to do.
    """
    path = results_path(name)
    if not path.exists():
        if not required:
            return None
        raise FileNotFoundError(
            f"no results file {name} in {path.parent}. The package ships the book's results; a "
            f"package installed without them needs reinstalling (pip install rkd_tutorial). To use "
            f"your own run instead: {_how_to_make(name)}, then set RKD_RESULTS=DIR."
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); make it again: {_how_to_make(name)}") from err
    if not data.get("provenance", {}).get("complete", True):
        raise ValueError(f"{path} holds an unfinished run; finish it with --resume")
    return data


# ----------------------------------------------------------------------------- tables

def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _default_compare(rows: Sequence[dict]) -> List[dict]:
    """What to compare in a file that does not say (files written before ``compare`` existed)."""
    methods = {r["method"] for r in rows}
    if "triplet" in methods and any("recall@1" in r for r in rows):
        return [{"metric": "recall@1", "reference": "triplet", "group_by": ["embedding_dim"]}]
    if "baseline" in methods and any("accuracy" in r for r in rows):
        return [{"metric": "accuracy", "reference": "baseline"}]
    return []


def _comparisons(results: dict) -> List[str]:
    """The ``.md``'s comparison lines: every method against its reference, by the book's rule.

    ``results["compare"]`` lists what to compare: ``{"metric", "reference", "group_by"}``
    each (e.g. Recall@1 against ``triplet``, per embedding size).
    """
    lines: List[str] = []
    for spec in results.get("compare") or _default_compare(results["rows"]):
        by = spec.get("group_by", [])
        rows = [r for r in results["rows"] if spec["metric"] in r]
        groups = {tuple(r.get(k) for k in by) for r in rows}
        for group in sorted(groups, key=lambda g: [(isinstance(v, str), v) for v in g]):
            where = dict(zip(by, group))
            members = [r for r in rows if all(r.get(k) == v for k, v in where.items())]
            if spec["reference"] not in {r["method"] for r in members} or len({r["method"] for r in members}) < 2:
                continue
            label = ", ".join(f"{k} {v}" for k, v in where.items())
            lines += ["", f"Against `{spec['reference']}`{' (' + label + ')' if label else ''}, {spec['metric']} "
                          "in points (mean paired difference and its 95% t interval, `rkd_tutorial.stats`):", ""]
            lines += [f"- {c.sentence()}" for c in compare_methods(members, spec["metric"], spec["reference"])]
    return lines


def markdown_table(results: dict, json_sha256: Optional[str] = None) -> str:
    """The rows as a Markdown table with the provenance above it and the comparisons below."""
    rows = results["rows"]
    prov = results["provenance"]
    head = (f"{prov.get('experiment', 'Results')}: profile `{prov['profile']}`"
            f"{' at smoke scale (not a result)' if prov.get('smoke') else ''} on {prov['device']}, "
            f"torch {prov['torch']}, commit `{str(prov['commit'])[:12]}`, {prov['wall_s']} s.")
    if not prov.get("complete", True):
        head = (f"**Incomplete run: {len(rows)} of {prov.get('planned_rows', '?')} rows so far** "
                "(finish it with `--resume`). " + head)
    lines = [head]
    if json_sha256:
        lines.append(f"<!-- rows: {len(rows)}, json sha256: {json_sha256} -->")
    if rows:
        metrics = [k for k in rows[0] if k.startswith("recall@") or k == "accuracy"]
        extra = [k for k in ("embedding_dim", "variant") if any(k in r for r in rows)]
        cols = ["method", "seed"] + extra + metrics
        lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    if prov.get("complete", True):
        lines += _comparisons(results)
        lines += [""] + [f"{note}" for note in results.get("notes", [])] if results.get("notes") else []
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- writing a pair

@contextlib.contextmanager
def _no_interrupt():
    """Hold back Ctrl-C (SIGINT) until the block is done; then deliver it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *a: received.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(*received[0])


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_results(results: dict, out_dir, stem: str) -> Path:
    """Write ``out_dir/stem.json`` and ``out_dir/stem.md`` as one pair; returns the JSON path.

    Both are written to temporary files first, then renamed with Ctrl-C held
    back, so an interrupt leaves the old pair or the new one.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    md = markdown_table(results, _sha256(text))
    path = out / f"{stem}.json"
    staged = []
    try:
        for target, content in ((path, text), (out / f"{stem}.md", md)):
            tmp = out / f".{target.name}.staged"
            write_atomic(tmp, lambda t, c=content: Path(t).write_text(c))
            staged.append((tmp, target))
        with _no_interrupt():
            for tmp, target in staged:
                mode = target.stat().st_mode & 0o777 if target.exists() else None
                os.replace(tmp, target)
                if mode is not None:
                    os.chmod(target, mode)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return path


def check_pair(json_path) -> bool:
    """True when ``<stem>.md`` was made from the ``<stem>.json`` beside it (its SHA-256 matches)."""
    json_path = Path(json_path)
    md = json_path.with_suffix(".md")
    if not (json_path.exists() and md.exists()):
        return False
    return f"json sha256: {_sha256(json_path.read_text())}" in md.read_text()


# ----------------------------------------------------------------------------- one run's files

class ResultsLocked(RuntimeError):
    """Another run holds the lock of these results."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFile:
    """The results files of one run: lock, partial rows, resume, and the finished pair.

    Args:
        out_dir, stem: the files are ``out_dir/stem.json`` and ``.md``.
        settings: what must be equal for rows to be reused (the profile's settings).
        planned: the keys of every row the run will produce (for "k of n rows").
        key: maps a row to its key (e.g. ``(method, seed, embedding_dim)``).
        resume: keep the rows of an earlier run with the same settings (from its
            partial file, else from its finished file) and report them as done.
        overwrite: start over even if a partial run is there.

    Use as a context manager: the lock is taken on entry (after checking that
    the folder is writable) and released on exit.
    """

    def __init__(self, out_dir, stem: str, settings: dict, planned: Sequence[tuple],
                 key: Callable[[dict], tuple], resume: bool = False, overwrite: bool = False):
        self.out, self.stem = Path(out_dir), stem
        self.settings = json.loads(json.dumps(settings))     # as it reads back from a file (tuples -> lists)
        self.planned, self.key = list(planned), key
        self.resume, self.overwrite = resume, overwrite
        self.rows: List[dict] = []
        self.resumed_from: Optional[dict] = None
        self._locked = False

    # paths
    @property
    def final(self) -> Path:
        return self.out / f"{self.stem}.json"

    @property
    def partial(self) -> Path:
        return self.out / f"{self.stem}.partial.json"

    @property
    def lock(self) -> Path:
        return self.out / f"{self.stem}.lock"

    @property
    def work(self) -> Path:
        """A folder for checkpoints of this run (teachers, students), removed when it finishes."""
        return self.out / f".{self.stem}.work"

    # life cycle
    def __enter__(self) -> "RunFile":
        self._check_writable()
        self._take_lock()
        try:
            self._load_earlier()
        except BaseException:
            self._release_lock()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release_lock()

    def _check_writable(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".{self.stem}.probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise OSError(f"cannot write results to {self.out} ({err.strerror or err}); choose another --out") from err

    def _take_lock(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    held = json.loads(self.lock.read_text())
                except (OSError, json.JSONDecodeError):
                    held = {}
                if held.get("host") == info["host"] and isinstance(held.get("pid"), int) and not _alive(held["pid"]):
                    self.lock.unlink(missing_ok=True)          # its run died: a stale lock
                    continue
                raise ResultsLocked(
                    f"{self.out / self.stem}.* is being written by another run (process {held.get('pid')} on "
                    f"{held.get('host')}, started {held.get('started')}). Wait for it, choose another --out, "
                    f"or, if no such run exists any more, delete {self.lock}."
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            self._locked = True
            return
        raise ResultsLocked(f"could not take the lock {self.lock}")

    def _release_lock(self) -> None:
        if self._locked:
            self.lock.unlink(missing_ok=True)
            self._locked = False

    def _load_earlier(self) -> None:
        if self.partial.exists() and not (self.resume or self.overwrite):
            earlier = json.loads(self.partial.read_text())
            raise FileExistsError(
                f"{self.partial} holds an unfinished run ({len(earlier.get('rows', []))} of "
                f"{earlier.get('provenance', {}).get('planned_rows', '?')} rows, started "
                f"{earlier.get('provenance', {}).get('date', '?')}). Run again with --resume to keep its rows "
                "and train only the missing ones, or with --overwrite to start over."
            )
        if not self.resume:
            return
        source = self.partial if self.partial.exists() else (self.final if self.final.exists() else None)
        if source is None:
            return
        earlier = json.loads(source.read_text())
        theirs = earlier.get("provenance", {}).get("profile_settings")
        if theirs != self.settings:
            changed = sorted(k for k in set(theirs or {}) | set(self.settings)
                             if (theirs or {}).get(k) != self.settings.get(k))
            raise ValueError(
                f"--resume: {source} was made with other settings ({', '.join(changed) or 'unknown'} differ); "
                "its rows cannot be reused. Use another --out, or --overwrite to start over."
            )
        wanted = set(self.planned)
        self.rows = [r for r in earlier["rows"] if self.key(r) in wanted]
        self.resumed_from = {"file": source.name, "commit": earlier["provenance"].get("commit"),
                             "rows": len(self.rows)}

    # rows
    def done(self, key: tuple) -> bool:
        return any(self.key(r) == key for r in self.rows)

    def row(self, key: tuple) -> Optional[dict]:
        return next((r for r in self.rows if self.key(r) == key), None)

    def write_partial(self, results: dict) -> None:
        """Write ``results`` (holding :attr:`rows` so far) as the partial pair, marked incomplete."""
        write_results(results, self.out, f"{self.stem}.partial")

    def finish(self, results: dict) -> Path:
        """Write the finished pair, then remove the partial pair and the work folder."""
        path = write_results(results, self.out, self.stem)
        for p in (self.partial, self.partial.with_suffix(".md")):
            p.unlink(missing_ok=True)
        if self.work.exists():
            for f in sorted(self.work.rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
            self.work.rmdir()
        return path


# ----------------------------------------------------------------------------- merging parts

def merge_results(parts: Sequence[dict], allow_incomplete: bool = False) -> dict:
    """One results dict from runs of the same experiment with different seeds.

    Checks, before anything is written: every part is of the same experiment
    and profile with the same settings, no seed appears in two parts, and every
    part finished (unless ``allow_incomplete``). Rows are concatenated by seed;
    ``wall_s`` is the longest part's (they ran side by side); each part's
    provenance is kept under ``parts``.
    """
    if not parts:
        raise ValueError("merge: nothing to merge")
    provs = [p.get("provenance", {}) for p in parts]
    for field in ("experiment", "profile", "profile_settings"):
        values = {json.dumps(p.get(field), sort_keys=True) for p in provs}
        if len(values) != 1:
            raise ValueError(f"merge: the parts differ in {field} ({', '.join(sorted(values))}); "
                             "merge only per-seed runs of one command")
    seen: Dict[int, int] = {}
    for i, p in enumerate(parts):
        for s in {int(r["seed"]) for r in p["rows"]}:
            if s in seen:
                raise ValueError(f"merge: seed {s} is in part {seen[s] + 1} and part {i + 1}; "
                                 "was a file given twice?")
            seen[s] = i
    unfinished = [i + 1 for i, p in enumerate(provs) if not p.get("complete", True)]
    if unfinished and not allow_incomplete:
        raise ValueError(f"merge: part(s) {unfinished} did not finish; finish them with --resume, "
                         "or merge with --allow-incomplete (the result is marked incomplete)")
    order = sorted(range(len(parts)), key=lambda i: min((int(r["seed"]) for r in parts[i]["rows"]), default=0))
    prov = dict(provs[order[0]])
    prov["seeds"] = sorted(seen)
    prov["wall_s"] = max(p.get("wall_s", 0.0) for p in provs)
    prov["complete"] = not unfinished
    prov["parts"] = [{k: provs[i].get(k) for k in ("seeds", "wall_s", "commit", "date", "complete")} for i in order]
    merged = {"provenance": prov, "rows": [r for i in order for r in parts[i]["rows"]]}
    for field in ("compare", "notes"):
        if field in parts[0]:
            merged[field] = parts[0][field]
    return merged
