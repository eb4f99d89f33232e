"""LwF: weight 0 is seq_lora, the teacher is the previous model, the KL sits on answer positions only."""

from __future__ import annotations

import pytest
import torch

from clift.adapters import adapter_parameters
from clift.config import RunConfig
from clift.data.collate import IGNORE_INDEX
from clift.errors import ConfigError, MethodStateError
from clift.methods import build_method_config
from clift.methods.base import Stage
from clift.methods.lwf import LwF, answer_mask, distillation_loss
from clift.runner import Runner

from ..conftest import run_method as _run
from ..conftest import tiny_config, two_tasks


def test_weight_zero_equals_seq_lora_exactly(tmp_path):
    a = Runner(RunConfig.from_dict(tiny_config(tmp_path / "a", method="seq_lora")), stream=two_tasks()).run()
    cfg = tiny_config(tmp_path / "b", method={"name": "lwf", "weight": 0.0})
    b = Runner(RunConfig.from_dict(cfg), stream=two_tasks()).run()
    assert a.results["matrix"] == b.results["matrix"]
    assert a.results["training"][1]["loss_curve"] == b.results["training"][1]["loss_curve"]
    pa, pb = a.model.state_dict(), b.model.state_dict()
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def _logits(seed: int, shape=(2, 5, 7)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_distillation_is_zero_iff_teacher_agrees_and_only_answer_positions_count():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4, 1], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 2, 1]])
    s, t = _logits(0), _logits(1)
    assert distillation_loss(s, s.clone(), labels, "causal", 2.0).item() == pytest.approx(0.0, abs=1e-12)
    kd = distillation_loss(s, t, labels, "causal", 2.0)
    assert kd.item() > 0
    # causal: logits at position i predict token i+1, so positions 1..3 (row 0) and 2..3 (row 1) count
    mask = answer_mask(labels, "causal")
    assert mask.tolist() == [[False, True, True, True], [False, False, True, True]]
    t2 = t.clone()
    t2[0, 0], t2[1, :2], t2[:, -1] = 9.0, -9.0, 5.0  # only non-answer positions changed
    assert distillation_loss(s, t2, labels, "causal", 2.0).item() == pytest.approx(kd.item())
    # the value is T² · mean over answer positions of KL(p_t ‖ p_s) at temperature T
    sl, tl = s[:, :-1][mask] / 2.0, t[:, :-1][mask] / 2.0
    kl = (tl.softmax(-1) * (tl.log_softmax(-1) - sl.log_softmax(-1))).sum(-1).mean() * 4.0
    assert kd.item() == pytest.approx(kl.item())
    # seq2seq: decoder position i predicts labels[:, i]
    assert answer_mask(labels, "seq2seq").sum().item() == 5
    no_answer = torch.full_like(labels, IGNORE_INDEX)
    assert distillation_loss(s, t, no_answer, "causal", 2.0).item() == 0.0
    with pytest.raises(ValueError, match="allowed: 'causal', 'seq2seq'"):
        answer_mask(labels, "encoder")


def test_teacher_is_the_previous_model_and_never_an_adapter(tmp_path):
    cfg = tiny_config(tmp_path, method={"name": "lwf", "dropout": 0.0})
    res, m = _run(cfg, two_tasks())
    assert isinstance(m, LwF)
    model = res.model
    assert list(model.peft_config) == ["default"]  # no teacher adapter: evaluation and saving see one LoRA
    assert m.teacher is None  # freed after the task
    terms = res.results["method_stats"]["loss_terms"]
    assert terms[0]["distill"] == 0.0 and terms[1]["distill"] > 0.0
    assert terms[1]["penalty"] == pytest.approx(terms[1]["distill"])

    # a third task: the teacher snapshot is the model as it is now, and stays so while the student moves
    stage = m.stages(m.ctx.stream)[1]
    m.before_task(model, Stage(2, "next", stage.tasks, 1))
    batch = m.ctx.collate([(stage.tasks[0], ex) for ex in stage.tasks[0].train[:3]])
    model.eval()
    with torch.no_grad():
        now = model(**batch).logits
    rng = torch.get_rng_state()
    assert torch.equal(m.teacher_logits(model, batch), now)
    assert torch.equal(torch.get_rng_state(), rng)  # the teacher draws no random numbers (no dropout)
    with torch.no_grad():
        for p in adapter_parameters(model, "default").values():
            p.add_(0.05)
        moved = model(**batch).logits
    assert not torch.allclose(moved, now)
    assert torch.equal(m.teacher_logits(model, batch), now)
    model.train()
    extra = m.loss(model, batch, model(**batch))
    assert extra is not None and extra.item() > 0
    extra.backward()
    assert all(p.grad is not None for p in adapter_parameters(model, "default").values())
    model.zero_grad(set_to_none=True)
    state = m.state_dict()
    assert set(state) == {"teacher", "terms"} and state["teacher"].keys() == m.trainable.keys()
    teacher = {k: v.clone() for k, v in state["teacher"].items()}
    m.teacher = None
    m.load_state_dict(state)
    assert m.teacher is not None and all(torch.equal(m.teacher[k], v) for k, v in teacher.items())
    with pytest.raises(MethodStateError, match="'student'"):
        m.load_state_dict({**state, "student": {}})
    with pytest.raises(MethodStateError, match=r"'teacher\.x'"):
        m.load_state_dict({**state, "teacher": {"x": torch.zeros(1)}})
    # the flat format of earlier versions
    name = next(iter(teacher))
    m.load_state_dict({f"teacher.{name}": teacher[name], "terms.0.calls": torch.tensor(2)})
    assert list(m.teacher) == [name] and m.terms.summary() == [{"stage": "toysent", "calls": 2}]
    with pytest.raises(MethodStateError, match=r"'student\.x'"):
        m.load_state_dict({"student.x": torch.zeros(1)})


def test_full_fine_tuning_option(tmp_path):
    cfg = tiny_config(tmp_path, method={"name": "lwf", "trains": "full"}, train={"max_steps": 2, "lr": 1e-3})
    res, m = _run(cfg, two_tasks())
    assert res.results["method_stats"]["loss_terms"][1]["distill"] > 0
    assert len(m.trainable) == len(list(res.model.parameters()))
    assert not (res.run_dir / "adapters").exists()


def test_seq2seq_teacher_and_answer_positions(tmp_path):
    """tiny-t5: the teacher's forward needs the labels (decoder inputs); the KL uses decoder positions."""
    res, _ = _run(tiny_config(tmp_path, model="tiny-t5", method="lwf"), two_tasks())
    terms = res.results["method_stats"]["loss_terms"]
    assert res.results["kind"] == "seq2seq" and terms[0]["distill"] == 0.0 and terms[1]["distill"] > 0.0


def test_config_errors():
    with pytest.raises(ConfigError) as err:
        build_method_config({"name": "lwf", "weight": -1, "temperature": 0})
    assert "weight must be >= 0" in str(err.value) and "temperature must be > 0" in str(err.value)
