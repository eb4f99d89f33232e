"""O-LoRA: the orthogonality penalty (zero iff orthogonal, its gradient), its place in a run, its report."""

from __future__ import annotations

import pytest
import torch

from clift.adapters import adapter_name, adapter_parameters, lora_layers
from clift.config import ModelConfig, RunConfig
from clift.errors import ConfigError, MethodStateError
from clift.methods import build_method, build_method_config
from clift.methods.base import Stage
from clift.methods.olora import OLoRA, l2_penalty, orthogonality_penalty
from clift.models import load_model
from clift.runner import Runner

from ..conftest import fixture_stream, tiny_config, two_tasks
from ..conftest import run_method as _run


def _rows(d: int, rows: range) -> torch.Tensor:
    """Unit rows e_i for i in ``rows``, shape (len(rows), d)."""
    return torch.eye(d, dtype=torch.float64)[list(rows)]


@pytest.mark.parametrize("norm", ["fro2", "l1"])
def test_penalty_is_zero_for_orthogonal_factors_and_positive_otherwise(norm):
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    a_old, a_new = q[:, :12].T, q[:, 12:20].T  # rows orthonormal to each other, (12, 32) and (8, 32)
    assert orthogonality_penalty(a_new, a_old, norm).item() == pytest.approx(0.0, abs=1e-12)
    assert orthogonality_penalty(_rows(32, range(8, 16)), _rows(32, range(8)), norm).item() == 0.0
    overlapping = a_new + 0.1 * a_old[:8]
    assert orthogonality_penalty(overlapping, a_old, norm).item() > 1e-3
    # stacking the old tasks sums the per-task penalties
    split = orthogonality_penalty(overlapping, a_old[:5], norm) + orthogonality_penalty(overlapping, a_old[5:], norm)
    assert orthogonality_penalty(overlapping, a_old, norm).item() == pytest.approx(split.item())


def test_penalty_values_and_gradients_match_the_formulas():
    g = torch.Generator().manual_seed(1)
    a_new = torch.randn(4, 10, generator=g, dtype=torch.float64, requires_grad=True)
    a_old = torch.randn(6, 10, generator=g, dtype=torch.float64)
    overlap = a_new.detach() @ a_old.T
    fro2 = orthogonality_penalty(a_new, a_old, "fro2")
    assert fro2.item() == pytest.approx(torch.linalg.matrix_norm(overlap).pow(2).item())
    (grad,) = torch.autograd.grad(fro2, a_new)
    assert torch.allclose(grad, 2 * overlap @ a_old)  # d‖A_new A_oldᵀ‖² / dA_new = 2 (A_new A_oldᵀ) A_old
    l1 = orthogonality_penalty(a_new, a_old, "l1")
    assert l1.item() == pytest.approx(overlap.abs().sum().item())
    (grad,) = torch.autograd.grad(l1, a_new)
    assert torch.allclose(grad, overlap.sign() @ a_old)
    assert torch.autograd.gradcheck(lambda a: orthogonality_penalty(a, a_old, "fro2"), (a_new,))


def test_l2_forms_and_errors():
    a, b = torch.ones(2, 3), torch.full((4, 2), 2.0)
    assert l2_penalty([a, b], "fro2").item() == pytest.approx(6 + 32)
    assert l2_penalty([a, b], "fro").item() == pytest.approx(6**0.5 + 32**0.5)
    with pytest.raises(ValueError, match="allowed: 'fro2', 'fro'"):
        l2_penalty([a], "l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="allowed: 'fro2', 'l1'"):
        orthogonality_penalty(a, a, "max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width"):
        orthogonality_penalty(torch.ones(2, 3), torch.ones(2, 4))


def _two_adapter_model(after_first=None, **method):
    """tiny-llama with O-LoRA's adapters task0 (frozen) and task1 (training), as the hooks build them.

    ``after_first(model)`` runs once task0 exists, before task1 is added (task0 is "trained" then).
    """
    m = build_method(build_method_config({"name": "olora", "dropout": 0.0, **method}))
    model = load_model(ModelConfig(name="tiny-llama")).model
    model = m.before_task(model, Stage(0, "t0", [], 0))
    if after_first is not None:
        after_first(model)
    m.after_task(model, Stage(0, "t0", [], 0))
    model = m.before_task(model, Stage(1, "t1", [], 1))
    return m, model


def test_penalty_in_the_model_trains_only_the_new_A_with_the_right_gradient():
    m, model = _two_adapter_model(lambda1=0.5, lambda2=0.0)
    assert isinstance(m, OLoRA)
    batch = {"input_ids": torch.randint(5, 700, (2, 9))}
    extra = m.loss(model, batch, model(**batch))
    assert extra is not None and extra.item() > 0
    extra.backward()
    old, new = adapter_name(0), adapter_name(1)
    for name, p in adapter_parameters(model, old).items():
        assert p.grad is None, f"frozen old adapter got a gradient: {name}"
    n_layers = 0
    for _, layer in lora_layers(model):
        a_new, a_old = layer.lora_A[new].weight, layer.lora_A[old].weight.detach()
        expected = 0.5 * 2 * (a_new.detach() @ a_old.T) @ a_old
        assert torch.allclose(a_new.grad, expected, atol=1e-6)
        assert layer.lora_B[new].weight.grad is None  # B is not constrained (lambda2 = 0)
        n_layers += 1
    assert n_layers == 4  # 2 layers × (q_proj, v_proj)


@torch.no_grad()
def _set_A(model, adapter: str, rows: range) -> None:
    for _, layer in lora_layers(model):
        weight = layer.lora_A[adapter].weight
        weight.copy_(_rows(weight.shape[1], rows))


def test_penalty_in_the_model_is_zero_when_the_new_A_is_orthogonal():
    m, model = _two_adapter_model(after_first=lambda model: _set_A(model, "task0", range(0, 8)))
    _set_A(model, "task1", range(8, 16))
    orth, _ = m.penalty_terms()
    assert orth is not None and orth.item() == 0.0
    _set_A(model, "task1", range(4, 12))  # half of the new rows now lie in the old subspace
    orth, _ = m.penalty_terms()
    assert orth is not None and orth.item() == 4 * 4  # 4 layers × 4 unit overlaps (squared)


def test_olora_run_keeps_old_adapters_and_reports_term_magnitudes(tmp_path):
    from safetensors.torch import load_file

    cfg = tiny_config(tmp_path, method={"name": "olora", "lambda1": 0.5, "lambda2": 0.01})
    res, method = _run(cfg, fixture_stream())
    model = res.model
    assert sorted(model.base_model.active_adapters) == ["task0", "task1", "task2"]
    assert res.results["run"]["needs_task_id"] is False
    for i, name in enumerate(["toysent", "toytopic", "toynli"]):
        saved = load_file(str(res.run_dir / "adapters" / f"{i}-{name}" / "adapter_model.safetensors"))
        final = {
            k.split("base_model.model.")[-1].replace(f".{adapter_name(i)}", ""): v
            for k, v in adapter_parameters(model, adapter_name(i)).items()
        }
        assert saved and all(torch.equal(t, final[k.split("base_model.model.")[-1]]) for k, t in saved.items())
    terms = res.results["method_stats"]["loss_terms"]
    assert [t["stage"] for t in terms] == ["toysent", "toytopic", "toynli"]
    assert terms[0]["orth"] == 0.0 and terms[1]["orth"] > 0 and terms[2]["orth"] > 0
    for t, train in zip(terms, res.results["training"], strict=True):
        assert t["calls"] == 3 and t["task_loss"] > 0 and t["l2"] > 0
        assert t["penalty"] == pytest.approx(0.5 * t["orth"] + 0.01 * t["l2"])
        assert t["penalty_to_task"] == pytest.approx(t["penalty"] / t["task_loss"])
        assert train["mean_extra_loss"] == pytest.approx(t["penalty"])
    # the adapters are model tensors; the method's own state is only the report's sums
    state = method.state_dict()
    assert list(state) == ["terms"] and [e["stage"] for e in state["terms"]["done"]] == [
        "toysent",
        "toytopic",
        "toynli",
    ]
    fresh = build_method(method.config)
    fresh.setup(method.ctx)
    fresh.load_state_dict(state)
    assert fresh.stats() == method.stats()
    with pytest.raises(MethodStateError, match=r"'terms\.done\.0\.sums'"):
        fresh.load_state_dict({"terms": {"done": [{"stage": "toysent", "calls": 1}], "open": None}})
    # the flat format of earlier versions: stage names come from the stream
    fresh.load_state_dict(
        {"terms.0.calls": torch.tensor(2), "terms.0.sum.orth": torch.tensor(1.0, dtype=torch.float64)}
    )
    assert fresh.terms.summary() == [{"stage": "toysent", "calls": 2, "orth": 0.5}]


def test_lambda_zero_is_inc_lora(tmp_path):
    a = Runner(RunConfig.from_dict(tiny_config(tmp_path / "a", method="inc_lora")), stream=two_tasks()).run()
    cfg = tiny_config(tmp_path / "b", method={"name": "olora", "lambda1": 0.0})
    b = Runner(RunConfig.from_dict(cfg), stream=two_tasks()).run()
    assert a.results["matrix"] == b.results["matrix"]
    pa, pb = a.model.state_dict(), b.model.state_dict()
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert b.results["method_stats"]["loss_terms"][1]["orth"] > 0  # measured, though not applied


def test_config_errors_and_preset():
    with pytest.raises(ConfigError, match=r"lambda1 must be >= 0, got -1.0"):
        build_method_config({"name": "olora", "lambda1": -1})
    with pytest.raises(ConfigError, match=r"orth_norm.*allowed values: 'fro2', 'l1'"):
        build_method_config({"name": "olora", "orth_norm": "l2"})
    cfg = build_method_config({"name": "olora", "preset": "o-lora-code"})
    assert (cfg.orth_norm, cfg.l2_norm, cfg.lambda1, cfg.lambda2) == ("l1", "fro", 0.5, 0.0)
