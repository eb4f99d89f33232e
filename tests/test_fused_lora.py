"""Fused frozen adapters: same outputs as PEFT's per-adapter loop with dropout off, one shared dropout mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clift.adapters import LoraFields, adapter_parameters, add_lora, lora_config, lora_layers
from clift.config import ModelConfig, RunConfig, upgrade_config
from clift.fused_lora import FusedFrozenLoRA
from clift.models import load_model

ADAPTERS = ["task0", "task1", "task2"]


def _model_with_three_adapters(dropout: float):
    model = load_model(ModelConfig(name="tiny-llama")).model
    for name in ADAPTERS:
        model = add_lora(model, lora_config(LoraFields(dropout=dropout), model), name)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in ADAPTERS:  # B = 0 at init would make every adapter's output 0
            for p in adapter_parameters(model, name).values():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    model.base_model.set_adapter(ADAPTERS)
    for old in ADAPTERS[:-1]:
        for p in adapter_parameters(model, old).values():
            p.requires_grad_(False)
    return model


def test_fused_frozen_adapters_give_the_same_outputs_with_dropout_off():
    model = _model_with_three_adapters(dropout=0.1).eval()
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        separate = model(input_ids=ids).logits
        fused = FusedFrozenLoRA()
        fused.install(model, ADAPTERS[:-1], ADAPTERS[-1])
        assert fused.layers and all(layer.layer.active_adapters == ["task2"] for layer in fused.layers)
        together = model(input_ids=ids).logits
        fused.remove()
        again = model(input_ids=ids).logits
    assert (together - separate).abs().max() <= 1e-5 * separate.abs().max()
    assert torch.equal(again, separate)  # removing gives PEFT's loop back
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".task2." in n for n in trainable)


def test_fused_frozen_adapters_read_the_new_adapters_dropped_out_input():
    model = _model_with_three_adapters(dropout=0.5).train()
    fused = FusedFrozenLoRA()
    fused.install(model, ADAPTERS[:-1], ADAPTERS[-1])
    name, layer = next((n, lay) for n, lay in lora_layers(model) if "task2" in lay.lora_A)
    calls = {a: 0 for a in ADAPTERS}
    seen: dict[str, torch.Tensor] = {}
    for a in ADAPTERS:
        layer.lora_dropout[a].register_forward_hook(lambda m, i, o, a=a: calls.__setitem__(a, calls[a] + 1))
    layer.lora_dropout["task2"].register_forward_hook(lambda m, i, o: seen.__setitem__("x_dropped", o))
    layer.register_forward_hook(lambda m, i, o: seen.update(x=i[0], out=o))
    model(input_ids=torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(2)))
    assert calls == {"task0": 0, "task1": 0, "task2": 1}, name  # one mask per layer, the new adapter's
    x, xd = seen["x"], seen["x_dropped"]
    assert (xd == 0).any() and not torch.equal(xd, x)  # dropout did act
    want = layer.base_layer(x)
    for a in ADAPTERS:  # every adapter, old and new, reads the same x̃
        want = want + F.linear(F.linear(xd, layer.lora_A[a].weight), layer.lora_B[a].weight) * layer.scaling[a]
    assert torch.allclose(seen["out"], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["inc_lora", "olora", "gorp"])
def test_frozen_adapters_default_to_fused_and_old_runs_read_as_separate(method):
    cfg = RunConfig.from_dict({"method": method})
    assert cfg.method.frozen_adapters == "fused"
    stored = cfg.to_dict()
    del stored["method"]["frozen_adapters"]
    assert upgrade_config(stored)["method"]["frozen_adapters"] == "separate"


def test_set_adapter_still_selects_adapters_after_fusing():
    model = _model_with_three_adapters(dropout=0.1).eval()
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        all_active = model(input_ids=ids).logits
        model.set_adapter("task2")
        last_only = model(input_ids=ids).logits
        model.base_model.set_adapter(ADAPTERS)
        FusedFrozenLoRA().install(model, ADAPTERS[:-1], ADAPTERS[-1])
        fused_all = model(input_ids=ids).logits
        model.set_adapter("task2")
        fused_last = model(input_ids=ids).logits
        model.base_model.set_adapter(ADAPTERS)  # PEFT runs every adapter again: no double counting
        peft_all = model(input_ids=ids).logits
    assert torch.allclose(fused_all, all_active, atol=1e-5) and torch.equal(peft_all, all_active)
    assert torch.equal(fused_last, last_only)
