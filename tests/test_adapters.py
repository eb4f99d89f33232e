"""clift.adapters as a unit: add_lora, adapter_parameters, save_adapter round trip (tiny-llama)."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel

from clift.adapters import adapter_parameters, add_lora, save_adapter
from clift.config import ModelConfig
from clift.models import load_model

IDS = torch.randint(5, 700, (2, 10), generator=torch.Generator().manual_seed(0))
TARGETS = ["q_proj", "v_proj"]


def _base():
    return load_model(ModelConfig(name="tiny-llama")).model


def _lora(r: int = 4) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0)


def _logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _randomise(params: dict[str, torch.nn.Parameter], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)  # lora_B starts at zero: make the adapter matter


def test_add_lora_wraps_once_and_activates_the_newest_adapter():
    model = add_lora(_base(), _lora(), "task0")
    assert isinstance(model, PeftModel)
    again = add_lora(model, _lora(), "task1")
    assert again is model  # the second adapter goes into the same PeftModel
    assert list(model.base_model.active_adapters) == ["task1"]
    assert set(model.peft_config) == {"task0", "task1"}


def test_adapter_parameters_are_exactly_one_adapters_factors():
    model = add_lora(add_lora(_base(), _lora(r=4), "task0"), _lora(r=2), "task1")
    n_layers = model.config.num_hidden_layers
    for name, r in (("task0", 4), ("task1", 2)):
        params = adapter_parameters(model, name)
        assert len(params) == 2 * len(TARGETS) * n_layers  # one A and one B per adapted module
        assert all(f".{name}" in k and ("lora_A" in k or "lora_B" in k) for k in params)
        assert {min(p.shape) for p in params.values()} == {r}
    ids0 = {id(p) for p in adapter_parameters(model, "task0").values()}
    assert not ids0 & {id(p) for p in adapter_parameters(model, "task1").values()}
    assert adapter_parameters(model, "absent") == {}


def test_save_adapter_round_trips_through_peft(tmp_path):
    model = add_lora(add_lora(_base(), _lora(), "task0"), _lora(), "task1")
    _randomise(adapter_parameters(model, "task0"), 0)
    _randomise(adapter_parameters(model, "task1"), 1)
    for name in ("task0", "task1"):
        folder = save_adapter(model, name, tmp_path / name)
        assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
        loaded = PeftModel.from_pretrained(_base(), str(folder))
        model.set_adapter(name)
        assert torch.allclose(_logits(loaded), _logits(model), atol=1e-6), name
    assert not torch.allclose(_logits(_base()), _logits(model))  # the adapters change the outputs


def test_save_adapter_replaces_an_existing_folder_and_leaves_no_temporaries(tmp_path):
    model = add_lora(_base(), _lora(), "task0")
    _randomise(adapter_parameters(model, "task0"), 0)
    save_adapter(model, "task0", tmp_path / "a")
    (tmp_path / "a" / "stale.txt").write_text("from an earlier save")
    _randomise(adapter_parameters(model, "task0"), 1)
    save_adapter(model, "task0", tmp_path / "a")
    assert not (tmp_path / "a" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    loaded = PeftModel.from_pretrained(_base(), str(tmp_path / "a"))
    assert torch.allclose(_logits(loaded), _logits(model), atol=1e-6)
