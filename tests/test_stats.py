"""Bootstrap, t-intervals and paired differences against hand calculations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clift.stats import bootstrap_run, paired_differences, t_interval


def test_t_interval_by_hand() -> None:
    s = t_interval([1.0, 2.0, 3.0])
    # mean 2, s = 1, t_{0.975, 2} = 4.302653 -> half width 4.302653 / sqrt(3) = 2.484138
    assert s.n == 3 and s.mean == 2.0 and s.std == 1.0
    assert s.low == pytest.approx(2 - 2.484138, abs=1e-6) and s.high == pytest.approx(2 + 2.484138, abs=1e-6)
    assert not s.resolved


def test_t_interval_single_value_has_no_interval() -> None:
    s = t_interval([42.0])
    assert (s.n, s.mean, s.std, s.low, s.high) == (1, 42.0, None, None, None)
    assert not s.resolved
    with pytest.raises(ValueError, match="at least one"):
        t_interval([])


def test_paired_differences_use_shared_keys_only() -> None:
    method = {("o1", 42): 3.0, ("o2", 42): 5.0}
    ref = {("o1", 42): 1.0, ("o2", 42): 2.0, ("o3", 42): 9.0}
    d = paired_differences(method, ref)
    # differences 2 and 3: mean 2.5, s = 0.707107, t_{0.975, 1} = 12.706205 -> half width 6.353102
    assert d is not None and d.n == 2 and d.mean == 2.5
    assert d.low == pytest.approx(2.5 - 6.353102, abs=1e-5) and d.high == pytest.approx(2.5 + 6.353102, abs=1e-5)
    assert paired_differences({"a": 1.0}, {"b": 1.0}) is None


def test_paired_difference_resolved_when_interval_excludes_zero() -> None:
    d = paired_differences({k: 10.0 + 0.1 * k for k in range(6)}, {k: 0.0 for k in range(6)})
    assert d is not None and d.resolved and d.low > 0


def test_paired_difference_without_spread_is_not_resolved() -> None:
    # two seeds whose differences are both +3.0: s = 0, a zero-width interval [3, 3] that excludes 0 only
    # because the sample shows no spread; it must not count as resolved
    d = paired_differences({42: 6.7, 43: 6.0}, {42: 3.7, 43: 3.0})
    assert d is not None and d.low == pytest.approx(3.0) and d.high == pytest.approx(3.0)
    assert not d.spread and not d.resolved
    assert paired_differences({42: 6.7, 43: 6.1}, {42: 3.7, 43: 3.0}).spread  # type: ignore[union-attr]


def test_bootstrap_two_examples_by_hand() -> None:
    # one task, one stage, examples (1, 0): a resample's accuracy is 0, 50 or 100 with probability
    # 1/4, 1/2, 1/4, so the 2.5 % and 97.5 % percentiles are 0 and 100
    out = bootstrap_run([[np.array([1, 0])]], n_resamples=2000, seed=1)
    assert out["cells"] == [[[0.0, 100.0]]]
    assert out["metrics"]["aa"] == [0.0, 100.0]
    assert out["metrics"]["bwt"] is None and out["metrics"]["fwt"] is None


def test_bootstrap_shares_the_example_draw_across_stages() -> None:
    # the same examples evaluated after both stages with the same outcomes: every resample has
    # R[1, 0] == R[0, 0], so BWT and forgetting are exactly 0 (independent draws would spread them)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 50), rng.integers(0, 2, 40)
    out = bootstrap_run([[a, b], [a, b]], zero_shot=[a * 0, b * 0], n_resamples=1000, seed=3)
    assert out["metrics"]["bwt"] == [0.0, 0.0]
    assert out["metrics"]["forgetting"] == [0.0, 0.0]
    assert out["zero_shot"] == [[0.0, 0.0], [0.0, 0.0]]
    lo, hi = out["metrics"]["fwt"]
    assert lo < 100 * b.mean() < hi


def test_bootstrap_width_matches_binomial_and_is_seeded() -> None:
    x = np.array([1] * 280 + [0] * 120)  # p = 0.7, n = 400: normal-approximation half width 4.49 points
    out = bootstrap_run([[x]], n_resamples=4000, seed=7)
    lo, hi = out["cells"][0][0]
    assert (hi - lo) / 2 == pytest.approx(1.96 * math.sqrt(0.21 / 400) * 100, rel=0.1)
    assert bootstrap_run([[x]], n_resamples=4000, seed=7) == out
    assert bootstrap_run([[x]], n_resamples=4000, seed=8) != out


def test_bootstrap_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="stage 1 has per-task example counts"):
        bootstrap_run([[np.ones(3)], [np.ones(4)]])
    with pytest.raises(ValueError, match="at least one stage"):
        bootstrap_run([])


def test_a_run_records_its_bootstrap_intervals(tmp_path) -> None:
    import clift
    from clift.results import read_record
    from tests.conftest import fixture_stream, tiny_config

    cfg = tiny_config(tmp_path, eval={"mode": "rank", "batch_size": 16, "bootstrap": 200})
    res = clift.run(cfg, stream=fixture_stream(train=8, test=6, names=["toysent", "toytopic"]))
    record = read_record(tmp_path / "run")
    assert set(record.correct) == {"zero_shot", "0", "1"}
    assert all(len(bits) == 6 for row in record.correct.values() for bits in row)
    # the stored bits reproduce R
    rows, zero = record.correctness()
    assert zero is not None and len(zero) == 2
    assert np.allclose([[100 * a.mean() for a in row] for row in rows], record.matrix)
    iv = record.intervals
    assert iv["n_resamples"] == 200 and iv["seed"] == cfg.get("seed", 42)
    for i, row in enumerate(record.matrix):
        for j, value in enumerate(row):
            lo, hi = iv["cells"][i][j]
            assert lo <= value <= hi
    lo, hi = iv["metrics"]["aa"]
    assert lo <= res.metrics["aa"] <= hi
