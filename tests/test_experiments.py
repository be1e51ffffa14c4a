"""The experiments on the CPU: profiles, methods, teachers, runs, results files, the command line.

Runs use the smoke scale (``RKD_SMOKE=1``: the profile's networks on a few
batches, one epoch), so each takes seconds.
"""

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import warnings

import pytest
import torch

from rkd_tutorial import __main__ as cli
from rkd_tutorial import experiments as ex
from rkd_tutorial import resultfiles as rf
from rkd_tutorial.experiments import profiles, record, runs, teachers
from rkd_tutorial.models import Classifier, EmbeddingNet, SmallCNN


@pytest.fixture
def smoke(monkeypatch):
    monkeypatch.setenv("RKD_SMOKE", "1")
    monkeypatch.delenv("RKD_PROFILE", raising=False)


# ----------------------------------------------------------------------------- the profile policy

def test_quick_is_the_default_everywhere_even_with_a_gpu(monkeypatch):
    monkeypatch.delenv("RKD_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ex.default_profile() == "quick"
    assert ex.metric_profile().name == "quick" and ex.classify_profile().name == "quick"
    monkeypatch.setenv("RKD_PROFILE", "full")
    assert ex.default_profile() == "full" and ex.metric_profile().name == "full"
    monkeypatch.setenv("RKD_PROFILE", "huge")
    with pytest.raises(ValueError, match="quick, full"):
        ex.default_profile()


def test_the_command_line_takes_its_default_profile_from_the_environment(monkeypatch):
    monkeypatch.setenv("RKD_PROFILE", "full")
    args = cli._parser().parse_args(["metric"])
    assert args.profile is None          # resolved by default_profile() when the run starts
    monkeypatch.delenv("RKD_PROFILE")
    assert ex.default_profile() == "quick"


@pytest.mark.parametrize("name", ["quick", "full"])
def test_the_smoke_scale_keeps_networks_and_sizes_and_shrinks_data_and_epochs(monkeypatch, name):
    monkeypatch.setenv("RKD_SMOKE", "1")
    for real, small in ((ex.METRIC_PROFILES[name], ex.metric_profile(name)),
                        (ex.CLASSIFY_PROFILES[name], ex.classify_profile(name))):
        assert small.smoke and not real.smoke
        kept = {f.name for f in dataclasses.fields(real)} - {"train_per_class", "test_per_class", "teacher_epochs",
                                                               "student_epochs", "smoke"}
        assert all(getattr(real, k) == getattr(small, k) for k in kept)
        assert small.teacher_epochs == small.student_epochs == 1
        assert small.train_per_class * 10 <= 2 * small.batch_size * 5
    # the smoke data make whole batches with the profile's sampler and batch size
    train, test = ex.metric_data(ex.metric_profile(name), "cpu")
    assert len(train) >= 1 and len(test.labels) == 100
    train, _ = ex.classify_data(ex.classify_profile(name), "cpu")
    assert len(train) >= 1


# ----------------------------------------------------------------------------- methods

def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.arange(4).repeat(n // 4)


EXPECTED_METRIC = {
    "triplet": ["triplet"], "fitnet": ["triplet", "fitnet"], "attention": ["triplet", "attention"],
    "darkrank": ["triplet", "darkrank"], "rkd-d": ["rkd-d"], "rkd-a": ["rkd-a"], "rkd-da": ["rkd-da"],
}
EXPECTED_CLASSIFY = {
    "baseline": ["ce"], "hkd": ["ce", "hkd"], "fitnet": ["ce", "fitnet"], "attention": ["ce", "attention"],
    "rkd-d": ["ce", "rkd-d"], "rkd-da": ["ce", "rkd-da"], "hkd+rkd-da": ["ce", "hkd", "rkd-da"],
}


def _check_finite_and_backward(terms, student, teacher, y=None):
    x, labels = _batch()
    y = labels if y is None else y
    with torch.no_grad():
        t_out = teacher(x)
    loss = sum(t.weight * t.fn(student(x), t_out, y) for t in terms)
    assert torch.isfinite(loss)
    loss.backward()


@pytest.mark.parametrize("method", ex.METRIC_METHODS)
def test_metric_terms_of_every_method_give_a_finite_differentiable_loss(method):
    assert set(EXPECTED_METRIC) == set(ex.METRIC_METHODS)
    torch.manual_seed(0)
    student = EmbeddingNet(SmallCNN((4, 8, 8)), 6)
    teacher = EmbeddingNet(SmallCNN((8, 8, 16)), 12, normalize=True).eval()
    terms = ex.metric_terms(method, student, teacher)
    assert [t.name for t in terms] == EXPECTED_METRIC[method]
    _check_finite_and_backward(terms, student, teacher)
    assert student.head.weight.grad is not None


@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("method", ex.CLASSIFY_METHODS)
def test_classify_terms_of_every_method_give_a_finite_differentiable_loss(method, partial):
    torch.manual_seed(0)
    student = Classifier(SmallCNN((4, 8, 8)), 4)
    teacher = Classifier(SmallCNN((8, 8, 16)), 4).eval()
    terms = ex.classify_terms(method, student, teacher, partial_labels=partial)
    assert [t.name for t in terms] == EXPECTED_CLASSIFY[method]
    y = torch.tensor([0, -1, 2, -1] * 4) if partial else None
    _check_finite_and_backward(terms, student, teacher, y)
    assert student.fc.weight.grad is not None


def test_cross_entropy_on_the_labelled_examples_only():
    logits = torch.randn(6, 3)
    out = type("O", (), {"logits": logits})()
    y = torch.tensor([0, -1, 2, -1, 1, -1])
    term = ex.ce_labelled()
    expected = torch.nn.functional.cross_entropy(logits[y >= 0], y[y >= 0])
    assert torch.allclose(term.fn(out, None, y), expected)
    assert term.fn(out, None, torch.full((6,), -1)).item() == 0.0          # no labelled example: 0, not NaN


def test_unknown_methods_are_rejected_with_the_list_of_choices():
    s, t = EmbeddingNet(SmallCNN((4, 4, 4)), 4), EmbeddingNet(SmallCNN((4, 4, 4)), 4)
    with pytest.raises(ValueError, match="rkd-da"):
        ex.metric_terms("rkd", s, t)
    with pytest.raises(ValueError, match="baseline"):
        ex.classify_terms("kd", Classifier(SmallCNN((4, 4, 4))), Classifier(SmallCNN((4, 4, 4))))


# ----------------------------------------------------------------------------- teachers

def _ship(directory, experiment="metric", profile="quick", seed=0):
    torch.manual_seed(123)
    model = ex.teacher_architecture(experiment, profile)
    name = f"{experiment}-{profile}-seed{seed}.pt"
    torch.save({"model": model.state_dict(), "provenance": {"profile": profile}}, directory / name)
    digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    (directory / "SHA256SUMS").write_text(f"{digest}  {name}\n")
    return model, directory / name


@pytest.fixture
def teacher_dirs(tmp_path, monkeypatch):
    shipped, cache = tmp_path / "checkpoints", tmp_path / "data"
    shipped.mkdir()
    monkeypatch.setattr(teachers, "CHECKPOINTS", shipped)
    monkeypatch.setenv("RKD_DATA", str(cache))
    monkeypatch.delenv("RKD_SMOKE", raising=False)
    calls = []

    def fake_train(experiment, profile, seed, device_, progress):
        calls.append((experiment, profile, seed))
        torch.manual_seed(7)
        return ex.teacher_architecture(experiment, profile)

    monkeypatch.setattr(teachers, "train_teacher", fake_train)
    return shipped, cache / "checkpoints", calls


def test_a_shipped_teacher_whose_sha256_matches_is_used(teacher_dirs):
    shipped, _, calls = teacher_dirs
    model, _ = _ship(shipped)
    teacher, source = ex.load_or_train_teacher("metric", "quick", 0, "cpu", progress=False)
    assert source == "shipped" and not teacher.training and not calls
    for k, v in model.state_dict().items():
        assert torch.equal(v, teacher.state_dict()[k]), k


def test_a_tampered_shipped_teacher_is_reported_before_training_a_new_one(teacher_dirs):
    shipped, cache, calls = teacher_dirs
    _, path = _ship(shipped)
    state = torch.load(path, weights_only=True)
    state["model"]["head.bias"] += 1.0
    torch.save(state, path)
    with pytest.warns(RuntimeWarning, match="does not match its SHA-256"):
        _, source = ex.load_or_train_teacher("metric", "quick", 0, "cpu", progress=False)
    assert source == "trained" and calls == [("metric", "quick", 0)]
    assert (cache / "metric-quick-seed0.pt").exists()
    with pytest.warns(RuntimeWarning, match="SHA-256"):
        _, source = ex.load_or_train_teacher("metric", "quick", 0, "cpu", progress=False)
    assert source == "cache" and len(calls) == 1


def test_a_corrupt_cached_teacher_is_retrained_not_a_crash(teacher_dirs):
    _, cache, calls = teacher_dirs
    cache.mkdir(parents=True)
    (cache / "classify-quick-seed0.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(RuntimeWarning, match="cannot be used"):
        _, source = ex.load_or_train_teacher("classify", "quick", 0, "cpu", progress=False)
    assert source == "trained" and len(calls) == 1
    _, source = ex.load_or_train_teacher("classify", "quick", 0, "cpu", progress=False)
    assert source == "cache"


@pytest.mark.parametrize("value", ["", "~/rkd-data-test"])
def test_the_teacher_cache_follows_rkd_data_with_home_and_empty_values(teacher_dirs, monkeypatch, tmp_path, value):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RKD_DATA", value)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    ex.load_or_train_teacher("metric", "quick", 0, "cpu", progress=False)
    expected = tmp_path / "home" / (".cache/rkd_tutorial" if value == "" else "rkd-data-test")
    assert (expected / "checkpoints" / "metric-quick-seed0.pt").exists()
    assert not list((tmp_path / "cwd").iterdir())


def test_an_unwritable_teacher_cache_warns_and_still_returns_the_teacher(teacher_dirs, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RKD_DATA", str(blocker))
    with pytest.warns(RuntimeWarning, match="could not cache"):
        teacher, source = ex.load_or_train_teacher("metric", "quick", 0, "cpu", progress=False)
    assert source == "trained" and isinstance(teacher, EmbeddingNet)


@pytest.mark.parametrize("experiment", ["metric", "classify"])
def test_the_shipped_quick_teachers_match_their_sums_carry_provenance_and_come_from_this_code(experiment):
    name = f"{experiment}-quick-seed0.pt"
    path = ex.CHECKPOINTS / name
    assert path.exists(), f"{name} must ship with the package (python -m rkd_tutorial teacher {experiment})"
    sums = teachers._read_sums(ex.CHECKPOINTS / "SHA256SUMS")
    assert sums.get(name) == hashlib.sha256(path.read_bytes()).hexdigest()
    prov = torch.load(path, map_location="cpu", weights_only=True)["provenance"]
    assert prov["profile"] == "quick" and prov["seed"] == 0
    assert prov["code"] == ex.code_fingerprint(), (
        f"{name} was trained by other code; retrain it: python -m rkd_tutorial teacher {experiment}")


# ----------------------------------------------------------------------------- stats in results

def _results(seeds, profile="quick", complete=True, value=0.5, experiment="metric", settings=None):
    prov = ex.provenance(profile, 1.0, "cpu", experiment=experiment, seeds=list(seeds), complete=complete,
                         profile_settings=settings or {"train_per_class": 10})
    rows = [{"method": m, "seed": s, "embedding_dim": 16, "recall@1": value + 0.01 * s + (0.1 if m == "rkd-da" else 0),
             "recall@2": 0.7} for s in seeds for m in ("triplet", "rkd-da")]
    return {"provenance": prov, "rows": rows,
            "compare": [{"metric": "recall@1", "reference": "triplet", "group_by": ["embedding_dim"]}]}


def test_the_results_table_states_each_comparison_by_the_books_rule():
    md = rf.markdown_table(_results([0, 1, 2]))
    assert "| method | seed | embedding_dim | recall@1 | recall@2 |" in md
    assert "- rkd-da is better than triplet: recall@1 +10.0 [+10.0, +10.0] points" in md
    one = rf.markdown_table(_results([0]))
    assert "from a single seed, too few for a verdict" in one


# ----------------------------------------------------------------------------- writing results

def test_a_results_pair_is_written_together_and_checked(tmp_path):
    path = rf.write_results(_results([0, 1]), tmp_path, "metric-quick")
    assert rf.check_pair(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metric-quick.json", "metric-quick.md"]
    data = json.loads(path.read_text())
    data["rows"] = data["rows"][:1]
    path.write_text(json.dumps(data))                       # a JSON beside the table of another run
    assert not rf.check_pair(path)


def test_ctrl_c_during_the_pair_write_leaves_a_matching_pair(tmp_path, monkeypatch):
    rf.write_results(_results([0]), tmp_path, "metric-quick")
    real_replace = os.replace
    calls = []

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        if os.path.basename(dst).startswith("."):            # a staged temporary file
            return
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)             # Ctrl-C between the two renames

    monkeypatch.setattr(rf.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        rf.write_results(_results([0, 1, 2]), tmp_path, "metric-quick")
    assert len(calls) == 2 and rf.check_pair(tmp_path / "metric-quick.json")
    assert len(json.loads((tmp_path / "metric-quick.json").read_text())["rows"]) == 6
    assert not list(tmp_path.glob(".*"))


def test_a_failed_write_keeps_the_old_pair_and_no_temporary_files(tmp_path, monkeypatch):
    path = rf.write_results(_results([0]), tmp_path, "metric-quick")
    before = path.read_text()
    monkeypatch.setattr(rf.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        rf.write_results(_results([0], value=0.9), tmp_path, "metric-quick")
    assert path.read_text() == before and rf.check_pair(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metric-quick.json", "metric-quick.md"]


# ----------------------------------------------------------------------------- merging

def test_merge_unites_seeds_and_refuses_what_does_not_belong_together(tmp_path):
    merged = rf.merge_results([_results([1]), _results([0])])
    assert merged["provenance"]["seeds"] == [0, 1] and [r["seed"] for r in merged["rows"]] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="seed 0 is in part 1 and part 2"):
        rf.merge_results([_results([0]), _results([0])])
    with pytest.raises(ValueError, match="profile_settings"):
        rf.merge_results([_results([0]), _results([1], settings={"train_per_class": 99})])
    with pytest.raises(ValueError, match="experiment"):
        rf.merge_results([_results([0]), _results([1], experiment="classify")])
    with pytest.raises(ValueError, match="did not finish"):
        rf.merge_results([_results([0]), _results([1], complete=False)])
    assert rf.merge_results([_results([0]), _results([1], complete=False)], allow_incomplete=True)[
        "provenance"]["complete"] is False
    with pytest.raises(ValueError, match="nothing"):
        rf.merge_results([])


def test_cli_merge_writes_nothing_when_the_parts_do_not_belong_together(tmp_path, capsys):
    rf.write_results(_results([0]), tmp_path, "a")
    rf.write_results(_results([1], experiment="classify"), tmp_path, "b")
    rc = cli.main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "m.json")])
    assert rc == 2 and "experiment" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "m.md").exists()
    rf.write_results(_results([1]), tmp_path, "c")
    assert cli.main(["merge", str(tmp_path / "c.json"), str(tmp_path / "a.json"), "-o", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["provenance"]["seeds"] == [0, 1]


# ----------------------------------------------------------------------------- runs: resume, locks, late failures

class Interrupt(Exception):
    pass


def _interrupting_log(after_rows):
    seen = []

    def log(line):
        if line.startswith("  "):
            seen.append(line)
            if len(seen) == after_rows:
                raise Interrupt
    return log


def test_an_interrupted_run_keeps_its_rows_refuses_to_be_overwritten_and_resumes(tmp_path, smoke):
    out = tmp_path / "out"
    kw = dict(seeds=[0, 1], methods=["triplet", "rkd-da"], dims=[8], device="cpu", progress=False, out=out,
              self_distill=False)
    full = ex.run_metric("quick", **kw, log=lambda line: None)
    rows_all = [(r["method"], r["seed"], r["recall@1"]) for r in full["rows"]]
    (out / "metric-quick-smoke.json").rename(tmp_path / "reference.json")
    (out / "metric-quick-smoke.md").unlink()

    with pytest.raises(Interrupt):
        ex.run_metric("quick", **kw, log=_interrupting_log(4))
    partial = json.loads((out / "metric-quick-smoke.partial.json").read_text())
    assert len(partial["rows"]) == 3 and partial["provenance"]["complete"] is False
    assert "Incomplete run: 3 of 6 rows" in (out / "metric-quick-smoke.partial.md").read_text()
    assert not (out / "metric-quick-smoke.json").exists() and not (out / "metric-quick-smoke.lock").exists()

    with pytest.raises(FileExistsError, match="--resume"):
        ex.run_metric("quick", **kw, log=lambda line: None)
    trained = []
    resumed = ex.run_metric("quick", **kw, resume=True, log=trained.append)
    assert sum(line.startswith("  ") for line in trained) == 3                 # only the missing rows
    assert [(r["method"], r["seed"], r["recall@1"]) for r in resumed["rows"]] == rows_all
    assert resumed["provenance"]["resumed_from"]["rows"] == 3
    assert rf.check_pair(out / "metric-quick-smoke.json")
    assert sorted(p.name for p in out.iterdir()) == ["metric-quick-smoke.json", "metric-quick-smoke.md"]


def test_resume_refuses_rows_of_other_settings(tmp_path, smoke, monkeypatch):
    out = tmp_path / "out"
    kw = dict(seeds=[0], methods=["triplet"], dims=[8], device="cpu", progress=False, out=out, self_distill=False,
              log=lambda line: None)
    ex.run_metric("quick", **kw)
    other = dataclasses.replace(ex.metric_profile("quick"), student_lr=0.5)
    with pytest.raises(ValueError, match="student_lr"):
        ex.run_metric(other, **kw, resume=True)


def test_a_second_run_into_the_same_files_is_refused_while_the_first_holds_the_lock(tmp_path, smoke):
    out = tmp_path / "out"
    out.mkdir()
    (out / "classify-quick-smoke.lock").write_text(json.dumps(
        {"pid": os.getpid(), "host": __import__("socket").gethostname(), "started": "now"}))
    with pytest.raises(rf.ResultsLocked, match="another run"):
        ex.run_classify("quick", seeds=[0], methods=["baseline"], device="cpu", progress=False, out=out,
                        log=lambda line: None)
    # a lock left by a run that died is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / "classify-quick-smoke.lock").write_text(json.dumps(
        {"pid": int(dead.stdout), "host": __import__("socket").gethostname(), "started": "then"}))
    results = ex.run_classify("quick", seeds=[0], methods=["baseline"], device="cpu", progress=False, out=out,
                              log=lambda line: None)
    assert results["provenance"]["complete"] and not (out / "classify-quick-smoke.lock").exists()


def test_bad_settings_fail_before_anything_trains(tmp_path, smoke, monkeypatch, capsys):
    def must_not_run(*a, **k):
        raise AssertionError("trained before checking its settings")

    monkeypatch.setattr(runs, "metric_data", must_not_run)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc = cli.main(["metric", "--out", str(blocker / "results"), "--device", "cpu", "--no-progress"])
    assert rc == 2 and "cannot write results" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["metric", "--dims", "16", "x"])
    assert cli.main(["metric", "--dims", "16", "0", "--out", str(tmp_path)]) == 2
    assert "positive" in capsys.readouterr().err
    assert cli.main(["metric", "--dims", "8", "8", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        cli.main(["metric", "--resume", "--overwrite", "--out", str(tmp_path)])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            cli.main(["metric", "--device", "cuda", "--out", str(tmp_path)])


# ----------------------------------------------------------------------------- the command line, end to end

def test_cli_metric_writes_results_with_provenance_comparisons_and_the_teacher_check(tmp_path, smoke, capsys):
    out = tmp_path / "results"
    rc = cli.main(["metric", "--methods", "triplet", "rkd-da", "--dims", "8", "4", "--seeds", "2",
                   "--out", str(out), "--device", "cpu", "--no-progress"])
    assert rc == 0
    results = json.loads((out / "metric-quick-smoke.json").read_text())
    keys = [(r["method"], r["seed"], r["embedding_dim"]) for r in results["rows"]]
    assert keys == [(m, s, d) for s in (0, 1) for m, d in [("teacher", 128), ("triplet", 8), ("rkd-da", 8),
                                                          ("triplet", 4), ("rkd-da", 4), ("self-rkd-da", 128)]]
    prov = results["provenance"]
    assert prov["profile"] == "quick" and prov["smoke"] is True and prov["complete"] is True
    assert prov["experiment"] == "metric" and prov["code"] == ex.code_fingerprint() and prov["seeds"] == [0, 1]
    assert prov["train_settings"]["precision"] == "float32"
    assert results["notes"][0].startswith("Teacher check: ")
    md = (out / "metric-quick-smoke.md").read_text()
    assert "at smoke scale (not a result)" in md and "Against `triplet` (embedding_dim 8)" in md
    assert "self-rkd-da" in md and "Against `teacher` (embedding_dim 128)" in md
    printed = capsys.readouterr().out
    assert "metric, profile quick (smoke scale), seeds [0, 1]" in printed and "Teacher check" in printed


@pytest.mark.parametrize("command", ["classify", "darkknowledge", "consistency", "ablation"])
def test_cli_every_experiment_runs_at_smoke_scale(tmp_path, smoke, command):
    methods = {"classify": ["baseline", "rkd-da"], "darkknowledge": ["baseline", "hkd"],
               "consistency": ["hkd", "hkd+aug"],
               "ablation": ["reference", "batch 16", "on pooled features"]}[command]
    rc = cli.main([command, "--methods", *methods, "--out", str(tmp_path), "--device", "cpu", "--no-progress"])
    assert rc == 0
    results = json.loads((tmp_path / f"{command}-quick-smoke.json").read_text())
    assert results["provenance"]["experiment"] == command and results["provenance"]["complete"]
    assert {r["method"] for r in results["rows"]} == {"teacher", *methods}
    if command == "darkknowledge":
        assert {r["variant"] for r in results["rows"]} == {"teacher", "few-labels", "omit-pullover", "omit-sneaker"}
        omitted = [r for r in results["rows"] if r["variant"].startswith("omit-")]
        assert all(0 <= r["auc_omitted"] <= 1 for r in omitted)


def test_cli_teacher_writes_a_checkpoint_that_loads_as_shipped(tmp_path, smoke, monkeypatch):
    rc = cli.main(["teacher", "metric", "--out", str(tmp_path), "--device", "cpu"])
    assert rc == 0
    name = "metric-quick-smoke-seed0.pt"
    assert set(teachers._read_sums(tmp_path / "SHA256SUMS")) == {name}
    state = torch.load(tmp_path / name, map_location="cpu", weights_only=True)
    assert state["provenance"]["code"] == ex.code_fingerprint() and state["provenance"]["smoke"] is True
    monkeypatch.setattr(teachers, "CHECKPOINTS", tmp_path)
    monkeypatch.setenv("RKD_DATA", str(tmp_path / "cache"))
    teacher, source = ex.load_or_train_teacher("metric", "quick", 0, "cpu", progress=False)
    assert source == "shipped"
    for k, v in state["model"].items():
        assert torch.equal(v, teacher.state_dict()[k]), k


def test_code_fingerprint_ignores_docstrings_and_sees_code(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    root = Path(record.__file__).resolve().parent.parent
    copy = tmp_path / "rkd_tutorial"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pt", "results"))
    monkeypatch.setattr(record, "__file__", str(copy / "experiments" / "record.py"))
    before = ex.code_fingerprint()
    assert before == record.code_fingerprint()
    src = (copy / "losses" / "relational.py").read_text()
    (copy / "losses" / "relational.py").write_text(src.replace('"""Relational knowledge distillation', '"""Edited docs', 1))
    assert record.code_fingerprint() == before
    (copy / "losses" / "relational.py").write_text(src.replace("EPS = 1e-12", "EPS = (  # wrapped\n    1e-12\n)"))
    assert record.code_fingerprint() == before
    (copy / "losses" / "relational.py").write_text(src.replace("EPS = 1e-12", "EPS = 1e-11"))
    assert record.code_fingerprint() != before
