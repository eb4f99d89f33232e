"""`deal_code` (the released code's behaviour): Haar DWT, gate identity, trainable sets, regulariser flag,
carry-over of the filtered A', saving."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

import clift
from clift.adapters import lora_layers
from clift.config import ModelConfig
from clift.errors import CliftError, ConfigError
from clift.methods import build_method_config
from clift.methods.deal_code import MODULES_FILE, HaarGatedA, restore_task_modules
from clift.models import load_model
from clift.wavelets import haar_dwt2, haar_idwt2

from ..conftest import drive, factor_weights, fixture_stream, logits, tiny_config, train


@pytest.mark.parametrize("shape", [(16, 1024), (8, 64), (5, 7), (1, 3), (3, 2, 6)])
def test_haar_round_trip_and_band_shapes(shape):
    x = torch.randn(shape, dtype=torch.float64)
    ll, bands = haar_dwt2(x)
    half = ((shape[-2] + 1) // 2, (shape[-1] + 1) // 2)
    assert ll.shape[-2:] == half and all(b.shape == ll.shape for b in bands)
    assert torch.allclose(haar_idwt2(ll, bands, x.shape), x, atol=1e-12)
    # orthonormal: energy is preserved (odd sizes are zero-padded, which adds no energy)
    energy = ll.pow(2).sum() + sum(b.pow(2).sum() for b in bands)
    assert torch.allclose(energy, x.pow(2).sum())
    with pytest.raises(ValueError, match="cannot come from"):
        haar_idwt2(ll, bands, (shape[-2] + 2, shape[-1]))


def test_gate_is_identity_at_one_and_scales_block_means():
    a = torch.nn.Parameter(torch.randn(8, 12))
    m = HaarGatedA(a, hidden=16, mlp_init="identity")
    assert torch.allclose(m.filtered_weight(), a, atol=1e-6)
    x = torch.randn(3, 12)
    assert torch.allclose(m(x), x @ a.T, atol=1e-6)  # θ = 1 and the residual MLP: exactly lora_A
    with torch.no_grad():
        m.theta.fill_(0.25)
    blocks = a.detach().reshape(4, 2, 6, 2)
    mean = blocks.mean(dim=(1, 3), keepdim=True)
    expect = (blocks + (0.25 - 1) * mean).reshape(8, 12)  # A'_blk = A_blk + (θ - 1) mean(A_blk)
    assert torch.allclose(m.filtered_weight(), expect, atol=1e-6)


def test_released_init_perturbs_and_identity_init_does_not(tmp_path):
    outs = {}
    for init in ("kaiming", "identity"):
        d = drive("deal_code", tmp_path, mlp_init=init)
        train(d, d.stages[0], 2)
        before = logits(d.model)
        d.model = d.method.before_task(d.model, d.stages[1])
        outs[init] = (before, logits(d.model))
    assert torch.allclose(*outs["identity"], atol=1e-5)
    assert not torch.allclose(*outs["kaiming"], atol=1e-3)  # the release's random MLP at every task start


def test_b_frozen_raw_a_theta_mlp_trained_and_filtered_a_carried(tmp_path):
    d = drive("deal_code", tmp_path)
    train(d, d.stages[0], 2)
    prev = factor_weights(d.model)
    train(d, d.stages[1], 3)
    wrappers = dict(d.method.wrapped)
    assert len(wrappers) == len(lora_layers(d.model))
    now = factor_weights(d.model)
    for name, layer in lora_layers(d.model):
        w = wrappers[name]
        assert layer.lora_A["default"] is w and not layer.lora_B["default"].weight.requires_grad
        assert torch.equal(now[f"{name}.B"], prev[f"{name}.B"])  # B frozen after task 1
        assert not torch.equal(w.weight, prev[f"{name}.A"])  # raw A trains through the DWT
        assert not torch.equal(w.theta, torch.ones_like(w.theta))
    filtered = {n: w.filtered_weight().detach().clone() for n, w in wrappers.items()}
    d.method.after_task(d.model, d.stages[1])
    moved = d.method.stats()["stages"][-1]["factor_change"]["A"]["theta"]  # how far θ moved A: ‖A' − A‖_F
    hand = sum(float((filtered[n] - w.weight.detach()).pow(2).sum()) for n, w in wrappers.items()) ** 0.5
    assert moved > 0 and moved == pytest.approx(hand, rel=1e-5)
    d.model = d.method.before_task(d.model, d.stages[2])
    for name, layer in lora_layers(d.model):
        new = layer.lora_A["default"]
        assert new is not wrappers[name] and torch.equal(new.theta, torch.ones_like(new.theta))  # fresh θ
        assert torch.allclose(new.filtered_weight(), filtered[name], atol=1e-6)  # next task starts at A'


def test_regulariser_is_applied_and_the_bug_flag_switches_it_off(tmp_path):
    d = drive("deal_code", tmp_path)
    d.model = d.method.before_task(d.model, d.stages[1])
    pen = d.method.loss(d.model, d.batches[1], None)
    # plain norms as released: λ1 ‖θ‖_10 (θ = 1 at start) + λ2 ‖concat(MLP)‖_2, summed over modules
    expect = sum(
        0.01 * w.theta.numel() ** 0.1
        + 0.001 * torch.linalg.vector_norm(torch.cat([p.detach().flatten() for p in w.mlp_parameters()]))
        for w in d.method.wrapped.values()
    )
    assert pen is not None and torch.allclose(pen, expect, rtol=1e-5)
    w = next(iter(d.method.wrapped.values()))
    pen.backward()
    assert w.theta.grad is not None and w.theta.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in w.mlp_parameters()[::2])

    off = drive("deal_code", tmp_path, apply_regularizer=False)
    off.model = off.method.before_task(off.model, off.stages[1])
    assert off.method.loss(off.model, off.batches[1], None) is None
    # and in a full run: no extra loss at all (the released dead code), vs a positive one when applied
    runs = {}
    for flag in (True, False):
        cfg = tiny_config(tmp_path / str(flag), method={"name": "deal_code", "apply_regularizer": flag})
        cfg["train"]["max_steps"] = 2
        runs[flag] = clift.run(cfg, stream=fixture_stream(names=["toysent", "toytopic"])).results
    assert runs[True]["training"][1]["mean_extra_loss"] > 0
    assert runs[False]["training"][1]["mean_extra_loss"] == 0.0
    assert runs[False]["method_stats"]["stages"][0]["regularizer_applied"] is False


def test_norm_power_uses_pth_powers(tmp_path):
    d = drive("deal_code", tmp_path, norm_power=True, lambda2=0.0)
    d.model = d.method.before_task(d.model, d.stages[1])
    pen = d.method.loss(d.model, d.batches[1], None)
    numel = sum(w.theta.numel() for w in d.method.wrapped.values())
    assert torch.allclose(pen, torch.tensor(0.01 * numel))  # λ1 Σ ‖θ‖_10^10 with θ = 1


def test_saved_task_is_a_peft_lora_plus_side_file_that_restores_the_eval_model(tmp_path):
    res = clift.run(tiny_config(tmp_path, method="deal_code"), stream=fixture_stream())
    first = res.run_dir / "adapters" / "0-toysent"
    assert not (first / MODULES_FILE).exists()  # task 1 is a plain LoRA
    last = res.run_dir / "adapters" / "2-toynli"
    keys = load_file(str(last / "adapter_model.safetensors")).keys()
    assert keys and all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in keys)
    base = load_model(ModelConfig(name="tiny-llama")).model
    loaded = PeftModel.from_pretrained(base, str(last))
    for (_, layer), (_, mine) in zip(lora_layers(loaded), lora_layers(res.model), strict=True):
        assert torch.allclose(layer.lora_A["default"].weight, mine.lora_A["default"].filtered_weight(), atol=1e-6)
    restored = restore_task_modules(loaded, last)
    assert torch.allclose(logits(restored), logits(res.model), atol=1e-5)
    with pytest.raises(CliftError, match="only deal_code tasks after the first"):
        restore_task_modules(loaded, first)


def test_config_errors_name_value_and_fix():
    with pytest.raises(ConfigError) as err:
        build_method_config({"name": "deal_code", "p_theta": 0.5, "lambda2": -1, "mlp_hidden": 0, "mlp_init": "xavier"})
    msg = str(err.value)
    assert "method.mlp_init: got 'xavier'; allowed values: 'kaiming', 'identity'" in msg
    with pytest.raises(ConfigError) as err:
        build_method_config({"name": "deal_code", "p_theta": 0.5, "lambda2": -1, "mlp_hidden": 0})
    msg = str(err.value)
    assert "p_theta must be >= 1" in msg and "lambda2 must be >= 0" in msg and "mlp_hidden must be >= 1" in msg


def test_export_refuses_to_merge_deal_code_and_says_what_to_use(tmp_path):
    from clift.export import export_run

    res = clift.run(tiny_config(tmp_path, method="deal_code"), stream=fixture_stream())
    with pytest.raises(CliftError) as err:
        export_run(res.run_dir, tmp_path / "merged", mode="merged")
    msg = str(err.value)
    assert "cannot be merged" in msg and "MLP" in msg  # why
    assert "restore_task_modules" in msg and str(res.run_dir / "adapters") in msg  # what to use instead
    assert not (tmp_path / "merged" / "model.safetensors").exists()
    with pytest.raises(CliftError, match="plain LoRA cannot express"):  # nor a single plain adapter
        export_run(res.run_dir, tmp_path / "adapter")
