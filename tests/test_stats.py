"""The book's one statistical rule (rkd_tutorial.stats) against numbers worked out by hand."""

import math

import pytest

from rkd_tutorial.stats import compare, compare_methods, mean_std, per_seed, t_critical


def test_t_critical_values_of_the_table():
    for df, t in ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (30, 2.042)):
        assert t_critical(df) == pytest.approx(t, abs=1e-3)
    with pytest.raises(ValueError, match="2 seeds"):
        t_critical(0)


def test_interval_of_three_paired_seeds_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, half-width 4.303 / sqrt(3) = 2.484
    c = compare({0: 1.5, 1: 2.5, 2: 3.5}, {0: 0.5, 1: 0.5, 2: 0.5}, "a", "b", "recall@1")
    assert c.diff == pytest.approx(2.0) and c.n == 3
    assert c.low == pytest.approx(2 - 4.302653 / math.sqrt(3), rel=1e-6)
    assert c.high == pytest.approx(2 + 4.302653 / math.sqrt(3), rel=1e-6)
    assert c.verdict == "no detectable difference" and not c.decisive
    assert c.mean_a == pytest.approx(2.5) and c.mean_b == pytest.approx(0.5)


def test_verdicts_both_ways_and_one_seed():
    better = compare({0: 0.80, 1: 0.82, 2: 0.81}, {0: 0.70, 1: 0.71, 2: 0.70}, "rkd-da", "triplet", "recall@1")
    assert better.verdict == "better" and better.decisive
    assert better.sentence().startswith("rkd-da is better than triplet: recall@1 +10.7 [")
    worse = compare({0: 0.70, 1: 0.71, 2: 0.70}, {0: 0.80, 1: 0.82, 2: 0.81}, "x", "y")
    assert worse.verdict == "worse" and worse.high < 0
    one = compare({0: 0.8}, {0: 0.7}, "x", "y")
    assert one.low is None and one.verdict == "one seed: no verdict" and "single seed" in one.sentence()


def test_only_shared_seeds_are_paired_and_bad_values_are_refused():
    c = compare({0: 1.0, 1: 2.0, 5: 9.0}, {1: 1.0, 0: 0.0, 7: 3.0}, "a", "b")
    assert c.seeds == [0, 1]
    with pytest.raises(ValueError, match="share no seed"):
        compare({0: 1.0}, {1: 1.0})
    with pytest.raises(ValueError, match="finite"):
        compare({0: float("nan"), 1: 1.0}, {0: 1.0, 1: 1.0})


def test_compare_methods_from_results_rows():
    rows = [{"method": m, "seed": s, "embedding_dim": d, "recall@1": v}
            for s in (0, 1, 2) for m, d, v in (("triplet", 16, 0.7 + s / 100), ("rkd-da", 16, 0.8 + s / 100),
                                               ("rkd-da", 8, 0.1))]
    table = per_seed(rows, "recall@1", embedding_dim=16)
    assert set(table) == {"triplet", "rkd-da"} and table["rkd-da"][1] == pytest.approx(0.81)
    (c,) = compare_methods(rows, "recall@1", "triplet", embedding_dim=16)
    assert c.a == "rkd-da" and c.diff == pytest.approx(0.1) and c.verdict == "better"
    with pytest.raises(ValueError, match="no rows of the reference"):
        compare_methods(rows, "recall@1", "teacher")
    assert mean_std([1.0]) == (1.0, 0.0)
