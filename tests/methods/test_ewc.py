"""EWC: penalty 0 at the anchor, non-negative online Fisher, its gradient, its budget, its state."""

from __future__ import annotations

import pytest
import torch

from clift.adapters import adapter_parameters
from clift.config import RunConfig
from clift.errors import ConfigError, MethodStateError
from clift.methods import build_method, build_method_config
from clift.methods.ewc import EWC, ewc_penalty
from clift.runner import Runner

from ..conftest import fixture_stream, tiny_config, two_tasks
from ..conftest import run_method as _run


@pytest.fixture(scope="module")
def ewc_run(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("ewc"), method={"name": "ewc", "fisher_samples": 6, "gamma": 0.5})
    return _run(cfg, fixture_stream())


def test_fisher_is_non_negative_and_penalty_is_zero_at_the_anchor(ewc_run):
    res, m = ewc_run
    assert isinstance(m, EWC)
    lora = adapter_parameters(res.model, "default")
    assert set(m.fisher) == set(m.anchor) == set(lora) and len(lora) == 8  # 4 layers × (A, B)
    assert all((f >= 0).all() for f in m.fisher.values())
    assert any((f > 0).any() for f in m.fisher.values())
    # right after a task the anchor is the model itself: no penalty and no pull
    raw = ewc_penalty(m.trainable, m.fisher, m.anchor)
    assert raw.item() == 0.0
    batch = {"input_ids": torch.randint(5, 700, (2, 8))}
    extra = m.loss(res.model, batch, res.model(**batch))
    assert extra is not None and extra.item() == 0.0
    extra.backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in lora.values())
    res.model.zero_grad(set_to_none=True)


def test_penalty_has_the_right_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(3, 4, generator=g, requires_grad=True), "b": torch.randn(5, generator=g)}
    anchor = {k: v.detach() + 0.1 * torch.randn(v.shape, generator=g) for k, v in theta.items()}
    fisher = {k: torch.rand(v.shape, generator=g) for k, v in theta.items()}
    raw = ewc_penalty(theta, fisher, anchor)
    expect = sum((fisher[k] * (theta[k].detach() - anchor[k]) ** 2).sum() for k in theta)
    assert raw.item() == pytest.approx(expect.item())
    (grad,) = torch.autograd.grad(raw, theta["w"])
    assert torch.allclose(grad, 2 * fisher["w"] * (theta["w"].detach() - anchor["w"]))
    with pytest.raises(KeyError, match="no such parameter"):
        ewc_penalty({}, fisher, anchor)


def test_fisher_accumulates_online_and_respects_the_sample_budget(ewc_run):
    res, m = ewc_run
    assert [f["examples"] for f in m.fisher_log] == [6, 6, 6]
    stage = m.stages(m.ctx.stream)[2]
    f_t, n = m.estimate_fisher(res.model, stage)
    again, _ = m.estimate_fisher(res.model, stage)
    assert n == 6 and all(torch.equal(f_t[k], again[k]) for k in f_t)  # eval mode: deterministic
    before = {k: v.clone() for k, v in m.fisher.items()}
    m.after_task(res.model, stage)
    for k in before:
        assert torch.allclose(m.fisher[k], 0.5 * before[k] + f_t[k])  # F ← γ F + F_t with γ = 0.5
    assert all(p.grad is None for p in m.trainable.values())  # estimation leaves no gradients behind
    assert res.results["method_stats"]["loss_terms"][0]["ewc"] == 0.0
    assert res.results["method_stats"]["loss_terms"][1]["ewc"] > 0.0


def test_state_dict_round_trip_and_errors(ewc_run):
    _, m = ewc_run
    state = m.state_dict()
    assert set(state) == {"tasks_seen", "fisher", "anchor", "fisher_log", "terms"}
    assert state["tasks_seen"] == m.tasks_seen >= 3 and state["fisher_log"] == m.fisher_log
    fresh = build_method(m.config)
    fresh.setup(m.ctx)
    fresh.trainable = m.trainable
    fresh.load_state_dict(state)
    assert fresh.tasks_seen == m.tasks_seen and fresh.stats() == m.stats()
    assert all(
        torch.equal(fresh.fisher[k], m.fisher[k]) and torch.equal(fresh.anchor[k], m.anchor[k]) for k in m.fisher
    )
    with pytest.raises(MethodStateError, match="'tasks_seen'"):
        fresh.load_state_dict({"fisher": {}})
    bad = {
        **state,
        "fisher": {**state["fisher"], "nope": torch.zeros(1)},
        "anchor": {**state["anchor"], "nope": torch.zeros(1)},
    }
    with pytest.raises(MethodStateError, match=r"'fisher\.nope'") as err:
        fresh.load_state_dict(bad)
    assert "same method config" in str(err.value)


def test_state_in_the_old_flat_format_loads(ewc_run):
    _, m = ewc_run
    names = [t.name for t in m.ctx.stream.tasks]
    first = next(iter(m.fisher))
    old = {
        "tasks_seen": torch.tensor(2),
        f"fisher.{first}": torch.full_like(m.fisher[first], 0.25),
        f"anchor.{first}": torch.full_like(m.anchor[first], 0.5),
        "fisher_log.0.examples": torch.tensor(6, dtype=torch.int64),
        "fisher_log.0.fisher_mean": torch.tensor(0.1, dtype=torch.float64),
        "fisher_log.0.fisher_max": torch.tensor(0.3, dtype=torch.float64),
        "terms.0.calls": torch.tensor(3, dtype=torch.int64),
        "terms.0.sum.task_loss": torch.tensor(6.0, dtype=torch.float64),
        "terms.0.sum.penalty": torch.tensor(1.5, dtype=torch.float64),
        "terms.open.calls": torch.tensor(1, dtype=torch.int64),
        "terms.open.sum.task_loss": torch.tensor(2.5, dtype=torch.float64),
    }
    fresh = build_method(m.config)
    fresh.setup(m.ctx)
    fresh.load_state_dict(old)
    assert fresh.tasks_seen == 2 and torch.equal(fresh.anchor[first], old[f"anchor.{first}"])
    assert fresh.fisher_log == [{"stage": names[0], "examples": 6, "fisher_mean": 0.1, "fisher_max": 0.3}]
    assert fresh.terms.summary() == [
        {"stage": names[0], "calls": 3, "task_loss": 2.0, "penalty": 0.5, "penalty_to_task": 0.25}
    ]
    assert fresh.terms.state_dict()["open"] == {"stage": names[1], "calls": 1, "sums": {"task_loss": 2.5}}
    with pytest.raises(MethodStateError, match="'tasks_seen'"):
        fresh.load_state_dict({"fisher.x": torch.zeros(1)})


def test_lambda_zero_is_seq_lora(tmp_path):
    """The Fisher pass after each task must not disturb training (no RNG draws, no gradients left)."""
    a = Runner(RunConfig.from_dict(tiny_config(tmp_path / "a", method="seq_lora")), stream=two_tasks()).run()
    cfg = tiny_config(tmp_path / "b", method={"name": "ewc", "ewc_lambda": 0.0, "fisher_samples": 4})
    b = Runner(RunConfig.from_dict(cfg), stream=two_tasks()).run()
    assert a.results["matrix"] == b.results["matrix"]
    pa, pb = a.model.state_dict(), b.model.state_dict()
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert b.results["method_stats"]["loss_terms"][1]["ewc"] > 0  # measured, though not applied


def test_full_fine_tuning_option(tmp_path):
    cfg = tiny_config(
        tmp_path, method={"name": "ewc", "trains": "full", "fisher_samples": 2}, train={"max_steps": 2, "lr": 1e-3}
    )
    res, m = _run(cfg, two_tasks())
    assert set(m.fisher) == {n for n, _ in res.model.named_parameters()}
    assert res.results["method_stats"]["loss_terms"][1]["ewc"] > 0
    assert not (res.run_dir / "adapters").exists()


def test_config_errors():
    with pytest.raises(ConfigError) as err:
        build_method_config({"name": "ewc", "ewc_lambda": -1, "gamma": 2, "fisher_samples": 0, "fisher_batch_size": 0})
    text = str(err.value)
    assert "4 problems" in text
    for part in ("ewc_lambda must be >= 0", "gamma must be in [0, 1]", "fisher_samples must be >= 1", "batch_size"):
        assert part in text
    with pytest.raises(ConfigError, match=r"trains.*allowed values: 'lora', 'full'"):
        build_method_config({"name": "ewc", "trains": "all"})
