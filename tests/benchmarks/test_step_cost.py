"""Smoke test of benchmarks/step_cost.py on tiny-llama (a step or two per method)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import load_script


@pytest.fixture(scope="module")
def step_cost():
    module = load_script("benchmarks/step_cost.py")
    return module


FAST = ["--model", "tiny-llama", "--batch-size", "2", "--seq-len", "16", "--pre-steps", "1", "--warmup", "0"]


def test_alternating_timing_table_with_ratios(step_cost, capsys):
    out = step_cost.main([*FAST, "--methods", "seq_lora,deal,deal_code", "--steps", "2", "--memory", "off"])
    rows = out["results"]
    assert list(rows) == ["seq_lora", "deal", "deal_code"]
    assert rows["seq_lora"]["time_ratio"] == 1.0
    assert all(len(r["step_s_all"]) == 2 and r["step_s_median"] > 0 for r in rows.values())
    printed = capsys.readouterr().out
    assert "x time" in printed and "deal_code" in printed


def test_methods_are_measured_in_task_two(step_cost, tmp_path):
    args = step_cost.parse_args([*FAST, "--methods", "deal", "--set", "deal.factors=a"])
    h = step_cost.build("deal", args, torch.device("cpu"), tmp_path)
    assert h.stage.index == 1 and h.method.factors  # DEAL's modules are active while measured
    assert h.method.config.factors == "a"


def test_memory_worker_in_a_fresh_process(step_cost):
    argv = [*FAST, "--methods", "deal", "--steps", "1"]
    mem = step_cost.measure_memory(step_cost.parse_args(argv), argv, "deal")
    assert mem["peak_mb"] >= mem["base_mb"] > 0 and mem["increment_mb"] >= 0


def test_stage_n_trains_n_minus_one_tasks_first(step_cost, tmp_path):
    args = step_cost.parse_args([*FAST, "--methods", "inc_lora", "--stage", "5", "--pre-steps", "0"])
    h = step_cost.build("inc_lora", args, torch.device("cpu"), tmp_path)
    assert h.stage.index == 4 and len(h.method.adapters) == 5  # fixture tasks repeated under new names
    assert len(h.method.fused.layers) > 0 and all(len(f.frozen) == 4 for f in h.method.fused.layers)


def test_a_later_stage_and_a_second_label_for_the_retention_structure(step_cost, tmp_path):
    argv = [*FAST, "--methods", "deal,deal_ret=deal", "--set", "deal_ret.structure=retention", "--stage", "4"]
    args = step_cost.parse_args(argv)
    assert args.method_names == {"deal": "deal", "deal_ret": "deal"}
    h = step_cost.build("deal_ret", args, torch.device("cpu"), tmp_path)
    assert h.stage.index == 3 and h.method.config.structure == "retention"
    assert h.method.adapters == ["default", "task1", "task2", "task3"]  # the fixture's 3 tasks, repeated
    assert h.method.bank is not None and h.method.factors  # modules on the three earlier adapters
    plain = step_cost.build("deal", args, torch.device("cpu"), tmp_path)
    assert plain.method.config.structure == "paper"
    with pytest.raises(SystemExit):
        step_cost.parse_args([*FAST, "--methods", "deal,deal=deal_code"])
