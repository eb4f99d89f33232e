"""clift.full_rank as a unit: module patterns, the full-rank weights' snapshot / delta / reset, delta files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clift.adapters import LoraFields, add_lora, base_model_of, lora_config
from clift.config import ModelConfig
from clift.errors import ConfigError
from clift.full_rank import (
    DELTA_FILE,
    FullRankWeights,
    apply_full_rank_delta,
    default_full_rank_patterns,
    linear_modules,
    lora_exclusions,
    match_modules,
    module_matches,
    should_save_delta,
)
from clift.models import load_model


@pytest.fixture
def llama() -> nn.Module:
    return load_model(ModelConfig(name="tiny-llama")).model


@pytest.mark.parametrize(
    ("pattern", "hit"),
    [
        ("model.layers.1.mlp.gate_proj", True),  # the qualified name
        ("mlp.gate_proj", True),  # a dotted suffix
        ("layers.1*.mlp.gate_proj", True),  # wildcards
        ("gate", False),  # not a whole component
        ("layers.2.mlp.gate_proj", False),
    ],
)
def test_module_patterns_match_names_and_dotted_suffixes(pattern, hit):
    assert module_matches("model.layers.1.mlp.gate_proj", pattern) is hit


def test_match_modules_sees_through_lora_and_names_what_exists(llama):
    gates = match_modules(llama, ["mlp.gate_proj"], "method.x")
    assert list(gates) == [f"model.layers.{i}.mlp.gate_proj" for i in range(len(gates))] and len(gates) >= 2
    peft = add_lora(llama, lora_config(LoraFields(), llama), "default")
    wrapped = linear_modules(peft)  # the LoRA-wrapped q_proj is listed with its base layer, its A/B are not
    q = next(n for n in wrapped if n.endswith("self_attn.q_proj"))
    assert wrapped[q] is base_model_of(peft).get_submodule(q).get_base_layer()
    assert not any("lora_" in n for n in wrapped)
    with pytest.raises(ConfigError, match=r"method\.x: \['mlp\.nope'\] match no Linear layer.*mlp\.gate_proj"):
        match_modules(peft, ["mlp.gate_proj", "mlp.nope"], "method.x")


def test_per_architecture_defaults_and_their_error(llama):
    assert default_full_rank_patterns(llama, "opt") == ["mlp.gate_proj"]
    llama.config.model_type = "mystery"
    with pytest.raises(ConfigError, match=r"no default full-rank targets for model type 'mystery'.*set opt"):
        default_full_rank_patterns(llama, "opt")


def test_lora_stays_off_full_rank_modules(llama):
    q = [n for n in linear_modules(llama) if n.endswith("q_proj")]
    assert lora_exclusions(llama, LoraFields(), q) == {"exclude_modules": q}
    assert lora_exclusions(llama, LoraFields(), []) == {}
    every = [n for n in linear_modules(llama) if n.endswith(("q_proj", "v_proj"))]
    with pytest.raises(ConfigError, match="every LoRA target module"):
        lora_exclusions(llama, LoraFields(), every)


def test_full_rank_weights_delta_reset_and_delta_file(llama, tmp_path):
    modules = match_modules(llama, ["mlp.gate_proj"], "m")
    weights = FullRankWeights(modules, keep_init=True)
    assert len(weights) == len(modules) and weights.numel == sum(m.weight.numel() for m in modules.values())
    assert weights.delta_norm() == 0.0
    with torch.no_grad():
        for p in weights.params.values():
            p.add_(0.5)
    delta = weights.delta()
    assert all(torch.allclose(d, torch.full_like(d, 0.5)) for d in delta.values())
    assert weights.delta_norm() == pytest.approx(0.5 * weights.numel**0.5)
    path = weights.save_delta(tmp_path, {"method": "test"})
    assert path == tmp_path / DELTA_FILE
    fresh = load_model(ModelConfig(name="tiny-llama")).model
    apply_full_rank_delta(fresh, path)  # W_init + ΔW reproduces the trained weights
    for name, p in weights.params.items():
        assert torch.allclose(fresh.get_parameter(name), p)
    weights.reset()
    assert weights.delta_norm() == 0.0
    plain = FullRankWeights(modules, keep_init=False)
    assert plain.delta_norm() is None
    with pytest.raises(RuntimeError, match="keep_init=False"):
        plain.reset()


@pytest.mark.parametrize(
    ("policy", "saved"),
    [("every_task", [True, True, True]), ("last_task", [False, False, True]), ("none", [False] * 3)],
)
def test_should_save_delta(policy, saved):
    assert [should_save_delta(policy, i, 3) for i in range(3)] == saved
