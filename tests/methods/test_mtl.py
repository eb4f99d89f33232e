"""mtl: one joint stage on every task's data (the multi-task upper bound)."""

from __future__ import annotations

import json

import pytest

import clift

from ..conftest import fixture_stream, tiny_config


def test_mtl_is_one_joint_stage(tmp_path):
    res = clift.run(tiny_config(tmp_path, method="mtl", train={"max_steps": 4}), stream=fixture_stream())
    r = res.results
    assert r["stages"] == ["joint"] and len(r["matrix"]) == 1 and len(r["matrix"][0]) == 3
    assert r["metrics"]["aa"] == pytest.approx(sum(r["matrix"][0]) / 3)
    assert r["metrics"]["bwt"] is None and r["metrics"]["fwt"] is None
    assert r["training"][0]["examples"] == sum(len(t.train) for t in fixture_stream())
    on_disk = json.loads((res.run_dir / "results.json").read_text())
    assert on_disk["status"] == "complete"
