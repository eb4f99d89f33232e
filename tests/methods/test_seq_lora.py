"""seq_lora: one LoRA trained through every task; the base model never changes."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

import clift
from clift.adapters import adapter_parameters
from clift.config import ModelConfig
from clift.models import load_model

from ..conftest import fixture_stream, fresh_parameters, tiny_config


@pytest.mark.parametrize("model_name", ["tiny-llama", "tiny-t5"])
def test_seq_lora_changes_only_lora_parameters(tmp_path, model_name):
    res = clift.run(tiny_config(tmp_path, model=model_name, method="seq_lora"), stream=fixture_stream())
    fresh = fresh_parameters(model_name)
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
