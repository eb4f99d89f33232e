"""clift.results as a unit: RunRecord reads every results.json clift wrote and writes it back byte for byte."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from clift.errors import DataError
from clift.results import (
    RunInfo,
    RunRecord,
    StageTiming,
    StageTraining,
    Timings,
    format_matrix,
    read_record,
    write_record,
)

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "results").rglob("results.json"))
OLD_RUN = Path(__file__).parent / "fixtures" / "old_run_mid_stage"

# the key order results.json has had since the environment key was added (runner.py before RunRecord)
KEYS = [
    "status",
    "run",
    "kind",
    "eval_mode",
    "eval_split",
    "tasks",
    "stages",
    "zero_shot",
    "matrix",
    "metrics",
    "per_task",
    "counts",
    "budgets",
    "data",
    "timings",
    "training",
    "versions",
    "git",
    "num_processes",
    "environment",
    "config",
]


def test_committed_results_round_trip_byte_for_byte():
    assert len(COMMITTED) >= 40  # the published runs (standard-proxy, gorp-ablation, ablations)
    for path in COMMITTED:
        text = path.read_text(encoding="utf-8")
        record = RunRecord.from_json(text, path)
        assert record.to_json() == text, path
        assert record.complete and len(record.matrix) == len(record.stages) == len(record.training)


def test_committed_results_read_as_types():
    record = read_record(next(p.parent for p in COMMITTED if "resumes" in p.read_text()))
    assert isinstance(record.run, RunInfo) and record.run.method
    assert isinstance(record.timings.stages[0], StageTiming) and record.timings.total_seconds_before_resume > 0
    assert record.resumes is not None and (record.resumes[0].stage, record.resumes[0].step) == (0, 0)
    old = RunRecord.from_json(next(p for p in COMMITTED if '"environment"' not in p.read_text()).read_text())
    assert old.environment is None and "environment" not in old.to_dict()  # written before the key existed


def test_an_old_partial_run_and_its_checkpoint_record_load():
    partial = read_record(OLD_RUN)
    assert partial.status == "running" and not partial.complete and len(partial.matrix) == 1
    assert partial.to_json() == (OLD_RUN / "results.json").read_text()
    state = json.loads((OLD_RUN / "checkpoint" / "state.json").read_text())
    assert RunRecord.from_dict(state["results"]).to_dict() == state["results"]


def test_a_new_record_writes_the_keys_in_the_order_clift_always_wrote():
    record = RunRecord(run=RunInfo("n", "seq_lora", "tiny-llama", "s", 1, False), tasks=["a"])
    record.environment = RunRecord.from_dict({"environment": {"device": "cpu"}}).environment
    assert list(record.to_dict()) == KEYS
    record.put("method_stats", {"x": 1})
    record.add_resume(1, 2)
    assert list(record.to_dict())[-2:] == ["method_stats", "resumes"]
    # a run resumed before its first stage finished gets `resumes` first, as a dict would
    early = RunRecord.from_dict({k: v for k, v in record.to_dict().items() if k not in ("method_stats", "resumes")})
    early.add_resume(0, 3)
    early.put("method_stats", {})
    assert list(early.to_dict())[-2:] == ["resumes", "method_stats"]
    assert early.to_dict()["resumes"] == [{"stage": 0, "step": 3}]


def test_timings_keep_the_order_their_keys_were_set_in():
    t = Timings()
    t.put("total_seconds_before_resume", 1.0)
    t.put("zero_shot_seconds", 2.0)
    t.put("total_seconds", 3.0)
    assert list(t.to_dict()) == ["stages", "total_seconds_before_resume", "zero_shot_seconds", "total_seconds"]
    assert list(Timings(zero_shot_seconds=1.0).to_dict()) == ["stages", "zero_shot_seconds"]


def test_missing_keys_take_defaults_and_unknown_keys_are_kept():
    raw = {"status": "complete", "tasks": ["a"], "from_the_future": {"x": [1, 2]}, "run": {"method": "m", "new": 1}}
    record = RunRecord.from_dict(raw)
    assert record.matrix == [] and record.zero_shot is None and record.run.seed == 0
    assert record.extra == {"from_the_future": {"x": [1, 2]}} and record.run.extra == {"new": 1}
    out = record.to_dict()
    assert list(out)[:4] == ["status", "tasks", "from_the_future", "run"]  # the file's order first
    assert out["from_the_future"] == {"x": [1, 2]} and out["run"]["new"] == 1


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d["training"][0].__setitem__("steps", "3"), r"training\[0\]\.steps must be an integer"),
        (lambda d: d.__setitem__("matrix", {"a": 1}), "matrix must be a list"),
        (lambda d: d["run"].__setitem__("needs_task_id", 1), r"run\.needs_task_id must be true or false"),
        (lambda d: d["per_task"]["a"].__setitem__("final", "high"), r"per_task\.a\.final must be a number"),
        (lambda d: d.__setitem__("timings", []), "timings must be an object"),
    ],
)
def test_a_value_of_the_wrong_type_is_one_clear_error(change, where):
    record = _record()
    raw = record.to_dict()
    change(raw)
    with pytest.raises(DataError, match=where) as err:
        RunRecord.from_json(json.dumps(raw))
    assert "restore it" in str(err.value)


def test_bad_json_and_a_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not valid JSON"):
        RunRecord.from_json("{", tmp_path / "results.json")
    with pytest.raises(DataError, match=r"holds no results\.json"):
        read_record(tmp_path)


def _record() -> RunRecord:
    record = RunRecord(run=RunInfo("n", "seq_lora", "tiny-llama", "s", 1, False), tasks=["a", "b"], eval_mode="rank")
    record.zero_shot = [10.0, 20.0]
    record.add_stage("a", [50.0, 25.0], StageTraining("a", 3, 0, 8, 2.0, 1.0, None, [1.5]), StageTiming("a", 1, 2, 3))
    record.add_stage("b", [40.0, 60.0], StageTraining("b", 3, 0, 8, 2.0, float("nan")), StageTiming("b", 1, 2, 3))
    record.update_summary(2, {0: 0, 1: 1})
    return record


def test_update_summary_and_the_written_file(tmp_path):
    record = _record()
    assert record.metrics["aa"] == pytest.approx(50.0) and record.metrics["bwt"] == pytest.approx(-10.0)
    assert record.per_task["b"].after_own_stage == 60.0 and record.per_task["a"].best == 50.0
    assert record.per_task["a"].zero_shot == 10.0 and record.per_task["a"].final == 40.0
    write_record(tmp_path, record)
    text = (tmp_path / "results.json").read_text()
    assert '"last_loss": null' in text  # NaN has no JSON form
    back = read_record(tmp_path)
    assert back.to_json() == text and math.isnan(record.training[1].last_loss)
    assert back.per_task == record.per_task and back.matrix == record.matrix


def test_an_unfinished_run_has_no_metrics_and_no_final_column():
    record = _record()
    record.update_summary(3, {0: 0, 1: 1, 2: 2})
    assert record.metrics == {} and record.per_task["a"].final is None and record.per_task["a"].best == 50.0


def test_format_matrix():
    table = format_matrix(_record()).splitlines()
    assert table[0].endswith("eval mode: rank")
    assert table[2].split() == ["zero-shot", "10.0", "20.0"]
    assert table[4].split() == ["2.", "b", "40.0", "60.0"]
    assert table[-1].startswith("AA 50.0   BWT -10.0")
