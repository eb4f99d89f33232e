"""Runs that measured different things are never pooled silently."""

from __future__ import annotations

import copy

import pytest

from clift.errors import CliftError
from clift.pooling import check_poolable, differing_keys, group_runs, pool_key


def _res(model="smollm2-135m", order="o1", method="seq_lora", mode="generate", test=80):
    tasks = ["dbpedia", "amazon"] if order == "o1" else ["amazon", "dbpedia"]
    return {
        "run": {"method": method, "model": model, "stream": f"standard-proxy/{order}"},
        "data": {"benchmark": "standard-proxy", "order": order},
        "tasks": tasks,
        "budgets": {"train_per_task": 160, "dev_per_task": None, "test_per_task": test, "max_source_length": 128},
        "eval_mode": mode,
        "eval_split": "test",
    }


def test_orders_methods_and_seeds_pool() -> None:
    runs = [_res(), _res(order="o2"), _res(method="inc_lora")]
    assert differing_keys(runs) == []
    check_poolable(runs, ["a", "b", "c"], "clift report")
    assert pool_key(runs[0]) == pool_key(runs[1])


def test_mixed_models_and_budgets_are_refused_with_the_keys() -> None:
    runs = [_res(), _res(model="tiny-llama"), _res(model="tiny-t5", mode="rank", test=12)]
    assert differing_keys(runs) == ["model", "eval_mode", "budgets.test_per_task"]
    with pytest.raises(CliftError) as err:
        check_poolable(runs, ["smol", "llama", "t5"], "clift report")
    msg = str(err.value)
    assert "differ in model, eval_mode, budgets.test_per_task" in msg
    assert "'tiny-llama' (llama)" in msg and "--allow-mixed" in msg


def test_group_runs_by_setting() -> None:
    a, b = _res(), _res(model="tiny-llama")
    c = copy.deepcopy(a)
    groups = group_runs([a, b, c])
    assert [idx for _, idx in groups] == [[0, 2], [1]]
    assert groups[1][0].startswith("tiny-llama")
