"""GORP on tiny models: what must not change (old LoRAs), what must persist (full-rank deltas, bases),
the shared-space projection, the released-bug flags, saving / rebuilding, configs and presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file

import clift
from clift.adapters import adapter_name, adapter_parameters, lora_layers
from clift.config import ModelConfig, RunConfig
from clift.errors import ConfigError, MethodStateError
from clift.full_rank import apply_full_rank_delta
from clift.methods import build_method, build_method_config
from clift.methods.gorp import BASES_FILE, GORP, orthogonality_gap
from clift.models import load_model

from ..conftest import fixture_stream, tiny_config

REPO = Path(__file__).resolve().parents[2]
TASKS = ["toysent", "toytopic", "toynli"]


def _run(tmp_path, model="tiny-llama", tasks=3, **method):
    # accuracy is not under test here: a small test split and no zero-shot row keep evaluation cheap
    cfg = tiny_config(
        tmp_path, model=model, method={"name": "gorp", **method}, train={"max_steps": 4}, eval={"zero_shot": False}
    )
    return clift.run(cfg, stream=fixture_stream(test=4, names=TASKS[:tasks]))


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    """A 3-task GORP run on tiny-llama, recording (a) at each after_task how the task's first moments sit
    relative to the bases built by the earlier tasks, and (b) the full-rank weights at the start and the
    end of every task."""
    overlaps: list[dict] = []
    weights: dict[str, list[dict[str, torch.Tensor]]] = {"start": [], "end": []}
    original_after, original_before = GORP.after_task, GORP.before_task

    def snapshot(method):
        return {k: p.detach().clone() for k, p in method.full.params.items()}

    def recording_before_task(self, model, stage):
        model = original_before(self, model, stage)
        weights["start"].append(snapshot(self))
        return model

    def recording_after_task(self, model, stage):
        opt = self._optimizer
        row = {}
        for key, p in self._tracked.items():
            old, moment = self.bases.get(key), opt.first_moment(p)
            if old is not None and old.shape[1] and moment is not None and moment.norm() > 0:
                side = opt.resolved_shared_side(p, opt.group_of(p))
                overlap = old.T @ moment if side == "left" else moment @ old
                row[key] = float(overlap.norm() / moment.norm())
            row.setdefault("_given", 0)
            row["_given"] += int(opt.shared_basis(p) is not None)
        overlaps.append(row)
        weights["end"].append(snapshot(self))
        return original_after(self, model, stage)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GORP, "after_task", recording_after_task)
        mp.setattr(GORP, "before_task", recording_before_task)
        res = _run(tmp_path_factory.mktemp("gorp"))
    return res, overlaps, weights


def test_earlier_loras_are_bit_identical_after_later_tasks(llama_run):
    res, _, _ = llama_run
    model = res.model
    assert sorted(model.base_model.active_adapters) == ["task0", "task1", "task2"]  # no task id at inference
    for i, name in enumerate(TASKS):
        saved = load_file(str(res.run_dir / "adapters" / f"{i}-{name}" / "adapter_model.safetensors"))
        final = {
            k.split("base_model.model.")[-1].replace(f".{adapter_name(i)}", ""): v
            for k, v in adapter_parameters(model, adapter_name(i)).items()
        }
        assert saved and all(torch.equal(t, final[k.split("base_model.model.")[-1]]) for k, t in saved.items())


def test_lora_on_attention_and_full_rank_on_the_mlp_gate(llama_run):
    res, _, _ = llama_run
    wrapped = {n for n, _ in lora_layers(res.model.get_base_model())}
    assert wrapped == {f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")}
    fresh = dict(load_model(ModelConfig(name="tiny-llama")).model.named_parameters())
    base = res.model.get_base_model()
    changed = {
        n
        for n, p in base.named_parameters()
        if ".lora_" not in n and not torch.equal(p.detach(), fresh[n.replace(".base_layer", "")])
    }
    assert changed == {f"model.layers.{i}.mlp.gate_proj.weight" for i in range(2)}


def test_bases_grow_across_tasks_and_never_exceed_the_dimension(llama_run):
    res, _, _ = llama_run
    stats = res.results["method_stats"]
    sizes, rows = stats["basis_sizes"], stats["basis_rows"]
    assert set(sizes["full_rank"]) == {f"model.layers.{i}.mlp.gate_proj" for i in range(2)}
    assert len(sizes["lora_A"]) == 4
    for kind in ("lora_A", "full_rank"):
        for module, history in sizes[kind].items():
            assert len(history) == 3, "one size per task"
            assert history == sorted(history), f"{kind} {module} shrank: {history}"
            assert history[-1] <= rows[kind][module]
    assert all(rows["lora_A"][m] == 8 for m in rows["lora_A"])  # rank axis: r rows
    assert all(rows["full_rank"][m] == 128 for m in rows["full_rank"])  # gate_proj (128, 64): output axis
    assert any(h[-1] > h[0] for h in sizes["full_rank"].values())
    summary = stats["basis_summary"]
    assert [s["task"] for s in summary] == TASKS
    assert summary[-1]["lora_A"]["max"] <= 8 and summary[-1]["full_rank"]["matrices"] == 2


def test_later_tasks_train_orthogonally_to_earlier_bases(llama_run):
    _, overlaps, _ = llama_run
    assert overlaps[0]["_given"] == 0  # task 1: no bases yet
    assert overlaps[1]["_given"] > 0 and overlaps[2]["_given"] > 0
    measured = [v for row in overlaps[1:] for k, v in row.items() if k != "_given"]
    assert measured and max(measured) <= 1e-6


def test_full_rank_delta_of_task_one_persists_and_the_final_model_rebuilds(llama_run):
    res, _, weights = llama_run
    fresh = dict(load_model(ModelConfig(name="tiny-llama")).model.named_parameters())
    for key, w in weights["end"][0].items():
        assert not torch.equal(w, fresh[key])  # task 1 moved every full-rank weight
        assert torch.equal(weights["start"][1][key], w)  # and task 2 starts from exactly there
        assert torch.equal(weights["start"][2][key], weights["end"][1][key])
    fr = res.results["method_stats"]["full_rank"]
    assert fr["delta_norm_end"][0] > 0
    # each task starts where the previous one ended: nothing is reset
    assert fr["delta_norm_start"][1:] == fr["delta_norm_end"][:-1]
    d0 = load_file(str(res.run_dir / "adapters" / "0-toysent" / "full_rank_delta.safetensors"))
    d2 = load_file(str(res.run_dir / "adapters" / "2-toynli" / "full_rank_delta.safetensors"))
    assert set(d0) == {f"model.layers.{i}.mlp.gate_proj.weight" for i in range(2)}
    assert all(not torch.equal(d0[k], d2[k]) for k in d0)
    # rebuild as docs/methods/gorp.md says: base + final delta, then every task's adapter, all active
    base = load_model(ModelConfig(name="tiny-llama")).model
    apply_full_rank_delta(base, res.run_dir / "adapters" / "2-toynli" / "full_rank_delta.safetensors")
    rebuilt = PeftModel.from_pretrained(base, str(res.run_dir / "adapters" / "0-toysent"), adapter_name="task0")
    for i, name in enumerate(TASKS[1:], start=1):
        rebuilt.load_adapter(str(res.run_dir / "adapters" / f"{i}-{name}"), adapter_name=f"task{i}")
    rebuilt.base_model.set_adapter(["task0", "task1", "task2"])
    rebuilt.eval()
    res.model.eval()
    ids = torch.randint(5, 700, (2, 12))
    with torch.no_grad():
        assert torch.allclose(rebuilt(input_ids=ids).logits, res.model(input_ids=ids).logits, atol=1e-5)


def test_saved_bases_and_state_dict_round_trip(llama_run):
    res, _, _ = llama_run
    saved = load_file(str(res.run_dir / "adapters" / "2-toynli" / BASES_FILE))
    assert saved and all(k.startswith("basis/") for k in saved)
    method = build_method(build_method_config({"name": "gorp"}))
    method.load_state_dict(saved)
    sizes = res.results["method_stats"]["basis_sizes"]
    for (kind, module), s in method.bases.items():
        assert s.shape[1] == sizes[kind][module][-1]
        assert torch.allclose(s.T @ s, torch.eye(s.shape[1]), atol=1e-4)
    again = build_method(build_method_config({"name": "gorp"}))
    state = method.state_dict()
    assert set(state) == {"bases", "basis_sizes", "delta_norm_start", "delta_norm_end", "task_start"}
    assert {(k, m) for k, per in state["bases"].items() for m in per} == set(method.bases)
    again.load_state_dict(state)
    assert again.bases.keys() == method.bases.keys()
    assert all(torch.equal(again.bases[k], v) for k, v in method.bases.items())
    with pytest.raises(MethodStateError, match=r"'bases/x'"):  # a flat state with a key of no known form
        again.load_state_dict({"bases/x": torch.zeros(1)})
    with pytest.raises(MethodStateError, match=r"'bases\.lora_B'"):
        again.load_state_dict({**state, "bases": {"lora_B": {}}})


def test_state_in_the_old_flat_format_loads():
    old = {
        "basis/lora_A/layers.0.q": torch.eye(4)[:, :2],
        "sizes/lora_A/layers.0.q": torch.tensor([1, 2], dtype=torch.int64),
        "basis/full_rank/layers.0.gate": torch.eye(6)[:, :3],
        "sizes/full_rank/layers.0.gate": torch.tensor([3, 3], dtype=torch.int64),
        "delta_norm_start": torch.tensor([0.0, 0.5], dtype=torch.float64),
        "delta_norm_end": torch.tensor([0.5, float("nan")], dtype=torch.float64),
    }
    method = build_method(build_method_config({"name": "gorp"}))
    method.load_state_dict(old)
    assert method.basis_history == {("lora_A", "layers.0.q"): [1, 2], ("full_rank", "layers.0.gate"): [3, 3]}
    assert method.basis_rows == {("lora_A", "layers.0.q"): 4, ("full_rank", "layers.0.gate"): 6}
    assert method.delta_norm_start == [0.0, 0.5] and method.delta_norm_end == [0.5, None]
    state = method.state_dict()  # written back in the nested format, same content
    assert state["basis_sizes"] == {"lora_A": {"layers.0.q": [1, 2]}, "full_rank": {"layers.0.gate": [3, 3]}}
    assert torch.equal(state["bases"]["full_rank"]["layers.0.gate"], old["basis/full_rank/layers.0.gate"])


def test_released_bug_flags_reset_full_rank_and_skip_projection(tmp_path):
    given: list[int] = []
    original = GORP.make_optimizer

    def spy(self, groups):
        opt = original(self, groups)
        given.append(sum(opt.shared_basis(p) is not None for p in self._tracked.values()))
        return opt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GORP, "make_optimizer", spy)
        res = _run(tmp_path, tasks=2, reload_bases=False, reset_full_rank_each_task=True)
    stats = res.results["method_stats"]
    assert given == [0, 0]  # bases computed but never used
    fr = stats["full_rank"]
    assert fr["delta_norm_end"][0] > 0 and fr["delta_norm_start"][1] == 0.0  # task 2 restarts from W_init
    assert stats["flags"] == {
        "reload_bases": False,
        "reset_full_rank_each_task": True,
        "first_task_rule": "strict",
        "full_rank_reg": 0.0,
    }
    # each task's basis holds only that task's directions (never accumulated), so sizes need not grow
    assert all(len(h) == 2 for h in stats["basis_sizes"]["full_rank"].values())


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("reg", [0.0, 0.5], ids=["plain", "full_rank_reg"])
def test_resume_mid_task_two_equals_the_uninterrupted_run(tmp_path, reg):
    """Checkpoint every 2 steps, crash after step 3 of task 2 (resume at step 2, between projection
    refreshes at 0 and 4): the resumed run must end bit-identical, bases and statistics included (with
    the λ regulariser, ΔW must still be measured from the start of task 2, not from the resume)."""
    method = {"name": "gorp", "update_proj_gap": 4, "full_rank_reg": reg}
    sections = {"train": {"max_steps": 4, "checkpoint_every": 2}, "eval": {"zero_shot": False}}
    stream = fixture_stream(test=4, names=TASKS[:2])
    reference = clift.run(tiny_config(tmp_path / "ref", method=method, **sections), stream=stream)
    cfg = tiny_config(tmp_path / "crash", method=method, **sections)
    steps = []

    def crash_after_step(self, model):
        steps.append(len(self.task_names))
        if len(self.task_names) == 2 and steps.count(2) == 3:
            raise _Crash("injected")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GORP, "after_step", crash_after_step, raising=False)
        with pytest.raises(_Crash):
            clift.run(cfg, stream=stream)
    resumed = clift.run(cfg, stream=stream)
    assert resumed.results["resumes"] == [{"stage": 1, "step": 2}]
    assert resumed.results["method_stats"] == reference.results["method_stats"]
    assert resumed.results["matrix"] == reference.results["matrix"]
    named = dict(resumed.model.named_parameters())
    for name, p in reference.model.named_parameters():
        assert torch.equal(p, named[name]), name


def test_t5_full_rank_cross_attention_and_lora_on_self_attention_only(tmp_path):
    res = _run(tmp_path, model="tiny-t5", tasks=2)
    wrapped = {n for n, _ in lora_layers(res.model.get_base_model())}
    assert wrapped and all(".SelfAttention." in n for n in wrapped)
    assert len(wrapped) == 8  # q, v of 2 encoder + 2 decoder self-attention blocks
    stats = res.results["method_stats"]
    assert set(stats["basis_sizes"]["full_rank"]) == {
        f"decoder.block.{i}.layer.1.EncDecAttention.{m}" for i in range(2) for m in ("q", "v")
    }
    delta = load_file(str(res.run_dir / "adapters" / "1-toytopic" / "full_rank_delta.safetensors"))
    assert any(d.abs().sum() > 0 for d in delta.values())


def test_input_side_lora_projection_and_no_full_rank(tmp_path):
    res = _run(tmp_path, tasks=2, lora_projection="input", full_rank_modules=[], save_full_rank_delta="none")
    stats = res.results["method_stats"]
    assert all(r == 64 for r in stats["basis_rows"]["lora_A"].values())  # d_in of q_proj / v_proj
    assert stats["basis_sizes"]["full_rank"] == {} and stats["full_rank"]["matrices"] == 0
    assert not (res.run_dir / "adapters" / "1-toytopic" / "full_rank_delta.safetensors").exists()


def test_config_errors_name_value_and_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"\['mlp.gate_prj'\] match no Linear layer.*mlp.gate_proj"):
        _run(tmp_path / "a", tasks=1, full_rank_modules=["mlp.gate_prj"])
    with pytest.raises(ConfigError, match="every LoRA target module"):
        _run(tmp_path / "b", tasks=1, full_rank_modules=["self_attn.q_proj", "self_attn.v_proj"])
    with pytest.raises(ConfigError) as err:
        build_method_config({"name": "gorp", "energy_threshold": 1.5, "galore_rank": 0, "update_proj_gap": 0})
    assert len(err.value.problems) == 3  # all reported together
    msg = str(err.value)
    assert "energy_threshold must be in (0, 1], got 1.5" in msg and "galore_rank must be an integer >= 1" in msg
    with pytest.raises(ConfigError, match=r"method\.proj_type: got 'diag'; allowed values: 'std', 'left', 'right'"):
        build_method_config({"name": "gorp", "proj_type": "diag"})
    with pytest.raises(ConfigError, match=r"full_rank_reg must be >= 0, got -0.1; the paper uses 0.05"):
        build_method_config({"name": "gorp", "full_rank_reg": -0.1})
    with pytest.raises(ConfigError, match=r"full_rank_reg = 0.05 needs full-rank weights.*set full_rank_reg: 0"):
        build_method_config({"name": "gorp", "full_rank_reg": 0.05, "full_rank_modules": []})


@pytest.mark.parametrize("shape", [(12, 5), (5, 12), (6, 6)])
def test_orthogonality_gap_matches_the_direct_formula_in_value_and_gradient(shape):
    torch.manual_seed(0)
    delta = (0.3 * torch.randn(*shape, dtype=torch.float64)).requires_grad_()
    direct = (delta @ delta.T - torch.eye(shape[0], dtype=torch.float64)).norm()
    (g_direct,) = torch.autograd.grad(direct, delta)
    gap = orthogonality_gap(delta)
    (g_gap,) = torch.autograd.grad(gap, delta)
    assert gap.item() == pytest.approx(direct.item(), rel=1e-12)
    torch.testing.assert_close(g_gap, g_direct, rtol=1e-10, atol=1e-12)
    # at ΔW = 0 the gap is √m and its gradient is zero, so the first step of a task is unaffected
    zero = torch.zeros(*shape, requires_grad=True)
    value = orthogonality_gap(zero)
    assert value.item() == pytest.approx(shape[0] ** 0.5)
    assert torch.equal(torch.autograd.grad(value, zero)[0], torch.zeros(shape))


def test_full_rank_reg_measures_delta_from_each_task_start(tmp_path, monkeypatch):
    lam = 0.25
    seen: list[tuple[int, float]] = []
    real_loss = GORP.loss

    def recording_loss(self, model, batch, outputs):
        value = real_loss(self, model, batch, outputs)
        if value is not None:
            seen.append((len(self.task_names), value.item()))
        return value

    monkeypatch.setattr(GORP, "loss", recording_loss)
    # a large full-rank lr, so W moves visibly within a task
    reg = _run(tmp_path / "reg", tasks=2, full_rank_reg=lam, full_rank_lr=0.05).results
    gates = [p for n, p in load_model(ModelConfig(name="tiny-llama")).model.named_parameters() if "gate_proj" in n]
    at_zero = lam * sum(p.shape[0] ** 0.5 for p in gates)  # λ Σ ‖0·0ᵀ − I‖_F = λ Σ √m
    for task in (1, 2):
        values = [v for t, v in seen if t == task]
        assert len(values) == 4  # one per step (batch 4, no accumulation)
        # ΔW is measured from the task's start: 0 at its first step (also in task 2, after task 1 moved W) …
        assert values[0] == pytest.approx(at_zero, rel=1e-6)
        # … and W moves away from it within the task
        assert abs(values[-1] - at_zero) > 1e-4
    assert reg["training"][0]["mean_extra_loss"] == pytest.approx(sum(v for t, v in seen if t == 1) / 4)
    seen.clear()
    plain = _run(tmp_path / "plain", tasks=1).results
    assert not seen and plain["training"][0]["mean_extra_loss"] in (0.0, None)  # λ = 0: no term at all
    assert reg["config"]["method"]["full_rank_reg"] == lam


def test_inclusive_first_task_rule_starts_every_basis_with_one_more_direction(tmp_path):
    # task 1 trains the same either way (no bases yet), so the first moments are identical and the
    # inclusive rule keeps exactly the direction that crosses ε on top of the strict count
    stats = {
        rule: _run(tmp_path / rule, tasks=1, first_task_rule=rule).results["method_stats"]
        for rule in ("strict", "inclusive")
    }
    assert stats["inclusive"]["flags"]["first_task_rule"] == "inclusive"
    for kind in ("lora_A", "full_rank"):
        strict, inclusive = stats["strict"]["basis_sizes"][kind], stats["inclusive"]["basis_sizes"][kind]
        assert strict and set(strict) == set(inclusive)
        rows = stats["inclusive"]["basis_rows"][kind]
        for module, (size,) in inclusive.items():
            assert size == min(strict[module][0] + 1, rows[module]) and size >= 1, (kind, module)


def test_presets():
    assert build_method_config({"name": "gorp"}).galore_rank == 8
    long = build_method_config({"name": "gorp", "preset": "t5-long"})
    assert (long.galore_rank, long.update_proj_gap, long.galore_scale) == (32, 20, 0.25)
    llama = build_method_config({"name": "gorp", "preset": "llama", "full_rank_lr": 2e-6})
    assert (llama.galore_rank, llama.update_proj_gap, llama.galore_scale) == (8, 20, 0.25)
    assert llama.full_rank_lr == 2e-6  # the user's keys win over the preset


@pytest.mark.parametrize(
    "path", sorted(REPO.glob("configs/papers/gorp-*.yaml")) + sorted(REPO.glob("configs/ablations/gorp-*.yaml"))
)
def test_shipped_gorp_configs_validate(path):
    cfg = RunConfig.from_dict(yaml.safe_load(path.read_text()))
    assert cfg.method.method_name() == "gorp"


def test_the_shipped_gorp_configs_exist():
    papers = {p.name for p in REPO.glob("configs/papers/gorp-*.yaml")}
    assert papers == {"gorp-t5-standard.yaml", "gorp-t5-long.yaml", "gorp-llama-standard.yaml"}
    assert (REPO / "configs" / "ablations" / "gorp-released-bugs.yaml").is_file()
