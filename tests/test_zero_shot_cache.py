"""The zero-shot cache: runs that share the base model's evaluation read it instead of recomputing it, and
any change to what the evaluation reads is a miss."""

from __future__ import annotations

import dataclasses
import json
import logging

import torch

from clift.config import ModelConfig, load_config
from clift.data.task import Example
from clift.evaluation import TaskEval
from clift.models import load_model
from clift.runner import run
from clift.suite import run_suite
from clift.zero_shot_cache import ZeroShotCache, evaluation_context, task_key, weights_digest
from tests.conftest import fixture_stream, tiny_config, tiny_suite


def _context(model, tokenizer, **overrides):
    cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    return evaluation_context(model, tokenizer, cfg, "cpu", "no")


def _zero_shot_view(result) -> tuple:
    rec = result.record
    return rec.zero_shot, rec.correct["zero_shot"]


def test_a_second_run_reads_the_zero_shot_row_and_it_equals_a_computed_one(tmp_path):
    cache = tmp_path / "zs"
    base = {"train": {"max_steps": 1, "batch_size": 4, "lr": 5e-3}}
    first = run(tiny_config(tmp_path / "a", method="seq_lora", seed=1, **base), zero_shot_cache=cache)
    second = run(tiny_config(tmp_path / "b", method="inc_lora", seed=1, **base), zero_shot_cache=cache)
    plain = run(tiny_config(tmp_path / "c", method="inc_lora", seed=1, **base))
    tasks = first.record.tasks
    assert first.record.timings.zero_shot_reused == []
    assert second.record.timings.zero_shot_reused == tasks
    assert plain.record.timings.zero_shot_reused is None  # no cache given: the field is absent
    assert _zero_shot_view(second) == _zero_shot_view(plain) == _zero_shot_view(first)
    assert len(list(cache.glob("*.json"))) == len(tasks)
    on_disk = json.loads((second.run_dir / "results.json").read_text())
    assert on_disk["timings"]["zero_shot_reused"] == tasks


def test_the_key_follows_everything_the_evaluation_reads():
    loaded = load_model(ModelConfig(name="tiny-llama"))
    model, tok = loaded.model, loaded.tokenizer
    task = fixture_stream(test=4).tasks[0]
    exs = task.test
    ctx = _context(model, tok)
    key = task_key(ctx, task, exs)
    # method, seed and order are not part of it: the same base model on the same examples
    assert task_key(_context(model, tok, seed=7, **{"method.name": "inc_lora"}), task, exs) == key
    changed_text = [Example(exs[0].sentence + " x", exs[0].label, exs[0].id), *exs[1:]]
    assert task_key(ctx, task, changed_text) != key
    assert task_key(ctx, task, exs[:3]) != key
    assert task_key(ctx, dataclasses.replace(task, instruction="Pick.\n"), exs) != key
    assert task_key(_context(model, tok, **{"eval.mode": "score"}), task, exs) != key
    assert task_key(_context(model, tok, **{"data.max_source_length": 64}), task, exs) != key
    before = weights_digest(model)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    assert weights_digest(model) != before
    assert task_key(_context(model, tok), task, exs) != key


def test_an_unreadable_entry_is_a_miss_with_a_warning(tmp_path, caplog):
    cache = ZeroShotCache(tmp_path)
    ev = TaskEval(50.0, 2, [{"id": "a", "label": "x", "prediction": "x", "correct": True}])
    cache.put("k1", ev, "toy")
    assert cache.get("k1") == ev
    assert cache.get("k2") is None
    (tmp_path / "k2.json").write_text("{not json")
    (tmp_path / "k3.json").write_text((tmp_path / "k1.json").read_text())  # an entry filed under another key
    with caplog.at_level(logging.WARNING):
        assert cache.get("k2") is None and cache.get("k3") is None
    assert "k2.json" in caplog.text and "k3.json" in caplog.text


def test_a_suite_evaluates_the_base_model_once_per_task(tmp_path):
    # the run seed also draws the test_per_task sample, so seeds 1 and 2 evaluate different examples
    spec = tiny_suite(tmp_path / "suite", ["seq_lora", "inc_lora"], seeds=[1, 2])
    result = run_suite(spec, isolation="inline")
    reused = {
        (r.label, r.seed): json.loads((r.run_dir / "results.json").read_text())["timings"]["zero_shot_reused"]
        for r in result.runs
    }
    assert reused == {
        ("seq_lora", 1): [],
        ("seq_lora", 2): [],
        ("inc_lora", 1): ["toysent", "toytopic"],
        ("inc_lora", 2): ["toysent", "toytopic"],
    }
    assert len(list((tmp_path / "suite" / ".zero-shot").glob("*.json"))) == 4


def test_an_unwritable_cache_only_warns(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = ZeroShotCache(blocker / "zs")  # a folder cannot be made under a file
    with caplog.at_level(logging.WARNING):
        assert cache.put("k", TaskEval(1.0, 1), "toy") is None
    assert "cannot be written" in caplog.text
