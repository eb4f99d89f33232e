"""Invariants of seq_ft, seq_lora, per_task and mtl on tiny models (a few steps per task)."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel

import clift
from clift.adapters import adapter_name, adapter_parameters
from clift.config import ModelConfig
from clift.models import load_model

from ..conftest import fixture_stream, tiny_config


def _base_params(model):
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    tuner_ids = (
        {
            id(p)
            for n in [adapter_name(i) for i in range(3)] + ["default"]
            for p in adapter_parameters(model, n).values()
        }
        if isinstance(model, PeftModel)
        else set()
    )
    return {n: p for n, p in base.named_parameters() if id(p) not in tuner_ids}


def _fresh(name="tiny-llama"):
    return dict(load_model(ModelConfig(name=name)).model.named_parameters())


@pytest.mark.parametrize("model_name", ["tiny-llama", "tiny-t5"])
def test_seq_lora_changes_only_lora_parameters(tmp_path, model_name):
    res = clift.run(tiny_config(tmp_path, model=model_name, method="seq_lora"), stream=fixture_stream())
    fresh = _fresh(model_name)
    lora = adapter_parameters(res.model, "default")
    assert lora, "no LoRA parameters found"
    lora_ids = {id(p) for p in lora.values()}
    base = res.model.get_base_model()
    n_checked = 0
    for name, p in base.named_parameters():
        if id(p) in lora_ids:
            continue
        key = name.replace(".base_layer", "")
        assert torch.equal(p.detach().cpu(), fresh[key]), f"base weight {name} changed"
        n_checked += 1
    assert n_checked == len(fresh)
    # LoRA B starts at zero in PEFT; training must have moved it
    assert any(p.abs().sum() > 0 for n, p in lora.items() if ".lora_B." in n)


def test_seq_lora_saved_adapters_load_with_peft_and_match(tmp_path):
    res = clift.run(tiny_config(tmp_path, method="seq_lora"), stream=fixture_stream())
    saved = res.run_dir / "adapters" / "2-toynli"
    assert (saved / "adapter_model.safetensors").is_file() and (saved / "adapter_config.json").is_file()
    base = load_model(ModelConfig(name="tiny-llama")).model
    loaded = PeftModel.from_pretrained(base, str(saved)).eval()
    res.model.eval()
    ids = torch.randint(5, 700, (2, 12))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, res.model(input_ids=ids).logits, atol=1e-6)


def test_per_task_leaves_earlier_adapters_bit_identical(tmp_path):
    res = clift.run(tiny_config(tmp_path, method="per_task"), stream=fixture_stream())
    from safetensors.torch import load_file

    for i, name in enumerate(["toysent", "toytopic", "toynli"]):
        # the adapter saved right after task i equals, bit for bit, that adapter at the end of the run
        saved = load_file(str(res.run_dir / "adapters" / f"{i}-{name}" / "adapter_model.safetensors"))
        final = adapter_parameters(res.model, adapter_name(i))
        assert len(saved) == len(final) > 0
        by_suffix = {k.split("base_model.model.")[-1].replace(f".{adapter_name(i)}", ""): v for k, v in final.items()}
        for key, tensor in saved.items():
            short = key.split("base_model.model.")[-1]
            assert torch.equal(tensor, by_suffix[short].detach().cpu()), key
    # and each saved adapter reproduces its task's evaluation model
    base = load_model(ModelConfig(name="tiny-llama")).model
    loaded = PeftModel.from_pretrained(base, str(res.run_dir / "adapters" / "0-toysent")).eval()
    res.model.eval()
    res.model.set_adapter(adapter_name(0))
    ids = torch.randint(5, 700, (2, 10))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, res.model(input_ids=ids).logits, atol=1e-6)


def test_per_task_unseen_tasks_are_evaluated_on_the_base_model(tmp_path):
    res = clift.run(tiny_config(tmp_path, method="per_task"), stream=fixture_stream())
    R, b = res.results["matrix"], res.results["zero_shot"]
    # before its own stage, task j is evaluated on the base model: same numbers as zero-shot
    for i in range(3):
        for j in range(i + 1, 3):
            assert R[i][j] == b[j]
    assert res.metrics["fwt"] == 0.0
    assert res.results["run"]["needs_task_id"] is True


def test_seq_ft_trains_every_weight(tmp_path):
    res = clift.run(tiny_config(tmp_path, method="seq_ft", train={"lr": 1e-3}), stream=fixture_stream())
    fresh = _fresh()
    changed = [n for n, p in res.model.named_parameters() if not torch.equal(p.detach().cpu(), fresh[n])]
    assert len(changed) == len(fresh)
    assert not (res.run_dir / "adapters").exists()  # nothing saved per task for full fine-tuning


def test_seq_ft_can_freeze_embeddings(tmp_path):
    res = clift.run(
        tiny_config(tmp_path, method={"name": "seq_ft", "train_embeddings": False}),
        stream=fixture_stream(names=["toysent"]),
    )
    fresh = _fresh()
    emb = res.model.get_input_embeddings().weight
    assert torch.equal(emb.detach().cpu(), fresh["model.embed_tokens.weight"])


def test_mtl_is_one_joint_stage(tmp_path):
    res = clift.run(tiny_config(tmp_path, method="mtl", train={"max_steps": 4}), stream=fixture_stream())
    r = res.results
    assert r["stages"] == ["joint"] and len(r["matrix"]) == 1 and len(r["matrix"][0]) == 3
    assert r["metrics"]["aa"] == pytest.approx(sum(r["matrix"][0]) / 3)
    assert r["metrics"]["bwt"] is None and r["metrics"]["fwt"] is None
    assert r["training"][0]["examples"] == sum(len(t.train) for t in fixture_stream())
    on_disk = json.loads((res.run_dir / "results.json").read_text())
    assert on_disk["status"] == "complete"


def test_inc_lora_keeps_old_adapters_bit_identical_and_all_active(tmp_path):
    from safetensors.torch import load_file

    res = clift.run(tiny_config(tmp_path, method="inc_lora"), stream=fixture_stream())
    model = res.model
    assert sorted(model.base_model.active_adapters) == ["task0", "task1", "task2"]
    for i, name in enumerate(["toysent", "toytopic", "toynli"]):
        saved = load_file(str(res.run_dir / "adapters" / f"{i}-{name}" / "adapter_model.safetensors"))
        final = {
            k.split("base_model.model.")[-1].replace(f".{adapter_name(i)}", ""): v
            for k, v in adapter_parameters(model, adapter_name(i)).items()
        }
        assert saved and all(torch.equal(t, final[k.split("base_model.model.")[-1]]) for k, t in saved.items())
    # no task id: one model, and it differs from any single adapter alone
    model.eval()
    ids = torch.randint(5, 700, (2, 10))
    with torch.no_grad():
        all_active = model(input_ids=ids).logits
        model.set_adapter("task2")
        last_only = model(input_ids=ids).logits
    assert not torch.allclose(all_active, last_only)
    assert res.results["run"]["needs_task_id"] is False
