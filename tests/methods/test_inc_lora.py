"""inc_lora: a fresh LoRA per task, earlier ones frozen and all active."""

from __future__ import annotations

import torch

import clift
from clift.adapters import adapter_name, adapter_parameters

from ..conftest import fixture_stream, tiny_config


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
