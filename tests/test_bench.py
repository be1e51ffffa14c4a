"""Tests for rkd_tutorial.bench: the ``losses`` benchmark, run in-process on tiny sizes."""

from __future__ import annotations

import json

import pytest
import torch

from rkd_tutorial.bench import common
from rkd_tutorial.bench.__main__ import SUBCOMMANDS, main
from rkd_tutorial.bench.losses import direct_bytes


@pytest.fixture(scope="module")
def losses_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = main(["losses", "--out", str(out), "--n", "16", "32", "--reps", "2", "--check"])
    return rc, out


def test_losses_writes_the_documented_layout(losses_result):
    rc, out = losses_result
    assert rc == 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"bench-losses-{common.device_slug(device)}.json"]  # no temporary file left behind
    data = json.loads((out / files[0]).read_text())

    prov = data["provenance"]
    assert set(prov) >= {"device", "torch", "triton", "commit", "date", "wall_s"}
    assert prov["torch"] == torch.__version__ and prov["wall_s"] > 0 and prov["commit"]

    rows = data["rows"]
    assert {(r["impl"], r["n"]) for r in rows} == {(i, n) for i in ("direct", "package", "chunked") for n in (16, 32)}
    for r in rows:
        assert set(r) >= {"impl", "n", "ds", "dt", "ms", "peak_mib"}
        assert (r["ds"], r["dt"]) == (128, 512)
        if r["impl"] in ("direct", "package") or device.type == "cuda":
            assert r["ms"] > 0 and r["peak_mib"] is not None, r
        else:  # chunked is the package itself on the CPU
            assert r["ms"] is None and "note" in r

    assert [c["n"] for c in data["checks"]] == [16, 32]
    assert all(c["ok"] for c in data["checks"]), data["checks"]


def test_cli_lists_subcommands_without_importing_them(capsys):
    assert {"losses", "pipeline"} <= set(SUBCOMMANDS)
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "losses" in capsys.readouterr().out


def test_direct_estimate_grows_like_n_cubed():
    assert direct_bytes(1024, 128, 512) > 6 * direct_bytes(512, 128, 512)
    assert direct_bytes(512, 128, 512) > 2**30  # GiB-scale at N = 512: what the package avoids


def test_write_json_atomic_replaces(tmp_path):
    path = tmp_path / "x.json"
    common.write_json_atomic(path, {"a": 1})
    common.write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_device_slug():
    assert common.device_slug(torch.device("cpu")) == "cpu"
