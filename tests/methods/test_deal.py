"""`deal` (the paper's method, made concrete): identity start, materialisation, regulariser, saving, configs."""

from __future__ import annotations

import copy
import weakref
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils import parametrize

import clift
from clift.adapters import adapter_parameters, lora_layers
from clift.config import ModelConfig, RunConfig, load_yaml
from clift.errors import ConfigError
from clift.methods import build_method_config
from clift.methods.deal import DealGroup
from clift.models import load_model

from ..conftest import Driven, drive, factor_weights, fixture_stream, logits, tiny_config, train

REPO = Path(__file__).resolve().parents[2]


def _perturb_modules(method) -> None:
    """Give every DEAL module non-trivial parameters (as after training with a large lr)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for grp in method.bank.groups:
            grp.kernel_weight.copy_(torch.rand(grp.kernel_weight.shape, generator=g) - 0.5)
            grp.centre_shift.copy_(0.2 * (torch.rand(grp.centre_shift.shape, generator=g) - 0.5))
            grp.w2.copy_(0.3 * torch.randn(grp.w2.shape, generator=g))
            grp.b2.copy_(0.05 * torch.randn(grp.b2.shape, generator=g))


@pytest.mark.parametrize("factors", ["both", "a"])
def test_identity_start_keeps_factors_and_outputs(tmp_path, factors):
    d = drive("deal", tmp_path, factors=factors)
    train(d, d.stages[0], 3)  # task 1: plain LoRA, B moves away from zero
    d.method.after_task(d.model, d.stages[0])
    before_w, before_out = factor_weights(d.model), logits(d.model)
    assert any(v.abs().sum() > 0 for k, v in before_w.items() if k.endswith(".B"))

    d.model = d.method.before_task(d.model, d.stages[1])
    wrapped = d.method.factors
    assert len(wrapped) == len(before_w) // (1 if factors == "both" else 2)
    assert all(parametrize.is_parametrized(lin, "weight") for lin in wrapped)
    after_w = factor_weights(d.model)
    for key, w in before_w.items():
        assert (after_w[key] - w).abs().max() <= 1e-6, key
        assert torch.equal(after_w[key], w), key  # the correction form makes it exact, not just close
    assert torch.allclose(logits(d.model), before_out, atol=1e-6)


def test_each_factor_group_is_computed_once_per_forward(tmp_path, monkeypatch):
    d = drive("deal", tmp_path)
    d.model = d.method.before_task(d.model, d.stages[1])
    calls = {"group": 0}
    group_forward = DealGroup.forward

    def count_group(self, m):
        calls["group"] += 1
        return group_forward(self, m)

    monkeypatch.setattr(DealGroup, "forward", count_group)
    d.model.eval()  # no dropout: two passes must give identical gradients
    grads, passes = [], []
    for _ in range(2):  # a second pass (gradient accumulation) recomputes the groups with a fresh graph
        calls["group"] = 0
        d.model(**d.batches[1]).loss.backward()
        # PEFT reads lora_A.weight twice per call; the bank computes each group once per pass
        assert calls["group"] == len(d.method.bank.groups) == 3  # A (64 in), B of q (64 out), B of v (32 out)
        grads.append([p.grad.clone() for p in d.method.bank.parameters()])
        passes.append(weakref.ref(d.method.bank._cache[0]))
    # a replaced pass (and its graph) is freed at once: no reference cycle through the backward hook
    assert passes[0]() is None and passes[1]() is not None
    assert all(torch.allclose(2 * a, b, atol=1e-7) for a, b in zip(grads[0], grads[1], strict=True))
    # after an optimizer-style in-place update the next read sees the new parameters
    lin = d.method.factors[0]
    with torch.no_grad():
        d.method.bank.groups[0].b2.add_(1.0)
        delta = lin.weight - lin.parametrizations.weight.original
    assert torch.allclose(delta, torch.ones_like(delta), atol=1e-6)


def test_materialised_lora_matches_parametrized_model_and_peft_merge(tmp_path):
    d = drive("deal", tmp_path)
    train(d, d.stages[0], 3)
    d.method.after_task(d.model, d.stages[0])
    prev = factor_weights(d.model)
    d.model = d.method.before_task(d.model, d.stages[1])
    _perturb_modules(d.method)
    parametrized_out = logits(d.model)
    changed = factor_weights(d.model)
    assert all(not torch.allclose(changed[k], prev[k]) for k in prev)  # the modules really act

    d.model = d.method.after_task(d.model, d.stages[1])
    assert not any(parametrize.is_parametrized(m) for _, layer in lora_layers(d.model) for m in layer.modules())
    assert type(lora_layers(d.model)[0][1].lora_A["default"]) is torch.nn.Linear  # plain LoRA again
    for key, w in factor_weights(d.model).items():
        assert torch.allclose(w, changed[key], atol=1e-6)
    assert all(lin.weight.is_contiguous() for _, layer in lora_layers(d.model) for lin in (layer.lora_A["default"],))
    assert torch.allclose(logits(d.model), parametrized_out, atol=1e-5)
    merged = copy.deepcopy(d.model).merge_and_unload()
    assert torch.allclose(logits(merged), parametrized_out, atol=1e-5)


def test_regulariser_gives_theta1_and_theta2_their_gradients(tmp_path):
    d = drive("deal", tmp_path, lambda1=0.5, lambda2=0.1, a=4.0, b=2.0)
    d.model = d.method.before_task(d.model, d.stages[1])
    _perturb_modules(d.method)
    penalty = d.method.loss(d.model, d.batches[1], None)
    assert penalty is not None and penalty.item() > 0
    penalty.backward()
    bank = d.method.bank
    for p in bank.retention_parameters():  # d/dθ λ1 Σ|θ|^a = λ1 a |θ|^(a-1) sign θ
        expect = 0.5 * 4.0 * p.detach().abs() ** 3 * p.detach().sign()
        assert p.grad is not None and p.grad.abs().sum() > 0
        assert torch.allclose(p.grad, expect, rtol=1e-5, atol=1e-10)
    for p in bank.update_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
        assert torch.allclose(p.grad, 0.1 * 2.0 * p.detach(), rtol=1e-5, atol=1e-10)
    stats = d.method._stage_stats(d.stages[1])
    assert stats["penalty_retention_last"] > 0 and stats["penalty_update_last"] > 0


def test_a_smaller_than_b_is_rejected_with_the_fix():
    with pytest.raises(ConfigError, match=r"a must be >= b .*got a=1\.0, b=2\.0; raise a or lower b"):
        build_method_config({"name": "deal", "a": 1, "b": 2})
    with pytest.raises(ConfigError) as err:
        build_method_config({"name": "deal", "lambda1": -1, "widths": [], "num_centres": 0, "b": 0.5})
    msg = str(err.value)
    assert "lambda1 must be >= 0" in msg and "widths must be a non-empty list" in msg
    assert "num_centres must be >= 1" in msg and "b must be >= 1" in msg


def test_penalty_weights_left_null_take_the_structure_defaults_and_explicit_values_win():
    from clift.methods.deal import DEALConfig

    for structure, defaults in DEALConfig.STRUCTURE_DEFAULTS.items():
        cfg = build_method_config({"name": "deal", "structure": structure})
        assert {k: getattr(cfg, k) for k in defaults} == defaults
        assert {k: cfg.to_dict()[k] for k in defaults} == defaults  # config.yaml records numbers, not null
    assert DEALConfig.STRUCTURE_DEFAULTS["paper"] == {"lambda1": 0.01, "lambda2": 0.001, "anchor": 0.0}
    explicit = build_method_config({"name": "deal", "structure": "retention", "anchor": 0.0, "lambda1": 0.5})
    assert (explicit.anchor, explicit.lambda1) == (0.0, 0.5)
    assert explicit.lambda2 == DEALConfig.STRUCTURE_DEFAULTS["retention"]["lambda2"]
    # a resolved config built again from its own dict is the same config (suite reuse and resume compare these)
    assert build_method_config({"name": "deal", **explicit.to_dict()}) == explicit


@pytest.mark.parametrize("train_factors", [True, False])
def test_what_trains_in_later_tasks(tmp_path, train_factors):
    d = drive("deal", tmp_path, train_factors=train_factors, factors="a")
    train(d, d.stages[0], 2)
    d.method.after_task(d.model, d.stages[0])
    prev = factor_weights(d.model)
    losses = train(d, d.stages[1], 12)
    assert losses[-1] < losses[0]  # the second task is learnt
    for grp in d.method.bank.groups:
        assert grp.kernel_weight.abs().sum() > 0 and grp.w2.abs().sum() > 0  # θ1 and θ2 train
    for lin, (name, layer) in zip(d.method.factors, lora_layers(d.model), strict=True):
        raw = lin.parametrizations.weight.original
        assert torch.equal(raw, prev[f"{name}.A"]) != train_factors
        assert not parametrize.is_parametrized(layer.lora_B["default"])  # factors="a": B stays plain
        assert torch.equal(layer.lora_B["default"].weight, prev[f"{name}.B"]) != train_factors


@pytest.mark.parametrize(
    ("model_name", "structure"), [("tiny-llama", "paper"), ("tiny-t5", "paper"), ("tiny-llama", "retention")]
)
def test_saved_adapters_are_plain_peft_loras_that_reproduce_the_model(tmp_path, model_name, structure):
    method = {"name": "deal", "structure": structure}
    res = clift.run(tiny_config(tmp_path, model=model_name, method=method), stream=fixture_stream())
    stats = res.results["method_stats"]["stages"]
    assert [s["stage"] for s in stats] == ["toytopic", "toynli"]
    assert all(s["penalty_update_mean"] > 0 for s in stats)
    saved = res.run_dir / "adapters" / "2-toynli"
    keys = load_file(str(saved / "adapter_model.safetensors")).keys()
    assert keys and all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in keys)
    loaded = PeftModel.from_pretrained(load_model(ModelConfig(name=model_name)).model, str(saved))
    assert torch.allclose(logits(loaded), logits(res.model), atol=1e-5)


def test_presets_and_paper_configs():
    t5 = build_method_config({"name": "deal", "preset": "t5-large"})
    assert (t5.r, t5.alpha, t5.dropout, t5.target_modules) == (16, 32.0, 0.1, ["q", "v"])
    llama = build_method_config({"name": "deal_code", "preset": "llama-3.1-8b", "r": 8})
    assert (llama.r, llama.target_modules) == (8, ["q_proj", "v_proj"])  # user keys win over the preset
    paper = sorted((REPO / "configs" / "papers").glob("deal-*.yaml"))
    ablations = sorted((REPO / "configs" / "ablations").glob("deal-*.yaml"))
    assert len(paper) == 2 and len(ablations) >= 2
    for path in paper + ablations:
        cfg = RunConfig.from_dict(load_yaml(path))
        assert cfg.method.method_name() in ("deal", "deal_code"), path
    t5_run = RunConfig.from_dict(load_yaml(REPO / "configs" / "papers" / "deal-t5-standard.yaml"))
    assert t5_run.train.lr == pytest.approx(1e-5) and t5_run.method.r == 16
    assert t5_run.model.name == "google/flan-t5-large" and t5_run.data.max_source_length == 512


@pytest.mark.parametrize(
    "method", ["deal", "deal_code", {"name": "deal", "structure": "retention", "anchor": 0.1, "module_lr": 0.05}]
)
def test_resume_mid_task_three_equals_uninterrupted(tmp_path, monkeypatch, method):
    # stage 1 completed with modules (replayed through before_task + restore_task), crash inside stage 2
    # with modules active: the resumed run must end exactly where the uninterrupted one does
    from ..conftest import crash_at as _crash_at
    from ..conftest import stable_results as _stable

    sections = {"train": {"max_steps": 4, "checkpoint_every": 2, "lr": 2e-3}}
    reference = clift.run(tiny_config(tmp_path / "ref", method=method, **sections), stream=fixture_stream())
    cfg = tiny_config(tmp_path / "crash", method=method, **sections)
    _crash_at(monkeypatch, stage_index=2, step=3)
    with pytest.raises(RuntimeError, match="injected"):
        clift.run(cfg, stream=fixture_stream())
    resumed = clift.run(cfg, stream=fixture_stream())
    assert resumed.results["resumes"] == [{"stage": 2, "step": 2}]
    assert _stable(resumed.results) == _stable(reference.results)
    ref_params = dict(reference.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        assert torch.equal(p, ref_params[name]), name


def _hold_modules_at_identity(monkeypatch) -> None:
    """Make DEAL's modules untrainable (so they stay the exact identity); the raw factors still train."""
    from clift.methods.deal import DEAL

    def groups(self, model):
        if self.bank is not None:
            for p in self.bank.parameters():
                p.requires_grad_(False)
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    monkeypatch.setattr(DEAL, "param_groups", groups)


def _loss_curves(tmp_path: Path, method: str | dict) -> list[list[float]]:
    sections = {"train": {"max_steps": 4, "lr": 5e-3}, "log": {"progress": False, "log_every": 1}}
    res = clift.run(tiny_config(tmp_path, method=method, **sections), stream=fixture_stream())
    return [t["loss_curve"] for t in res.results["training"]]


def test_deal_at_identity_trains_exactly_like_seq_lora(tmp_path, monkeypatch):
    # same batches and dropout masks (LoRA dropout 0.1): DEAL's module init draws from its own generator
    reference = _loss_curves(tmp_path / "seq", "seq_lora")
    moving = _loss_curves(tmp_path / "moving", "deal")
    assert moving[0] == reference[0]  # task 1 is plain LoRA in both
    assert moving[1][0] == reference[1][0]  # identity start: the first step of task 2 is the same too
    assert moving[1][1:] != reference[1][1:]  # once the modules move, the losses differ
    _hold_modules_at_identity(monkeypatch)
    held = _loss_curves(tmp_path / "held", "deal")
    assert held == reference  # bit for bit, every step of every task


def _hand_anchor(d: Driven, adapters: list[str], start: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_layers ‖Σ_k (B'_k A'_k − B_k A_k)‖²_F with the full out×in products (what the Gram form avoids)."""
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for name, layer in lora_layers(d.model):
            delta = sum(
                layer.lora_B[a].weight.double() @ layer.lora_A[a].weight.double()
                - start[f"{name}.{a}.B"].double() @ start[f"{name}.{a}.A"].double()
                for a in adapters
            )
            total += (delta**2).sum()
    return total


def _all_factors(model: nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {
            f"{name}.{a}.{kind}": getattr(layer, f"lora_{kind}")[a].weight.detach().clone()
            for name, layer in lora_layers(model)
            for a in layer.lora_A
            for kind in ("A", "B")
        }


@pytest.mark.parametrize("structure", ["paper", "retention"])
def test_anchor_term_matches_a_hand_computation(tmp_path, structure):
    d = drive("deal", tmp_path, structure=structure, anchor=0.7, lambda1=0.0, lambda2=0.0, lr=2e-2)
    for stage in d.stages[:2]:  # task 3 then has two earlier adapters under the retention structure
        train(d, stage, 3)
        d.model = d.method.after_task(d.model, stage)
    start = _all_factors(d.model)
    old = list(d.method.adapters)
    d.model = d.method.before_task(d.model, d.stages[2])
    anchor = d.method.anchor_penalty()
    assert anchor is not None and anchor.item() == 0.0  # exactly zero while nothing moved
    _perturb_modules(d.method)
    if structure == "paper":  # the raw factors train under the paper structure: move them too
        with torch.no_grad():
            for lin in d.method.factors:
                lin.parametrizations.weight.original.mul_(1.1)
    anchor = d.method.anchor_penalty()
    hand = 0.7 * _hand_anchor(d, old, start)
    assert hand > 1e-6
    assert anchor.item() == pytest.approx(hand.item(), rel=1e-4)
    assert d.method.loss(d.model, d.batches[2], None).item() == pytest.approx(hand.item(), rel=1e-4)


@pytest.mark.parametrize("structure", ["paper", "retention"])
def test_materialised_lora_matches_the_wrapped_model_after_a_trained_task(tmp_path, structure):
    d = drive("deal", tmp_path, structure=structure, module_lr=0.05, lr=1e-2)
    train(d, d.stages[0], 3)
    d.model = d.method.after_task(d.model, d.stages[0])
    train(d, d.stages[1], 6)  # a real task: the modules move by training, not by hand
    changes = d.method._factor_change()
    assert changes["A"]["modules"] > 1e-3 and changes["B"]["modules"] > 1e-3
    wrapped_out, wrapped_w = logits(d.model), _all_factors(d.model)
    d.model = d.method.after_task(d.model, d.stages[1])
    assert not any(parametrize.is_parametrized(m) for _, layer in lora_layers(d.model) for m in layer.modules())
    for key, w in _all_factors(d.model).items():
        assert torch.allclose(w, wrapped_w[key], atol=1e-6), key
    assert torch.allclose(logits(d.model), wrapped_out, atol=1e-5)
    merged = copy.deepcopy(d.model).merge_and_unload()
    assert torch.allclose(logits(merged), wrapped_out, atol=1e-5)
    saved = d.method.save_task(d.model, d.stages[1], tmp_path / "saved")[0]
    reloaded = PeftModel.from_pretrained(load_model(ModelConfig(name="tiny-llama")).model, str(saved))
    assert torch.allclose(logits(reloaded), wrapped_out, atol=1e-5)


@pytest.mark.parametrize("held", [True, False])
def test_retention_changes_earlier_tasks_only_through_the_modules(tmp_path, held):
    d = drive("deal", tmp_path, structure="retention", module_lr=0.05)
    train(d, d.stages[0], 3)
    d.model = d.method.after_task(d.model, d.stages[0])
    task1 = {k: v for k, v in _all_factors(d.model).items() if ".default." in k}
    d.model = d.method.before_task(d.model, d.stages[1])
    assert d.method.adapters == ["default", "task1"]
    bank_ids = {id(p) for p in d.method.bank.parameters()}
    if held:
        for p in d.method.bank.parameters():
            p.requires_grad_(False)
    trainable = [p for p in d.model.parameters() if p.requires_grad]
    new_ids = {id(p) for p in adapter_parameters(d.model, "task1").values()}
    assert trainable and all(id(p) in new_ids | bank_ids for p in trainable)  # only θ1/θ2 and the new LoRA
    d.method.before_task = lambda model, stage: model  # already entered
    train(d, d.stages[1], 6)
    now = _all_factors(d.model)
    for lin in d.method.factors:  # the frozen factors under the modules never change
        raw = lin.parametrizations.weight.original
        assert not raw.requires_grad and any(torch.equal(raw, v) for v in task1.values())
    moved = [not torch.equal(now[k], v) for k, v in task1.items()]
    assert not any(moved) if held else all(moved)  # bit-identical while the modules are at identity
    assert all(v.abs().sum() > 0 for k, v in now.items() if ".task1." in k)  # the new LoRA learnt (B starts at 0)


def test_checkpoints_of_the_flat_state_layout_still_load(tmp_path):
    d = drive("deal", tmp_path)
    flat = {  # what DEAL.state_dict wrote before method state could nest
        "history.0.stage_index": torch.tensor(1.0, dtype=torch.float64),
        "history.0.wrapped_factors": torch.tensor(8.0, dtype=torch.float64),
        "history.0.penalty_update_mean": torch.tensor(0.25, dtype=torch.float64),
        "pen.retention": torch.tensor(0.5),
        "pen.update": torch.tensor(1.5),
        "pen.steps": torch.tensor(3.0),
        "last.update": torch.tensor(0.5),
    }
    d.method.load_state_dict(flat)
    assert d.method.history == [
        {"stage": "toytopic", "stage_index": 1, "wrapped_factors": 8, "penalty_update_mean": 0.25}
    ]
    assert d.method._pen["steps"] == 3 and float(d.method._pen["update"]) == 1.5
    assert float(d.method._last_pen["update"]) == 0.5
    state = d.method.state_dict()  # the nested layout round-trips through the checkpoint's split
    from clift.checkpoint import join_state, split_state

    again = drive("deal", tmp_path)
    again.method.load_state_dict(join_state(*split_state(state)))
    assert again.method.history == d.method.history
    assert torch.equal(again.method.generator.get_state(), d.method.generator.get_state())


def test_retention_structure_exports_as_plain_lora_and_merged(tmp_path):
    from clift.export import export_run

    method = {"name": "deal", "structure": "retention", "module_lr": 0.05}
    res = clift.run(tiny_config(tmp_path, method=method), stream=fixture_stream())
    out = export_run(res.run_dir, tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(load_model(ModelConfig(name="tiny-llama")).model, str(out))
    assert torch.allclose(logits(loaded), logits(res.model), atol=1e-5)
    merged = export_run(res.run_dir, tmp_path / "merged", mode="merged")
    plain = load_model(ModelConfig(name=str(merged))).model
    assert torch.allclose(logits(plain), logits(res.model), atol=1e-5)


def test_stats_report_how_far_every_module_parameter_moves_the_factors(tmp_path):
    d = drive("deal", tmp_path, module_lr=0.05)
    train(d, d.stages[0], 3)
    d.model = d.method.after_task(d.model, d.stages[0])
    train(d, d.stages[1], 5)
    change = d.method._factor_change()
    params = {"kernel_weight", "centre_shift", "w1", "b1", "w2", "b2"}
    assert set(change) == {"A", "B"}
    for kind in ("A", "B"):
        assert params | {"start_norm", "total", "raw", "modules"} <= set(change[kind])
        assert all(change[kind][p] > 0 for p in params), change[kind]
    # b2 is added to every row of M: removing it changes factor g by exactly 1·b2_gᵀ, of size sqrt(n)·‖b2_g‖
    bank = d.method.bank
    hand = {"A": 0.0, "B": 0.0}
    for g, grp in enumerate(bank.groups):
        i = bank.group_members[g][0]
        n = bank.weights[i].shape[1] if bank.rank_first[i] else bank.weights[i].shape[0]
        hand["A" if bank.rank_first[i] else "B"] += n * float((grp.b2.detach() ** 2).sum())
    for kind in ("A", "B"):
        assert change[kind]["b2"] == pytest.approx(hand[kind] ** 0.5, rel=1e-4)
    # "modules" is everything the modules add to the raw factors: ‖Y' − Y_raw‖ over all wrapped factors
    with torch.no_grad():
        added = sum(float((lin.weight - lin.parametrizations.weight.original).pow(2).sum()) for lin in d.method.factors)
    assert (change["A"]["modules"] ** 2 + change["B"]["modules"] ** 2) == pytest.approx(added, rel=1e-4)
    assert change["A"]["raw"] > 0  # the raw factors train under the paper structure
    d.model = d.method.after_task(d.model, d.stages[1])
    row = d.method.stats()["stages"][-1]
    assert row["factor_change"]["B"]["b2"] == pytest.approx(change["B"]["b2"])


@pytest.mark.parametrize(
    "method", [{"name": "deal"}, {"name": "deal", "structure": "retention"}, {"name": "deal_code"}]
)
def test_module_init_leaves_the_global_generator_alone(tmp_path, method):
    runs = []
    for k in range(2):
        d = drive(method["name"], tmp_path / str(k), **{k: v for k, v in method.items() if k != "name"})
        state = torch.get_rng_state()
        d.model = d.method.before_task(d.model, d.stages[1])
        assert torch.equal(torch.get_rng_state(), state)  # dropout masks stay those of seq_lora
        runs.append({n: p.detach().clone() for n, p in d.model.named_parameters() if p.requires_grad})
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(v, runs[1][n]) for n, v in runs[0].items())  # drawn from the seeded own generator


def test_retention_with_fused_frozen_adapters_computes_like_peft_loop_and_trains_the_modules(tmp_path):
    """With dropout off, the fused earlier adapters give PEFT's per-adapter loss and θ1/θ2 gradients (to float
    rounding); while fused, PEFT's loop runs only the new adapter; after the task the model is plain PEFT again."""
    runs = {}
    for mode in ("fused", "separate"):
        d = drive("deal", tmp_path / mode, structure="retention", dropout=0.0, frozen_adapters=mode, lr=2e-2)
        train(d, d.stages[0], 2)
        d.model = d.method.after_task(d.model, d.stages[0])
        train(d, d.stages[1], 2)  # the modules move (module lr = lr)
        d.model = d.method.after_task(d.model, d.stages[1])
        d.model = d.method.before_task(d.model, d.stages[2])  # two earlier adapters under the modules
        _perturb_modules(d.method)
        layers = [layer for _, layer in lora_layers(d.model)]
        if mode == "fused":
            assert all(layer.active_adapters == ["task2"] for layer in layers)
        else:
            assert all(set(layer.active_adapters) == {"default", "task1", "task2"} for layer in layers)
        loss = d.model(**d.batches[2]).loss
        loss.backward()
        grads = [p.grad.detach().clone() for p in d.method.bank.parameters() if p.grad is not None]
        runs[mode] = (loss.detach(), grads, d)
    (lf, gf, df), (ls, gs, _) = runs["fused"], runs["separate"]
    assert torch.allclose(lf, ls, atol=1e-6)
    assert len(gf) == len(gs) > 0 and any(g.abs().sum() > 0 for g in gf)
    for a, b in zip(gf, gs, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    df.model = df.method.after_task(df.model, df.stages[2])
    assert all(set(layer.active_adapters) == {"default", "task1", "task2"} for _, layer in lora_layers(df.model))
    assert not any(p.requires_grad for n, p in df.model.named_parameters() if ".default." in n or ".task1." in n)
