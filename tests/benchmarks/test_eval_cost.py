"""Smoke test of benchmarks/eval_cost.py on tiny-llama: three throughputs, their ratios, score = rank."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "eval_cost.py"


def test_eval_cost_prints_three_modes_and_ratios(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("eval_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["eval_cost"] = module
    spec.loader.exec_module(module)
    args = ["--model", "tiny-llama", "--benchmark", "fixture", "--tasks", "toysent,toytopic"]
    out = module.main([*args, "--examples", "6", "--rounds", "1", "--json", str(tmp_path / "e.json")])
    rows = out["results"]
    assert [r["task"] for r in rows] == ["toysent", "toytopic"]
    for r in rows:
        assert set(r["examples_per_s"]) == {"generate", "rank", "score"}
        assert r["score_rank_agreement"] == 1.0
        assert r["score_over_rank"] > 0
    printed = capsys.readouterr().out
    assert "score / rank" in printed and (tmp_path / "e.json").exists()
