"""experiments.py on the CPU: profiles, method tables, shipped teachers, results files, the CLI."""

import dataclasses
import hashlib
import json

import pytest
import torch

from rkd_tutorial import __main__ as cli
from rkd_tutorial import experiments as ex
from rkd_tutorial.models import Classifier, EmbeddingNet, SmallCNN


# ----------------------------------------------------------------------------- profiles and methods

def test_profiles_exist_and_quick_is_the_cpu_default():
    for table in (ex.METRIC_PROFILES, ex.CLASSIFY_PROFILES):
        assert {"quick", "full"} <= set(table)
        for name, p in table.items():
            assert p.name == name
            assert p.student_epochs >= 1 and p.teacher_epochs >= 1
    q = ex.METRIC_PROFILES["quick"]
    assert q.student_backbone == "cnn-8-16-32" and q.student_dims[0] < q.teacher_dim
    assert ex.CLASSIFY_PROFILES["quick"].student_backbone == "cnn-8-16-32"
    if not torch.cuda.is_available():
        assert ex.default_profile() == "quick"
    assert ex.PAPER["cifar100"]["rkd_distance"] == 25.0 and ex.PAPER["cifar100"]["rkd_angle"] == 50.0


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


def _check_finite_and_backward(terms, student, teacher):
    """The weighted terms on one batch give a finite loss that back-propagates."""
    x, y = _batch()
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


@pytest.mark.parametrize("method", ex.CLASSIFY_METHODS)
def test_classify_terms_of_every_method_give_a_finite_differentiable_loss(method):
    assert set(EXPECTED_CLASSIFY) == set(ex.CLASSIFY_METHODS)
    torch.manual_seed(0)
    student = Classifier(SmallCNN((4, 8, 8)), 4)
    teacher = Classifier(SmallCNN((8, 8, 16)), 4).eval()
    terms = ex.classify_terms(method, student, teacher)
    assert [t.name for t in terms] == EXPECTED_CLASSIFY[method]
    if "rkd-da" in EXPECTED_CLASSIFY[method]:
        rkd_term = terms[-1]
        assert rkd_term.weight == 1.0   # 25 and 50 live inside the RKDLoss
    _check_finite_and_backward(terms, student, teacher)
    assert student.fc.weight.grad is not None


def test_unknown_methods_are_rejected_with_the_list_of_choices():
    s, t = EmbeddingNet(SmallCNN((4, 4, 4)), 4), EmbeddingNet(SmallCNN((4, 4, 4)), 4)
    with pytest.raises(ValueError, match="rkd-da"):
        ex.metric_terms("rkd", s, t)
    with pytest.raises(ValueError, match="baseline"):
        ex.classify_terms("kd", Classifier(SmallCNN((4, 4, 4))), Classifier(SmallCNN((4, 4, 4))))


# ----------------------------------------------------------------------------- teachers

def _ship(directory, experiment="metric", profile="quick", seed=0):
    """Write a teacher of the profile's architecture and its SHA256SUMS line, as save_teacher does."""
    torch.manual_seed(123)
    model = ex._teacher_architecture(experiment, profile)
    name = f"{experiment}-{profile}-seed{seed}.pt"
    torch.save({"model": model.state_dict(), "provenance": {"profile": profile}}, directory / name)
    digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    (directory / "SHA256SUMS").write_text(f"{digest}  {name}\n")
    return model, directory / name


def test_load_or_train_teacher_uses_a_shipped_checkpoint_whose_sha256_matches(tmp_path, monkeypatch):
    shipped_dir, cache = tmp_path / "checkpoints", tmp_path / "data"
    shipped_dir.mkdir()
    model, _ = _ship(shipped_dir)
    monkeypatch.setattr(ex, "CHECKPOINTS", shipped_dir)
    monkeypatch.setenv("RKD_DATA", str(cache))
    monkeypatch.setattr(ex, "train_teacher", lambda *a, **k: pytest.fail("must not train"))
    teacher, source = ex.load_or_train_teacher("metric", "quick", 0, device="cpu", progress=False)
    assert source == "shipped"
    assert not teacher.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, teacher.state_dict()[k]), k


def test_load_or_train_teacher_ignores_a_tampered_checkpoint(tmp_path, monkeypatch):
    shipped_dir, cache = tmp_path / "checkpoints", tmp_path / "data"
    shipped_dir.mkdir()
    model, path = _ship(shipped_dir)
    state = torch.load(path, weights_only=True)
    state["model"]["head.bias"] += 1.0                                   # tampered: the sum no longer matches
    torch.save(state, path)
    monkeypatch.setattr(ex, "CHECKPOINTS", shipped_dir)
    monkeypatch.setenv("RKD_DATA", str(cache))
    calls = []

    def fake_train(experiment, profile, seed, device, progress):
        calls.append((experiment, profile, seed))
        torch.manual_seed(7)
        return ex._teacher_architecture(experiment, profile)

    monkeypatch.setattr(ex, "train_teacher", fake_train)
    teacher, source = ex.load_or_train_teacher("metric", "quick", 0, device="cpu", progress=False)
    assert source == "trained" and calls == [("metric", "quick", 0)]
    assert not torch.equal(teacher.state_dict()["head.bias"], state["model"]["head.bias"])
    assert (cache / "checkpoints" / "metric-quick-seed0.pt").exists()
    # the next call finds the cached teacher and trains nothing
    teacher2, source2 = ex.load_or_train_teacher("metric", "quick", 0, device="cpu", progress=False)
    assert source2 == "cache" and len(calls) == 1
    assert torch.equal(teacher2.state_dict()["head.bias"], teacher.state_dict()["head.bias"])


def test_load_or_train_teacher_rejects_unknown_experiments():
    with pytest.raises(ValueError, match="metric"):
        ex.load_or_train_teacher("detection", "quick", 0, device="cpu")


@pytest.mark.parametrize("experiment", ["metric", "classify"])
def test_the_shipped_quick_teachers_match_their_sums_and_carry_provenance(experiment):
    name = f"{experiment}-quick-seed0.pt"
    path = ex.CHECKPOINTS / name
    if not path.exists():
        pytest.skip(f"{name} is not shipped")
    sums = ex._read_sums(ex.CHECKPOINTS / "SHA256SUMS")
    assert sums.get(name) == hashlib.sha256(path.read_bytes()).hexdigest()
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["provenance"]["profile"] == "quick" and state["provenance"]["seed"] == 0
    teacher, source = ex.load_or_train_teacher(experiment, "quick", 0, device="cpu", progress=False)
    assert source == "shipped"


# ----------------------------------------------------------------------------- results files

def _results(seeds, profile="quick", wall=1.0, complete=True, value=0.5):
    prov = ex.provenance(profile, wall, "cpu", seeds=list(seeds), complete=complete)
    rows = [{"method": m, "seed": s, "embedding_dim": 16, "recall@1": value + 0.01 * s, "recall@2": 0.7}
            for s in seeds for m in ("teacher", "rkd-da")]
    return {"provenance": prov, "rows": rows}


def test_merge_results_unites_seeds_rows_and_provenance():
    merged = ex.merge_results([_results([1], wall=3.0, complete=False), _results([0], wall=5.0)])
    prov = merged["provenance"]
    assert prov["seeds"] == [0, 1]
    assert prov["wall_s"] == 5.0
    assert prov["complete"] is False
    assert [p["seeds"] for p in prov["parts"]] == [[0], [1]]
    assert [(r["seed"], r["method"]) for r in merged["rows"]] == [(0, "teacher"), (0, "rkd-da"),
                                                                   (1, "teacher"), (1, "rkd-da")]
    with pytest.raises(ValueError, match="profiles"):
        ex.merge_results([_results([0]), _results([1], profile="full")])
    with pytest.raises(ValueError, match="nothing"):
        ex.merge_results([])


def test_write_results_writes_json_and_markdown(tmp_path):
    results = _results([0, 1])
    path = ex.write_results(results, tmp_path / "out", "metric-quick")
    assert path == tmp_path / "out" / "metric-quick.json"
    assert json.loads(path.read_text()) == results
    md = (tmp_path / "out" / "metric-quick.md").read_text()
    assert md.startswith("Profile `quick` on ")
    assert "| method | seed | embedding_dim | recall@1 | recall@2 |" in md
    assert "| rkd-da | 1 | 16 | 0.5100 | 0.7000 |" in md
    assert md == ex.markdown_table(results)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metric-quick.json", "metric-quick.md"]


def test_write_results_is_atomic(tmp_path, monkeypatch):
    old = _results([0])
    path = ex.write_results(old, tmp_path, "metric-quick")
    before = path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ex.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        ex.write_results(_results([0], value=0.9), tmp_path, "metric-quick")
    assert path.read_text() == before                                    # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metric-quick.json", "metric-quick.md"]  # no temp files


# ----------------------------------------------------------------------------- the command line

@pytest.fixture
def tiny_quick(monkeypatch):
    """The quick profiles shrunk to seconds: 100 train / 50 test images per class, one epoch."""
    tiny = dict(train_per_class=100, test_per_class=50, teacher_epochs=1, student_epochs=1)
    monkeypatch.setitem(ex.METRIC_PROFILES, "quick", dataclasses.replace(ex.METRIC_PROFILES["quick"], **tiny))
    monkeypatch.setitem(ex.CLASSIFY_PROFILES, "quick", dataclasses.replace(ex.CLASSIFY_PROFILES["quick"], **tiny))


def test_cli_metric_quick_writes_results_with_provenance(tmp_path, tiny_quick, capsys):
    out = tmp_path / "results"
    rc = cli.main(["metric", "--profile", "quick", "--methods", "triplet", "rkd-da", "--out", str(out),
                   "--device", "cpu", "--no-progress"])
    assert rc == 0
    results = json.loads((out / "metric-quick.json").read_text())
    assert [r["method"] for r in results["rows"]] == ["teacher", "triplet", "rkd-da"]
    for r in results["rows"]:
        assert r["seed"] == 0
        recalls = [r[f"recall@{k}"] for k in (1, 2, 4, 8)]
        assert all(0.0 <= v <= 1.0 for v in recalls) and recalls == sorted(recalls)
    assert results["rows"][0]["embedding_dim"] == ex.METRIC_PROFILES["quick"].teacher_dim
    prov = results["provenance"]
    assert prov["profile"] == "quick" and prov["complete"] is True and prov["seeds"] == [0]
    assert prov["profile_settings"]["train_per_class"] == 100
    md = (out / "metric-quick.md").read_text()
    assert "| rkd-da | 0 |" in md
    printed = capsys.readouterr().out
    assert "metric experiment, profile quick, seeds [0]" in printed and md.strip() in printed
    assert not list(out.glob("*.tmp"))


def test_cli_teacher_writes_a_checkpoint_that_loads_as_shipped(tmp_path, tiny_quick, monkeypatch, capsys):
    """``python -m rkd_tutorial teacher`` is how the shipped teachers are made: its file must load."""
    monkeypatch.setitem(ex.METRIC_PROFILES, "quick", dataclasses.replace(ex.METRIC_PROFILES["quick"], train_per_class=32))
    rc = cli.main(["teacher", "metric", "--profile", "quick", "--out", str(tmp_path), "--device", "cpu"])
    assert rc == 0
    sums = ex._read_sums(tmp_path / "SHA256SUMS")
    assert set(sums) == {"metric-quick-seed0.pt"}
    state = torch.load(tmp_path / "metric-quick-seed0.pt", map_location="cpu", weights_only=True)
    assert state["provenance"]["profile"] == "quick"
    monkeypatch.setattr(ex, "CHECKPOINTS", tmp_path)
    monkeypatch.setenv("RKD_DATA", str(tmp_path / "cache"))
    teacher, source = ex.load_or_train_teacher("metric", "quick", 0, device="cpu", progress=False)
    assert source == "shipped" and isinstance(teacher, EmbeddingNet)
    for k, v in state["model"].items():
        assert torch.equal(v, teacher.state_dict()[k]), k


def test_cli_merge(tmp_path, capsys):
    for seed in (0, 1):
        ex.write_results(_results([seed]), tmp_path, f"metric-quick-seed{seed}")
    rc = cli.main(["merge", str(tmp_path / "metric-quick-seed1.json"), str(tmp_path / "metric-quick-seed0.json"),
                   "-o", str(tmp_path / "metric-quick.json")])
    assert rc == 0
    merged = json.loads((tmp_path / "metric-quick.json").read_text())
    assert merged["provenance"]["seeds"] == [0, 1] and len(merged["rows"]) == 4
    assert (tmp_path / "metric-quick.md").exists()
