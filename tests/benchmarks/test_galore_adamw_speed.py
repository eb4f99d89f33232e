"""Smoke test of benchmarks/galore_adamw_speed.py: clift's side always, the comparison when galore-torch is there."""

from __future__ import annotations

import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def bench():
    module = load_script("benchmarks/galore_adamw_speed.py")
    return module


def test_clift_steps_are_timed_without_the_reference(bench):
    times = bench.time_steps(["clift"], (24, 10), steps=2, rank=3, seed=0)
    assert len(times["clift"]) == 2 and min(times["clift"]) > 0


def test_updates_agree_with_galore_torch(bench):
    if bench.reference_optimizer() is None:
        pytest.skip("galore-torch is not installed (optional bench extra)")
    assert bench.max_difference((24, 10), steps=7, rank=3, seed=0) <= 1e-6
    assert bench.max_difference((10, 24), steps=7, rank=3, seed=1) <= 1e-6
