"""The `titles` benchmark: free-form title generation derived from the pack, with disjoint splits."""

from __future__ import annotations

import pytest

from clift.config import DataConfig
from clift.data.benchmarks import data_provenance, load_stream
from clift.data.derived import title_example
from clift.data.records import normalize_text
from clift.data.task import Example
from clift.errors import ConfigError


def test_title_example_splits_title_and_text() -> None:
    ex = title_example(Example("Title: Big  News\nText: Something happened.\n", "World", "a#1"))
    assert ex == Example("Something happened.", "Big News", "a#1")
    assert title_example(Example("Title: \nText: x", "World")) is None
    assert title_example(Example("no title here", "World")) is None


def test_titles_stream_is_free_form_and_disjoint() -> None:
    stream = load_stream(DataConfig(benchmark="titles"), seed=0)
    assert stream.name == "titles/o1" and stream.task_names == ["agnews_title", "amazon_title", "dbpedia_title"]
    for task in stream:
        assert task.free_form and task.score_metric == "rougeL"
        assert "Option" not in task.prompt("x")
        keys = {s: {normalize_text(ex.sentence) for ex in task.split(s)} for s in ("train", "dev", "test")}
        assert not keys["train"] & keys["test"] and not keys["train"] & keys["dev"] and not keys["dev"] & keys["test"]
        assert len(task.test) > 400 and all(ex.label and not ex.label.startswith("Title:") for ex in task.test)


def test_titles_budgets_orders_and_provenance() -> None:
    data = DataConfig(benchmark="titles", order="2", train_per_task=10, test_per_task=5)
    stream = load_stream(data, seed=1)
    assert stream.task_names[0] == "dbpedia_title" and [len(t.train) for t in stream] == [10, 10, 10]
    # a uniform draw: not simply the first records of the pool
    full = load_stream(DataConfig(benchmark="titles", order="2"), seed=1)
    assert [ex.id for ex in stream[0].train] != [ex.id for ex in full[0].train[:10]]
    prov = data_provenance(data, 1, stream)
    assert prov["source"] == "pack-derived" and prov["derived_from"]["dbpedia_title"] == "dbpedia"
    with pytest.raises(ConfigError, match="no order"):
        load_stream(DataConfig(benchmark="titles", order="7"), seed=0)
