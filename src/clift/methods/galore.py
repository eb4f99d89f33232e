"""GaLore as a continual method: chosen full-rank weights train through a low-rank gradient projector.

GaLore (Zhao et al., ICML 2024, arXiv 2403.03507) keeps Adam's moments in the rank-k subspace of each
weight's gradient, refreshed every T steps: ``W ← W − η · α · P · Adam(Pᵀ G)`` (see
:mod:`clift.optim.adamw`). Here it trains the chosen weights task after task, optionally together with
one LoRA adapter, with no protection of earlier tasks (a baseline for GORP, which adds the shared
space and incremental LoRA).

The machinery GaLore shares with GORP (:class:`~clift.full_rank.GaLoreFields`,
:class:`~clift.full_rank.FullRankWeights`, module matching) lives in :mod:`clift.full_rank`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clift.adapters import LoraFields, add_lora, freeze_all, lora_config, resolve_target_modules, save_adapter
from clift.full_rank import (  # apply_full_rank_delta: re-exported, the import path docs/methods/gorp.md shows
    FullRankWeights,
    GaLoreFields,
    SaveDelta,
    apply_full_rank_delta,
    linear_modules,
    match_modules,
    should_save_delta,
)
from clift.methods import legacy_state
from clift.methods.base import ContinualMethod, MethodConfig, Stage, check_state
from clift.optim import make_adamw

log = logging.getLogger("clift")

__all__ = ["GaLore", "GaLoreConfig", "apply_full_rank_delta"]

# --------------------------------------------------------------------------------------------------
# The galore method
# --------------------------------------------------------------------------------------------------


@dataclass
class GaLoreConfig(GaLoreFields, LoraFields, MethodConfig):
    """GaLore fine-tuning of chosen weights, task after task (optionally with one LoRA).

    Attributes:
        modules: full-rank weights to train, as module patterns (a qualified name or dotted suffix, *
            wildcards). null = every Linear layer except the output head (GaLore's fine-tuning setting),
            minus the LoRA target modules when ``with_lora``. Explicit patterns may overlap the LoRA
            targets: the wrapped base weight then trains too.
        full_rank_lr: learning rate of the GaLore weights. Default 1e-5 (``train.lr`` is the LoRA's).
        with_lora: also train one LoRA adapter (fields r, alpha, dropout, target_modules of
            :class:`clift.adapters.LoraFields`) through all tasks. Default false.
        save_full_rank_delta: write ``W − W_init`` of the GaLore weights next to each task's output:
            ``every_task``, ``last_task`` (default; with the default modules the delta is nearly the
            size of the model) or ``none``.
        (GaLore projector fields: see :class:`GaLoreFields`.)
    """

    modules: list[str] | None = field(
        default=None, metadata={"help": "module patterns trained with GaLore (null: all Linear but the head)"}
    )
    full_rank_lr: float = field(default=1e-5, metadata={"help": "learning rate of the GaLore weights"})
    with_lora: bool = field(default=False, metadata={"help": "also train one LoRA through all tasks"})
    save_full_rank_delta: SaveDelta = field(
        default="last_task", metadata={"help": "write W - W_init: every_task | last_task | none"}
    )

    def problems(self) -> list[str]:
        p = self.galore_problems()
        if self.with_lora:
            p += self.lora_problems()
        if not self.full_rank_lr > 0:
            p.append(f"full_rank_lr must be > 0, got {self.full_rank_lr}.")
        if self.modules is not None and not self.modules:
            p.append("modules is an empty list; give module patterns (e.g. [mlp.gate_proj]) or null.")
        return p


class GaLore(ContinualMethod):
    """GaLore on chosen weights (optionally plus one LoRA), trained sequentially with no CL protection.

    Update per weight: ``W ← W − η · α · project_back(Adam(project(G)))``, the projection refreshed from
    the SVD of G every T steps; Adam's state is fresh for every task (as every method here).
    """

    config_cls = GaLoreConfig
    summary = "GaLore (low-rank gradient projection) on chosen weights, optionally with a LoRA"
    adapter = "default"

    def __init__(self, config: GaLoreConfig) -> None:
        super().__init__(config)
        self.weights: FullRankWeights | None = None
        self.delta_norms: list[float | None] = []

    def attach(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        freeze_all(model)
        if cfg.modules is not None:
            modules = match_modules(model, list(cfg.modules), "method.modules")
        else:
            head = model.get_output_embeddings()
            modules = {n: m for n, m in linear_modules(model).items() if m is not head}
            if cfg.with_lora:
                targets = resolve_target_modules(model, cfg.target_modules)
                modules = {n: m for n, m in modules.items() if n.rsplit(".", 1)[-1] not in targets}
        if cfg.with_lora:
            model = add_lora(model, lora_config(cfg, model), self.adapter)
        self.weights = FullRankWeights(modules, keep_init=cfg.save_full_rank_delta != "none")
        self.weights.set_trainable()
        log.info("galore: %d weight matrices (%d parameters) in full rank", len(modules), self.weights.numel)
        return model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        assert self.weights is not None, "attach() must run before param_groups()"
        full_ids = {id(p) for p in self.weights.params.values()}
        plain = [p for p in model.parameters() if p.requires_grad and id(p) not in full_ids]
        groups: list[dict[str, Any]] = []
        if plain:
            groups.append({"params": plain, "name": "plain"})
        groups.append(
            {
                "params": list(self.weights.params.values()),
                "name": "full_rank",
                **self.config.galore_group(self.config.full_rank_lr),
            }
        )
        return groups

    def make_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        assert self.ctx is not None, "setup() must run before make_optimizer()"
        return make_adamw(groups, self.ctx.train, projected=True)

    def after_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        assert self.weights is not None
        self.delta_norms.append(self.weights.delta_norm())
        return model

    def save_task(self, model: nn.Module, stage: Stage, folder: Path) -> list[Path]:
        assert self.weights is not None
        paths: list[Path] = []
        if self.config.with_lora:
            paths.append(save_adapter(model, self.adapter, folder))
        if should_save_delta(self.config.save_full_rank_delta, stage.index, len(self.ctx.stream.tasks)):
            paths.append(self.weights.save_delta(folder, {"method": "galore", "after_stage": str(stage.index)}))
        return paths

    def state_dict(self) -> dict[str, Any]:
        """``{"delta_norms": [float | None, ...]}``, one per finished task, so a resumed run reports the same
        (the weights are model tensors, the projectors live in the optimizer's state)."""
        return {"delta_norms": list(self.delta_norms)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (an empty state, from a checkpoint written before it existed, and the
        flat format of earlier versions load too).

        Raises:
            MethodStateError: for a key :meth:`state_dict` does not write.
        """
        if legacy_state.is_flat(state):
            state = legacy_state.galore(state)
        check_state("galore", state, {}, {"delta_norms": list})
        if "delta_norms" in state:
            self.delta_norms = [None if v is None else float(v) for v in state["delta_norms"]]

    def stats(self) -> dict[str, Any]:
        w = self.weights
        return {
            "full_rank_matrices": len(w) if w else 0,
            "full_rank_parameters": w.numel if w else 0,
            "full_rank_delta_norm": self.delta_norms,
        }
