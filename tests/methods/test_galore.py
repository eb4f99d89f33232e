"""`galore` on tiny models: only the chosen weights change, with low-rank updates; optional LoRA; configs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import clift
from clift.adapters import adapter_parameters
from clift.config import ModelConfig
from clift.errors import ConfigError, MethodStateError
from clift.methods import build_method, build_method_config
from clift.models import load_model

from ..conftest import fixture_stream, tiny_config


def _fresh(name: str = "tiny-llama") -> dict[str, torch.Tensor]:
    return dict(load_model(ModelConfig(name=name)).model.named_parameters())


def test_only_the_chosen_weights_change_and_each_task_adds_at_most_rank_k(tmp_path):
    method = {"name": "galore", "modules": ["mlp.gate_proj"], "galore_rank": 2, "update_proj_gap": 100}
    cfg = tiny_config(tmp_path, method=method, train={"max_steps": 3}, eval={"zero_shot": False})
    res = clift.run(cfg, stream=fixture_stream(test=4))
    fresh = _fresh()
    changed = {n for n, p in res.model.named_parameters() if not torch.equal(p.detach(), fresh[n])}
    assert changed == {f"model.layers.{i}.mlp.gate_proj.weight" for i in range(2)}
    # one projection per task (T = 100 > steps, fresh optimizer per task): every update of a task lies in
    # a rank-2 subspace, so three tasks move a weight by at most rank 6
    delta = load_file(str(res.run_dir / "adapters" / "2-toynli" / "full_rank_delta.safetensors"))
    assert set(delta) == changed
    for d in delta.values():
        sv = torch.linalg.svdvals(d.double())
        assert int((sv > sv[0] * 1e-3).sum()) <= 6  # the rest is float32 rounding of W (~1e-8)
    # the delta is written after the last task only (the default), and no adapter exists
    assert not (res.run_dir / "adapters" / "0-toysent").exists()
    stats = res.results["method_stats"]
    assert stats["full_rank_matrices"] == 2 and len(stats["full_rank_delta_norm"]) == 3


def test_with_lora_trains_the_lora_and_the_other_linear_weights(tmp_path):
    method = {"name": "galore", "with_lora": True, "save_full_rank_delta": "every_task"}
    cfg = tiny_config(tmp_path, method=method, train={"max_steps": 2}, eval={"zero_shot": False})
    res = clift.run(cfg, stream=fixture_stream(test=4, names=["toysent"]))
    lora = adapter_parameters(res.model, "default")
    assert lora and any(p.abs().sum() > 0 for n, p in lora.items() if ".lora_B." in n)
    fresh = _fresh()
    base = res.model.get_base_model()
    lora_ids = {id(p) for p in lora.values()}
    changed = {
        n.replace(".base_layer", "")
        for n, p in base.named_parameters()
        if id(p) not in lora_ids and not torch.equal(p.detach(), fresh[n.replace(".base_layer", "")])
    }
    kinds = {".".join(n.split(".")[-3:-1]) for n in changed}
    # default GaLore targets: every Linear except the head, minus the LoRA targets (q_proj, v_proj)
    assert kinds == {"self_attn.k_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    assert (res.run_dir / "adapters" / "0-toysent" / "full_rank_delta.safetensors").is_file()
    assert (res.run_dir / "adapters" / "0-toysent" / "adapter_model.safetensors").is_file()


def test_galore_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"method.modules: \['nope'\] match no Linear layer"):
        clift.run(
            tiny_config(tmp_path, method={"name": "galore", "modules": ["nope"]}),
            stream=fixture_stream(names=["toysent"]),
        )
    with pytest.raises(ConfigError) as err:
        build_method_config({"name": "galore", "modules": [], "full_rank_lr": 0, "galore_scale": -1})
    msg = str(err.value)
    assert "modules is an empty list" in msg and "full_rank_lr must be > 0" in msg and "galore_scale" in msg


def test_state_dict_round_trips_the_delta_norms_and_rejects_foreign_keys():
    method = build_method(build_method_config({"name": "galore"}))
    method.delta_norms = [0.5, None]
    state = method.state_dict()
    fresh = build_method(build_method_config({"name": "galore"}))
    fresh.load_state_dict({})  # a checkpoint from before the state existed: nothing to restore
    assert fresh.delta_norms == []
    fresh.load_state_dict(state)
    assert fresh.delta_norms == [0.5, None]
    with pytest.raises(MethodStateError, match="'basis'"):
        fresh.load_state_dict({"basis": [1.0]})
    # the flat format of earlier versions: float64 with NaN for an unknown norm
    fresh.load_state_dict({"delta_norms": torch.tensor([0.25, float("nan")], dtype=torch.float64)})
    assert fresh.delta_norms == [0.25, None]
    with pytest.raises(MethodStateError, match="'basis'"):
        fresh.load_state_dict({"basis": torch.zeros(1)})
