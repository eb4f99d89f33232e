"""clift.lifecycle as a unit: the context, the structure replay, tracked tensors and loading them back."""

from __future__ import annotations

import pytest
import torch

import clift
from clift.checkpoint import find_checkpoint, load_checkpoint
from clift.config import ModelConfig, RunConfig
from clift.errors import ResumeError
from clift.lifecycle import load_tracked, make_context, rebuild, replay_structure, start_method, tracked_tensors
from clift.methods import build_method
from clift.models import load_model

from .conftest import fixture_stream, tiny_config

IDS = torch.randint(5, 700, (2, 10), generator=torch.Generator().manual_seed(0))


def _setup(tmp_path, method="inc_lora"):
    cfg = RunConfig.from_dict(tiny_config(tmp_path, method=method))
    loaded = load_model(ModelConfig(name="tiny-llama"))
    stream = fixture_stream()
    ctx = make_context(cfg, loaded.model, loaded.tokenizer, loaded.kind, stream, tmp_path, torch.device("cpu"))
    return cfg, loaded, stream, ctx


def test_make_context_carries_the_run_and_the_runtime_extras(tmp_path):
    cfg, loaded, stream, _ = _setup(tmp_path)
    marker = object()
    ctx = make_context(
        cfg, loaded.model, loaded.tokenizer, "causal", stream, tmp_path, torch.device("cpu"), accelerator=marker
    )
    assert (ctx.kind, ctx.model_type, ctx.seed, ctx.stream) == ("causal", "llama", cfg.seed, stream)
    assert ctx.train is cfg.train and ctx.accelerator is marker and ctx.collate is None


def test_replay_structure_rebuilds_the_adapters_of_finished_stages(tmp_path):
    cfg, loaded, stream, ctx = _setup(tmp_path)
    method = build_method(cfg.method)
    base_ids = {id(p) for p in loaded.model.parameters()} | {id(b) for b in loaded.model.buffers()}
    model = start_method(method, ctx, loaded.model)
    stages = method.stages(stream)
    model = replay_structure(method, model, stages[:2])
    assert {"task0", "task1"} <= set(model.peft_config) and "task2" not in model.peft_config
    tracked = tracked_tensors(model, base_ids, set())
    assert tracked and all("lora_" in name for name in tracked)  # the base model is not tracked
    assert {n.split(".lora_")[1].split(".")[1] for n in tracked} == {"task0", "task1"}


def test_tracked_tensors_include_base_weights_that_trained(tmp_path):
    _, loaded, _, _ = _setup(tmp_path)
    model = loaded.model
    base_ids = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    assert tracked_tensors(model, base_ids, set()) == {}
    q = model.model.layers[0].self_attn.q_proj.weight
    assert list(tracked_tensors(model, base_ids, {id(q)})) == ["model.layers.0.self_attn.q_proj.weight"]


def test_load_tracked_copies_values_and_names_trained_base_weights(tmp_path):
    _, loaded, _, _ = _setup(tmp_path)
    model = loaded.model
    base_ids = {id(p) for p in model.parameters()}
    name = "model.layers.0.self_attn.q_proj.weight"
    value = torch.full_like(dict(model.named_parameters())[name], 0.5, dtype=torch.float64)
    trained = load_tracked(model, {name: value}, base_ids)
    param = dict(model.named_parameters())[name]
    assert trained == {id(param)} and param.dtype == torch.float32 and torch.all(param == 0.5)
    assert load_tracked(model, {}, base_ids) == set()
    with pytest.raises(ResumeError, match=r"does not have .*'lora_x'.*--force"):
        load_tracked(model, {"lora_x": value}, base_ids)


def test_rebuild_from_a_checkpoint_gives_the_trained_model(tmp_path):
    res = clift.run(tiny_config(tmp_path, method="inc_lora", train={"max_steps": 2}), stream=fixture_stream())
    ckpt = load_checkpoint(find_checkpoint(res.run_dir))
    cfg, loaded, _, ctx = _setup(tmp_path / "rebuild")
    _, model, trained = rebuild(cfg, loaded.model, ctx, None, ckpt.model, ckpt.method)
    assert trained == set()  # LoRA leaves the base model untouched
    model.eval()
    res.model.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, res.model(input_ids=IDS).logits)
    # replaying fewer stages than the checkpoint holds is a changed structure, refused by name
    cfg, loaded, _, ctx = _setup(tmp_path / "short")
    with pytest.raises(ResumeError, match="structure changed"):
        rebuild(cfg, loaded.model, ctx, 1, ckpt.model, ckpt.method)
