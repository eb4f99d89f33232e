"""clift.load_run: a finished run's model, tokenizer, config and results, in a new call; export names its base."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel

import clift
from clift.cli import main
from clift.errors import CliftError
from clift.export import export_run, loadable_base_name
from clift.models import load_model

from .conftest import fixture_stream, tiny_config

IDS = torch.randint(5, 700, (2, 12), generator=torch.Generator().manual_seed(0))


def _logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.slow
def test_load_run_returns_the_final_model(tmp_path) -> None:
    res = clift.run(tiny_config(tmp_path, method="inc_lora"), stream=fixture_stream(train=8, test=4))
    run = clift.load_run(res.run_dir)
    assert isinstance(run.model, PeftModel) and run.config.method.method_name() == "inc_lora"
    assert run.results["status"] == "complete" and run.matrix.shape == (3, 3)
    assert torch.allclose(_logits(run.model), _logits(res.model), atol=1e-5)
    merged = clift.load_run(res.run_dir, merged=True)
    assert not isinstance(merged.model, PeftModel)
    assert torch.allclose(_logits(merged.model), _logits(res.model), atol=1e-4)
    assert run.tokenizer("hello")["input_ids"]
    # the exported adapter names a base a user can load
    out = export_run(res.run_dir, tmp_path / "out")
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == "tiny-llama"
    again = PeftModel.from_pretrained(load_model(base).model, str(out))
    assert torch.allclose(_logits(again), _logits(res.model), atol=1e-5)


def test_load_run_refuses_a_foreign_folder(tmp_path) -> None:
    with pytest.raises(CliftError, match="not a run directory"):
        clift.load_run(tmp_path)


def test_loadable_base_name(tmp_path) -> None:
    assert loadable_base_name("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    (tmp_path / "m").mkdir()
    assert loadable_base_name(str(tmp_path / "m")) == str((tmp_path / "m").resolve())


@pytest.mark.slow
def test_clift_run_without_a_config_file(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["run", "benchmark=fixture", "model=tiny-llama", "train.max_steps=1", "eval.mode=rank", "-q"]
    assert main([*args, "train_per_task=4", "test_per_task=2", "data.tasks=[toysent]", "name=noconf"]) == 0
    out = capsys.readouterr().out
    assert "run directory: runs/noconf" in out
    assert (tmp_path / "runs" / "noconf" / "results.json").is_file()
