"""Memory knobs: gradient checkpointing, attention implementation, quantized base (QLoRA) and their refusals."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import clift
from clift.config import RunConfig
from clift.errors import ConfigError
from clift.memory import _transformers_model, base_weight_training, check_memory_settings, enable_gradient_checkpointing

from .conftest import fixture_stream, tiny_config

ONE_TASK = {"names": ["toysent"], "train": 16, "test": 8}
#: methods the memory features are tested with (the README support matrix reads these lists)
CHECKPOINT_METHODS = ["seq_lora", "inc_lora", "olora", "deal", "gorp", "replay"]
QLORA_METHODS = ["seq_lora", "inc_lora", "olora", "deal", "replay"]


def _losses(res: clift.RunResult) -> list[float]:
    return [s["first_loss"] for s in res.results["training"]] + [s["last_loss"] for s in res.results["training"]]


@pytest.mark.parametrize("method", CHECKPOINT_METHODS)
def test_gradient_checkpointing_changes_memory_not_results(tmp_path, method):
    cfg = tiny_config(tmp_path / "a", method=method, train={"max_steps": 2})
    base = clift.run(cfg, stream=fixture_stream(**ONE_TASK))
    cfg = tiny_config(tmp_path / "b", method=method, train={"max_steps": 2, "gradient_checkpointing": True})
    ckpt = clift.run(cfg, stream=fixture_stream(**ONE_TASK))
    assert _transformers_model(ckpt.model).is_gradient_checkpointing
    assert _losses(ckpt) == pytest.approx(_losses(base), rel=1e-5)
    assert ckpt.results["matrix"] == base.results["matrix"]


def test_gradient_checkpointing_keeps_adapter_gradients():
    from peft import LoraConfig, get_peft_model

    from clift.config import ModelConfig
    from clift.models import load_model

    grads = []
    for on in (False, True):
        model = load_model(ModelConfig(name="tiny-llama")).model
        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        if on:
            enable_gradient_checkpointing(model)
        model.train()
        x = torch.arange(24).reshape(2, 12) + 5
        model(input_ids=x, labels=x).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        assert g.abs().sum() > 0
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6)


def test_attn_implementation_eager_and_sdpa_agree(tmp_path):
    runs = {}
    for impl in ("eager", "sdpa"):
        cfg = {**tiny_config(tmp_path / impl), "model": {"name": "tiny-llama", "attn_implementation": impl}}
        res = clift.run({**cfg, "train": {**cfg["train"], "max_steps": 2}}, stream=fixture_stream(**ONE_TASK))
        assert res.model.get_base_model().config._attn_implementation == impl
        runs[impl] = res
    assert _losses(runs["sdpa"]) == pytest.approx(_losses(runs["eager"]), rel=1e-4)


def test_flash_attention_refused_where_it_cannot_run():
    model = {"name": "tiny-llama", "attn_implementation": "flash_attention_2", "device": "cpu"}
    cfg = RunConfig.from_dict({"model": model})
    with pytest.raises(ConfigError, match="flash_attention_2") as err:
        check_memory_settings(cfg)
    assert "sdpa" in str(err.value)
    with pytest.raises(ConfigError, match=r"expected .eager. \| .sdpa."):
        RunConfig.from_dict({"model": {"name": "tiny-llama", "attn_implementation": "flash"}})


@pytest.mark.parametrize(
    ("method", "alternative"),
    [
        ({"name": "seq_ft"}, "seq_lora"),
        ({"name": "galore"}, "remove model.quantization"),
        ({"name": "gorp"}, "full_rank_modules: []"),
    ],
)
def test_methods_training_base_weights_refuse_a_quantized_base(method, alternative):
    cfg = RunConfig.from_dict({"model": {"name": "tiny-llama", "quantization": {"bits": 4}}, "method": method})
    with pytest.raises(ConfigError) as err:
        check_memory_settings(cfg)
    text = str(err.value)
    assert f"method {method['name']!r}" in text and alternative in text


def test_adapter_methods_accept_a_quantized_base():
    for method in ("seq_lora", "inc_lora", "olora", "deal", "replay"):
        assert base_weight_training(RunConfig.from_dict({"method": method}).method) is None
    lora_only_gorp = RunConfig.from_dict({"method": {"name": "gorp", "full_rank_modules": []}}).method
    assert base_weight_training(lora_only_gorp) is None


def test_quantization_bits_validated():
    with pytest.raises(ConfigError, match="bits must be 4 or 8"):
        check_memory_settings(RunConfig.from_dict({"model": {"name": "tiny-llama", "quantization": {"bits": 3}}}))
    # a config stored before these knobs existed reads back with them at their (off) defaults
    old = RunConfig.from_dict({"model": {"name": "tiny-llama"}}).to_dict()
    assert old["model"]["quantization"] is None and old["train"]["gradient_checkpointing"] is False


def _cpu_4bit_reason() -> str | None:
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install 'clift[qlora]'); QLoRA is covered by benchmarks/gpu_check.py"
    return None


@pytest.mark.parametrize("method", QLORA_METHODS)
def test_qlora_run_on_cpu(tmp_path, method):
    reason = _cpu_4bit_reason()
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    quant = {"bits": 4, "compute_dtype": "float32"}
    model = {"name": "tiny-llama", "quantization": quant, "device": "cpu"}
    cfg = {**tiny_config(tmp_path, method=method), "model": model}
    try:
        res = clift.run({**cfg, "train": {**cfg["train"], "max_steps": 2}}, stream=fixture_stream(**ONE_TASK))
    except (RuntimeError, NotImplementedError) as err:  # a bitsandbytes build without CPU 4-bit kernels
        print(f"skipped: this bitsandbytes cannot run 4-bit on CPU: {err}")
        pytest.skip(f"this bitsandbytes cannot run 4-bit on CPU: {err}")
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in res.model.modules())
    assert all(torch.isfinite(torch.tensor(_losses(res))))
    trained = [p for p in res.model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)  # adapters in the compute dtype


def test_validate_refuses_a_quantized_base_for_seq_ft(tmp_path, capsys):
    import yaml

    from clift.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "tiny-llama", "quantization": {"bits": 4}}, "method": "seq_ft"}))
    assert main(["validate", str(path)]) == 2
    assert "method 'seq_ft'" in capsys.readouterr().err
