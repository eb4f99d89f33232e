"""Every user-facing failure is one line on stderr naming the value and the fix — never a traceback."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from clift.cli import main


def _cfg(tmp_path, **data):
    base = {
        "model": "tiny-llama",
        "output_dir": str(tmp_path / "run"),
        "data": {"benchmark": "fixture", "train_per_task": 8, "test_per_task": 4},
        "train": {"max_steps": 1, "batch_size": 4},
        "eval": {"mode": "rank"},
        "log": {"progress": False},
    }
    for k, v in data.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(base))
    return str(p)


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("clift: error:")]
    assert len(lines) == 1, err
    return err


def test_missing_model(tmp_path, capsys):
    assert main(["run", _cfg(tmp_path, model={"name": str(tmp_path / "nope"), "local_files_only": True})]) == 2
    err = _err(capsys)
    assert str(tmp_path / "nope") in err and "a folder with config.json, a .gguf file, or a hub id" in err


def test_missing_gguf_in_validate(tmp_path, capsys):
    assert main(["validate", _cfg(tmp_path, model={"name": str(tmp_path / "m.gguf")})]) == 2
    assert "m.gguf' does not exist; check model.name" in _err(capsys)


def test_missing_data_file(tmp_path, capsys):
    empty = tmp_path / "CL_Benchmark"
    empty.mkdir()
    assert main(["run", _cfg(tmp_path, data={"benchmark": "standard-proxy", "data_dir": str(empty)})]) == 2
    err = _err(capsys)
    assert "dbpedia" in err and str(empty) in err


def test_malformed_record(tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text('{"sentence": "a", "label": "x"}\n{"sentence": "b" "label": "y"}\n')
    (tmp_path / "test.jsonl").write_text('{"sentence": "c", "label": "x"}\n')
    stream = tmp_path / "s.yaml"
    stream.write_text(
        yaml.safe_dump({"name": "s", "tasks": [{"name": "t", "train": "train.jsonl", "test": "test.jsonl"}]})
    )
    assert main(["run", _cfg(tmp_path, data={"stream": str(stream)})]) == 2
    err = _err(capsys)
    assert "train.jsonl:2: malformed JSON line" in err and "fix the line" in err


def test_unknown_method_and_key(tmp_path, capsys):
    assert main(["run", _cfg(tmp_path, method="inc_lroa")]) == 2
    assert "unknown method 'inc_lroa'. Did you mean 'inc_lora'" in _err(capsys)
    assert main(["run", _cfg(tmp_path, train={"batchsize": 2})]) == 2
    assert "unknown key 'train.batchsize'. Did you mean 'batch_size'?" in _err(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only messages")
def test_impossible_combinations(tmp_path, capsys):
    assert main(["run", _cfg(tmp_path, train={"mixed_precision": "fp16"})]) == 2
    assert "fp16 needs a GPU; on CPU use bf16 or no" in _err(capsys)
    assert main(["run", _cfg(tmp_path, model={"device": "cuda"})]) == 2
    assert "model.device=cuda but no CUDA device is visible" in _err(capsys)
    assert main(["run", _cfg(tmp_path, method={"name": "seq_lora", "target_modules": ["q_projj"]})]) == 2
    assert "target_modules ['q_projj'] not found in the model; available Linear layers:" in _err(capsys)


def test_out_of_memory(tmp_path, capsys, monkeypatch):
    from clift.runner import Runner

    def oom(self, model, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Runner, "compute_loss", oom)
    assert main(["run", _cfg(tmp_path)]) == 2
    err = _err(capsys)
    assert "out of memory in stage 1 ('toysent') at optimizer step 1 with train.batch_size=4" in err
    assert "lower train.batch_size" in err and "rerun the same command to resume" in err


def test_non_finite_loss_names_task_step_and_keeps_checkpoint(tmp_path, capsys, monkeypatch):
    from clift.runner import Runner

    real = Runner.compute_loss
    calls = []

    def nan_on_stage_two(self, model, batch):
        loss, out = real(self, model, batch)
        calls.append(1)
        return (loss * float("nan"), out) if len(calls) > 2 else (loss, out)

    monkeypatch.setattr(Runner, "compute_loss", nan_on_stage_two)
    cfg = _cfg(tmp_path, train={"max_steps": 2})
    assert main(["run", cfg]) == 2
    err = _err(capsys)
    assert "non-finite loss (nan) in stage 2 ('toytopic') at optimizer step 1" in err and "checkpoint" in err
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["stage"] == 1  # the good checkpoint after task 1 is kept


def test_changed_config_on_resume(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    assert main(["run", cfg]) == 0
    capsys.readouterr()
    assert main(["run", cfg, "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "train.lr: 0.001 → 0.5" in err and "--force" in err
