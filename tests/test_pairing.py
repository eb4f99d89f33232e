"""Paired runs: structure hooks never shift the training stream, so methods see the same dropout masks."""

from __future__ import annotations

import torch

import clift
from clift.methods.seq_lora import SeqLoRA
from tests.conftest import fixture_stream, tiny_config


def _curves(tmp_path, name: str, method: str = "seq_lora") -> tuple[list[list[float]], list[list[float]]]:
    cfg = tiny_config(
        tmp_path / name,
        method={"name": method, "dropout": 0.3},
        train={"max_steps": 4, "batch_size": 4, "lr": 5e-3},
        log={"progress": False, "log_every": 1},
    )
    res = clift.run(cfg, stream=fixture_stream(train=16, test=4, names=["toysent", "toytopic"]))
    return [t.loss_curve for t in res.record.training], res.record.matrix


def _noisy(hook):
    def wrapped(self, *args, **kwargs):
        out = hook(self, *args, **kwargs)
        torch.rand(4096)  # as a hook that also initialises a module of its own from the global generator
        return out

    return wrapped


def test_structure_hooks_do_not_shift_the_training_stream(tmp_path, monkeypatch) -> None:
    reference = _curves(tmp_path, "plain")
    for hook in ("attach", "before_task", "after_task"):
        monkeypatch.setattr(SeqLoRA, hook, _noisy(getattr(SeqLoRA, hook)))
    noisy = _curves(tmp_path, "noisy")
    assert noisy == reference  # bit-identical losses after every step, and the same matrix
    assert all(len(c) == 4 for c in reference[0])


def test_methods_that_build_the_same_adapter_at_a_stage_train_identically(tmp_path) -> None:
    # inc_lora and per_task both add a fresh LoRA in before_task; on the same structure stream the two
    # adapters are identical, and so are the first task's losses step by step
    inc, _ = _curves(tmp_path, "inc", "inc_lora")
    per, _ = _curves(tmp_path, "per", "per_task")
    assert inc[0] == per[0]
