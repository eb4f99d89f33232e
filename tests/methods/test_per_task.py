"""per_task: one adapter per task, chosen by task id; earlier adapters never change."""

from __future__ import annotations

import torch
from peft import PeftModel

import clift
from clift.adapters import adapter_name, adapter_parameters
from clift.config import ModelConfig
from clift.models import load_model

from ..conftest import fixture_stream, tiny_config


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
