"""Budgets select deterministic, label-balanced subsets, and provenance records them."""

from __future__ import annotations

from collections import Counter

from clift.config import DataConfig
from clift.data.benchmarks import data_provenance, load_stream

BUDGET = {"benchmark": "standard-proxy", "train_per_task": 20, "dev_per_task": 6, "test_per_task": 10}


def _ids(stream):
    return {t.name: {s: [ex.id for ex in t.split(s)] for s in ("train", "dev", "test")} for t in stream}


def test_same_budget_and_seed_give_the_same_subset():
    a = load_stream(DataConfig(**BUDGET), seed=7)
    b = load_stream(DataConfig(**BUDGET), seed=7)
    assert _ids(a) == _ids(b)
    for task in a:
        assert (len(task.train), len(task.dev), len(task.test)) == (20, 6, 10)


def test_different_seed_gives_a_different_subset():
    a = _ids(load_stream(DataConfig(**BUDGET), seed=7))
    b = _ids(load_stream(DataConfig(**BUDGET), seed=8))
    for task in a:
        assert set(a[task]["train"]) != set(b[task]["train"]), task


def test_data_seed_overrides_the_run_seed():
    a = _ids(load_stream(DataConfig(**BUDGET, seed=3), seed=100))
    b = _ids(load_stream(DataConfig(**BUDGET, seed=3), seed=200))
    assert a == b


def test_order_changes_the_sequence_not_the_subsets():
    o1 = load_stream(DataConfig(**BUDGET, order="o1"), seed=1)
    o3 = load_stream(DataConfig(**BUDGET, order="order3"), seed=1)
    assert o1.name == "standard-proxy/o1" and o3.name == "standard-proxy/o3"
    assert o3.task_names == ["MNLI", "amazon", "agnews", "dbpedia"]
    assert _ids(o1) == _ids(o3)  # keyed by task and split, so a task's subset does not depend on its position


def test_budget_is_label_balanced():
    stream = load_stream(DataConfig(benchmark="standard-proxy", tasks=["agnews"], train_per_task=12), seed=0)
    counts = Counter(ex.label for ex in stream[0].train)
    assert sorted(counts.values()) == [3, 3, 3, 3]


def test_no_budget_keeps_the_whole_pack_split():
    stream = load_stream(DataConfig(benchmark="standard-proxy", tasks=["MNLI"]), seed=0)
    assert (len(stream[0].train), len(stream[0].dev), len(stream[0].test)) == (1000, 200, 500)


def test_provenance_records_source_budgets_and_seed():
    data = DataConfig(**BUDGET, max_source_length=128)
    stream = load_stream(data, seed=5)
    prov = data_provenance(data, seed=5, stream=stream)
    assert prov["source"] == "pack" and prov["benchmark"] == "standard-proxy" and prov["order"] == "o1"
    assert prov["pack"]["version"] == 1 and len(prov["pack"]["manifest_sha256"]) == 64
    assert prov["budgets"] == {
        "train_per_task": 20,
        "dev_per_task": 6,
        "test_per_task": 10,
        "max_source_length": 128,
        "max_target_length": 50,
    }
    assert prov["seed"] == 5
    assert prov["splits"]["MNLI"]["test"]["n"] == 10
    assert sum(prov["splits"]["agnews"]["train"]["labels"].values()) == 20


def test_fixture_provenance_names_the_folder():
    prov = data_provenance(DataConfig(benchmark="fixture"), seed=1)
    assert prov["source"] == "fixture" and prov["folder"].endswith("cl_fixture")
    assert set(prov["files_sha256"]) == {"toysent", "toytopic", "toynli"}
