"""Smoke test of benchmarks/galore_adamw_speed.py: clift's side always, the comparison when galore-torch is there."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "galore_adamw_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("galore_adamw_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["galore_adamw_speed"] = module
    spec.loader.exec_module(module)
    return module


def test_clift_steps_are_timed_without_the_reference(bench):
    times = bench.time_steps(["clift"], (24, 10), steps=2, rank=3, seed=0)
    assert len(times["clift"]) == 2 and min(times["clift"]) > 0


def test_updates_agree_with_galore_torch(bench):
    if bench.reference_optimizer() is None:
        pytest.skip("galore-torch is not installed (optional bench extra)")
    assert bench.max_difference((24, 10), steps=7, rank=3, seed=0) <= 1e-6
    assert bench.max_difference((10, 24), steps=7, rank=3, seed=1) <= 1e-6
