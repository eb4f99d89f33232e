"""`clift export`: the final model as one PEFT adapter (combined where possible) or a merged model."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

import clift
from clift.cli import main
from clift.config import ModelConfig
from clift.errors import CliftError
from clift.export import export_run, rebuild_final_model
from clift.methods import METHODS
from clift.models import load_model

from .conftest import fixture_stream, tiny_config

IDS = torch.randint(5, 700, (2, 12), generator=torch.Generator().manual_seed(0))


def _logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _run(tmp_path, method):
    return clift.run(tiny_config(tmp_path, method=method), stream=fixture_stream())


def _fast_run(tmp_path, name):
    cfg = tiny_config(tmp_path, method=name, train={"max_steps": 2}, eval={"zero_shot": False})
    return clift.run(cfg, stream=fixture_stream(test=4, names=["toysent", "toytopic"]))


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_rebuilds_and_exports_its_final_model(tmp_path, name):
    """For every registered method: the model rebuilt from the run directory (structure replay + checkpoint)
    is the trained one, and each export form either reproduces its outputs or is refused with a CliftError
    that names what to use instead."""
    res = _fast_run(tmp_path, name)
    rebuilt = rebuild_final_model(res.run_dir)
    assert rebuilt.record.complete and rebuilt.record.tasks == ["toysent", "toytopic"]
    assert torch.equal(_logits(rebuilt.model), _logits(res.model))
    refusals = []
    for mode in ("adapter", "merged"):
        try:
            out = export_run(res.run_dir, tmp_path / mode, mode=mode)
        except CliftError as err:
            refusals.append(str(err))
            continue
        layout = json.loads((out / "clift_export.json").read_text())["layout"]
        if layout == "one PEFT adapter":
            model = PeftModel.from_pretrained(load_model(ModelConfig(name="tiny-llama")).model, str(out))
        elif mode == "merged":
            model = AutoModelForCausalLM.from_pretrained(str(out))
        else:  # one adapter per task: checked for per_task below
            assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["toysent", "toytopic"]
            continue
        assert torch.allclose(_logits(model), _logits(res.model), atol=1e-5), mode
    if len(refusals) == 2:  # neither form can hold the model: the message points at the per-task adapters
        assert all("adapters are in" in r for r in refusals), refusals
    else:
        assert all("--merged" in r for r in refusals), refusals


def test_inc_lora_adapters_are_combined_into_one(tmp_path):
    res = _run(tmp_path, "inc_lora")
    out = export_run(res.run_dir, tmp_path / "out")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 3 * 8  # three rank-8 task adapters concatenated
    loaded = PeftModel.from_pretrained(load_model(ModelConfig(name="tiny-llama")).model, str(out))
    assert torch.allclose(_logits(loaded), _logits(res.model), atol=1e-5)


def test_full_finetuning_needs_merged(tmp_path, capsys):
    """A model trained in its own weights exports merged; asking for an adapter is refused, and the refusal
    leaves an earlier export in the same folder as it was."""
    res = _run(tmp_path, "seq_ft")
    out = tmp_path / "m"
    assert main(["export", str(res.run_dir), "--merged", "--out", str(out)]) == 0
    assert "full model" in capsys.readouterr().out
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(CliftError, match="use --merged"):
        export_run(res.run_dir, out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(str(out))), _logits(res.model), atol=1e-5)


def test_per_task_exports_one_adapter_per_task(tmp_path):
    res = _run(tmp_path, "per_task")
    out = export_run(res.run_dir, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["toynli", "toysent", "toytopic"]
    loaded = PeftModel.from_pretrained(load_model(ModelConfig(name="tiny-llama")).model, str(out / "toysent"))
    res.model.set_adapter("task0")
    assert torch.allclose(_logits(loaded), _logits(res.model), atol=1e-5)


def test_export_refuses_unfinished_and_foreign_folders(tmp_path):
    with pytest.raises(CliftError, match="not a run directory"):
        export_run(tmp_path)
    res = _run(tmp_path, "seq_lora")
    data = json.loads((res.run_dir / "results.json").read_text())
    data["status"] = "running"
    (res.run_dir / "results.json").write_text(json.dumps(data))
    with pytest.raises(CliftError, match="not complete"):
        export_run(res.run_dir)


def test_a_refused_merge_leaves_an_earlier_export_in_place(tmp_path):
    """deal_code's MLP cannot be merged: the refusal comes before the target folder is cleared."""
    out = tmp_path / "export"
    export_run(_fast_run(tmp_path / "a", "seq_ft").run_dir, out, mode="merged")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(CliftError, match="adapters are in"):
        export_run(_fast_run(tmp_path / "b", "deal_code").run_dir, out, mode="merged")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
