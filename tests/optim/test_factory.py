"""make_adamw: the one AdamW built from a run's train settings, plain or projected."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clift.config import TrainConfig
from clift.optim import ProjectedAdamW, make_adamw


@dataclass
class Settings:
    lr: float = 3e-4
    adam_betas: tuple[float, float] = (0.8, 0.95)
    adam_eps: float = 1e-7
    weight_decay: float = 0.01


def test_plain_adamw_takes_every_setting_and_keeps_group_overrides():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = make_adamw([{"params": [a]}, {"params": [b], "lr": 1e-2}], Settings())
    assert type(opt) is torch.optim.AdamW
    first, second = opt.param_groups
    assert (first["lr"], first["betas"], first["eps"], first["weight_decay"]) == (3e-4, (0.8, 0.95), 1e-7, 0.01)
    assert second["lr"] == 1e-2 and second["betas"] == (0.8, 0.95)


def test_projected_adamw_and_shared_bases():
    w = torch.nn.Parameter(torch.randn(6, 4))
    opt = make_adamw([{"params": [w], "rank": 2, "update_proj_gap": 5}], Settings(), projected=True)
    assert isinstance(opt, ProjectedAdamW) and opt.param_groups[0]["betas"] == (0.8, 0.95)
    basis = torch.linalg.qr(torch.randn(6, 2)).Q
    opt = make_adamw([{"params": [w]}], Settings(), shared_bases={w: basis})  # bases imply the projected one
    assert isinstance(opt, ProjectedAdamW) and torch.equal(opt.shared_basis(w), basis)


def test_the_run_config_defaults_build_the_same_optimizer_as_before():
    p = torch.nn.Parameter(torch.ones(3))
    t = TrainConfig()
    opt = make_adamw([{"params": [p]}], t)
    before = torch.optim.AdamW([p], lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps, weight_decay=t.weight_decay)
    assert opt.defaults == before.defaults
