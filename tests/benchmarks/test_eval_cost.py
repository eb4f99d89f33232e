"""Smoke test of benchmarks/eval_cost.py on tiny-llama: three throughputs, their ratios, score = rank."""

from __future__ import annotations

from tests.conftest import load_script


def test_eval_cost_prints_three_modes_and_ratios(tmp_path, capsys):
    module = load_script("benchmarks/eval_cost.py")
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
