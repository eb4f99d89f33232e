"""Free-form tasks: generation scored by exact match / ROUGE, one matrix per metric."""

from __future__ import annotations

import math

import pytest

import clift
from clift.data.task import Example, Stream, Task
from clift.errors import ConfigError
from clift.text_metrics import check_metric, example_scores, rouge_f1
from tests.conftest import fixture_stream, tiny_config


def _free_stream(metric: str | None = None) -> Stream:
    tasks = []
    for name, words in (("copyA", ["red", "blue", "green", "black"]), ("copyB", ["one", "two", "three", "four"])):
        train = [Example(f"say {w} {i}", f"{w} {i}", f"{name}-tr-{w}{i}") for i in range(6) for w in words]
        test = [Example(f"echo {w} {i}", f"{w} {i}", f"{name}-te-{w}{i}") for i in range(2) for w in words]
        tasks.append(Task(name, "GEN", "Repeat the words.\n", (), True, train, [], test, metric))
    return Stream("free", tasks)


def test_rouge_uses_stemming_and_f1() -> None:
    s = rouge_f1("the cats were running", "cat runs")
    assert s["rouge1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # P = 2/4, R = 2/2 after stemming
    assert example_scores("Yes.", "yes")["exact_match"] == 1.0
    assert example_scores("no", "yes")["rougeL"] == 0.0


def test_metric_rules() -> None:
    assert check_metric("rougeL", True, "t") == "rougeL"
    with pytest.raises(ConfigError, match="not allowed for a free-form task"):
        check_metric("accuracy", True, "task 'x'")
    with pytest.raises(ConfigError, match="one of"):
        check_metric("bleu", False, "task 'x'")


def test_free_form_prompt_has_no_option_line() -> None:
    task = _free_stream()[0]
    assert "Option" not in task.prompt("say red")
    assert task.score_metric == "rougeL" and task.free_form


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_free_form_run_reports_rouge_matrix(tmp_path, model) -> None:
    cfg = tiny_config(tmp_path, model=model, eval={"mode": "rank", "max_new_tokens": 4})
    res = clift.run(cfg, stream=_free_stream("rouge1"))
    r = res.results
    assert r["metric"] == "rouge1" and r["task_metrics"] == ["rouge1", "rouge1"]
    assert set(r["by_metric"]) == {"exact_match", "rouge1", "rougeL"}
    # the primary matrix is the rouge1 one, computed per metric with its own AA
    assert r["matrix"] == r["by_metric"]["rouge1"]["matrix"]
    assert len(r["by_metric"]["rougeL"]["matrix"]) == 2
    assert r["by_metric"]["rougeL"]["metrics"]["aa"] is not None
    assert all(0 <= v <= 100 for row in r["matrix"] for v in row)
    assert "rouge1 (%)" in res.table()
    preds = (res.run_dir / "predictions.jsonl").read_text()
    assert '"score"' in preds


@pytest.mark.slow
def test_label_stream_also_reports_rouge1(tmp_path) -> None:
    res = clift.run(tiny_config(tmp_path), stream=fixture_stream(train=8, test=4))
    r = res.results
    assert r["metric"] == "accuracy"
    r1 = r["by_metric"]["rouge1"]
    assert len(r1["matrix"]) == 3 and len(r1["zero_shot"]) == 3
    assert not math.isnan(r1["metrics"]["aa"])
    assert "rouge1: AA" in res.table()
