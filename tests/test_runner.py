"""End-to-end runs on tiny models: results.json agrees with its matrix; run-directory rules."""

from __future__ import annotations

import json

import pytest
import torch

import clift
from clift.errors import ResumeError, TrainingError
from clift.metrics import all_metrics

from .conftest import fixture_stream, tiny_config


@pytest.mark.parametrize(
    ("model", "mode"),
    [("tiny-llama", "generate"), ("tiny-t5", "generate"), ("tiny-llama", "rank"), ("tiny-t5", "rank")],
)
def test_three_task_run_writes_consistent_results(tmp_path, model, mode):
    res = clift.run(tiny_config(tmp_path, model=model, eval={"mode": mode}), stream=fixture_stream())
    on_disk = json.loads((res.run_dir / "results.json").read_text())
    assert on_disk["status"] == "complete"
    assert on_disk["eval_mode"] == mode
    assert on_disk["kind"] == ("seq2seq" if model == "tiny-t5" else "causal")
    R, b = on_disk["matrix"], on_disk["zero_shot"]
    assert len(R) == 3 and all(len(r) == 3 for r in R) and len(b) == 3
    assert all(0.0 <= v <= 100.0 for row in R for v in row)
    expect = all_metrics(R, b)
    for key in ("aa", "bwt", "fwt", "forgetting"):
        assert on_disk["metrics"][key] == pytest.approx(expect[key])
    assert [on_disk["per_task"][t]["final"] for t in on_disk["tasks"]] == R[-1]
    assert on_disk["per_task"]["toytopic"]["after_own_stage"] == R[1][1]
    for key in ("versions", "git", "budgets", "timings", "config", "counts", "data"):
        assert key in on_disk
    assert on_disk["versions"]["torch"] and on_disk["versions"]["peft"]
    env = on_disk["environment"]
    assert env["torch_threads"] == torch.get_num_threads() and env["device"] == "cpu"
    assert env["num_processes"] == 1 and env["mixed_precision"] == "no"
    assert len(on_disk["timings"]["stages"]) == 3 and on_disk["training"][0]["steps"] == 3
    assert (res.run_dir / "config.yaml").is_file()
    preds = (res.run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == sum(len(t.test) for t in fixture_stream())
    assert {"task", "id", "label", "prediction", "correct"} <= set(json.loads(preds[0]))
    assert res.table().splitlines()[2].startswith("zero-shot")


def test_training_learns_the_fixture_task(tmp_path):
    # enough steps for the tiny model to beat its zero-shot accuracy on the trained task
    cfg = tiny_config(tmp_path, method="seq_ft", train={"max_steps": 40, "lr": 3e-3, "batch_size": 8})
    res = clift.run(cfg, stream=fixture_stream(train=96, test=24, names=["toysent"]))
    assert res.results["matrix"][0][0] >= res.results["zero_shot"][0] + 20


def test_same_seed_same_results(tmp_path):
    a = clift.run(tiny_config(tmp_path / "a"), stream=fixture_stream()).results
    b = clift.run(tiny_config(tmp_path / "b"), stream=fixture_stream()).results
    assert a["matrix"] == b["matrix"]
    assert a["training"][2]["loss_curve"] == b["training"][2]["loss_curve"]


def test_rerunning_a_complete_run_recomputes_nothing(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, train={"max_steps": 1})
    stream = fixture_stream(names=["toysent"])
    first = clift.run(cfg, stream=stream).results
    from clift.runner import Runner

    monkeypatch.setattr(Runner, "train_stage", lambda *a, **k: pytest.fail("a complete run was retrained"))
    again = clift.run(cfg, stream=stream).results
    assert again["matrix"] == first["matrix"] and again["status"] == "complete"


def test_changed_config_is_refused_with_the_differing_keys(tmp_path):
    cfg = tiny_config(tmp_path, train={"max_steps": 1})
    stream = fixture_stream(names=["toysent"])
    clift.run(cfg, stream=stream)
    changed = tiny_config(tmp_path, train={"max_steps": 2, "lr": 1e-4})
    with pytest.raises(ResumeError) as err:
        clift.run(changed, stream=stream)
    msg = str(err.value)
    assert "different configuration" in msg and "train.max_steps: 1 → 2" in msg and "train.lr: 0.005 → 0.0001" in msg
    assert "--force" in msg
    # log settings may change on resume
    clift.run(tiny_config(tmp_path, train={"max_steps": 1}, log={"progress": True}), stream=stream)
    # --force starts over
    res = clift.run(changed, stream=stream, force=True)
    assert res.results["training"][0]["steps"] == 2


def test_a_run_made_before_a_field_existed_is_still_resumed(tmp_path):
    """A config field added to clift later (here: absent from the stored config) counts at its default."""
    cfg = tiny_config(tmp_path, train={"max_steps": 1})
    stream = fixture_stream(names=["toysent"])
    first = clift.run(cfg, stream=stream)
    path = first.run_dir / "results.json"
    stored = json.loads(path.read_text())
    del stored["config"]["train"]["adam_eps"], stored["config"]["method"]["dropout"]
    path.write_text(json.dumps(stored))
    again = clift.run(cfg, stream=stream).results  # reused, not refused
    assert again["matrix"] == first.results["matrix"]
    # a stored value that differs is still refused, and so is a field this version does not know
    stored["config"]["train"]["adam_eps"] = 1e-3
    path.write_text(json.dumps(stored))
    with pytest.raises(ResumeError, match=r"train\.adam_eps: 0\.001 → 1e-08"):
        clift.run(cfg, stream=stream)
    del stored["config"]["train"]["adam_eps"]
    stored["config"]["train"]["retired_option"] = 1
    path.write_text(json.dumps(stored))
    with pytest.raises(ResumeError, match=r"train\.retired_option: 1 → '<absent>'"):
        clift.run(cfg, stream=stream)


def test_gradient_accumulation_and_epochs_plan(tmp_path):
    stream = fixture_stream(train=10, names=["toysent"])
    res = clift.run(
        tiny_config(tmp_path, train={"max_steps": None, "epochs": 2, "batch_size": 4, "grad_accum": 2}),
        stream=stream,
    )
    # 10 examples / 4 = 3 micro-batches per epoch → steps of 2 + 1 → 2 steps per epoch, 4 in all
    assert res.results["training"][0]["steps"] == 4


def test_non_finite_loss_stops_with_task_and_step(tmp_path, monkeypatch):
    from clift.runner import Runner

    def bad_loss(self, model, batch):
        out = model(**batch)
        return out.loss * float("nan"), out

    monkeypatch.setattr(Runner, "compute_loss", bad_loss)
    with pytest.raises(TrainingError, match=r"non-finite loss .* stage 1 \('toysent'\) at optimizer step 1"):
        clift.run(tiny_config(tmp_path), stream=fixture_stream())
    partial = json.loads((tmp_path / "run" / "results.json").read_text())
    assert partial["status"] == "running" and partial["matrix"] == []


def test_linear_schedule_and_warmup(tmp_path):
    from clift.runner import _lr_lambda

    f = _lr_lambda("linear", 2, 10)
    assert [round(f(s), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    assert _lr_lambda("constant", 0, 10)(7) == 1.0


def test_tensorboard_logging(tmp_path):
    pytest.importorskip("tensorboard")
    res = clift.run(tiny_config(tmp_path, log={"tensorboard": True, "log_every": 1}), stream=fixture_stream())
    events = list(res.run_dir.rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_quiet_mode_prints_no_progress(tmp_path, capsys):
    clift.run(tiny_config(tmp_path, log={"progress": False}), stream=fixture_stream(names=["toysent"]))
    captured = capsys.readouterr()
    assert "it/s" not in captured.err and "train 1.toysent" not in captured.err
