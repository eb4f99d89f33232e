"""IncLoRA: a fresh LoRA per task; earlier tasks' LoRAs stay frozen and active (no task id at inference)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from peft import LoraConfig, PeftModel
from torch import nn

from clift.adapters import LoraFields, adapter_name, adapter_parameters, add_lora, lora_config, save_adapter
from clift.fused_lora import FrozenAdapterFields, FusedFrozenLoRA
from clift.methods.base import ContinualMethod, MethodConfig, Stage


@dataclass
class IncLoRAConfig(FrozenAdapterFields, LoraFields, MethodConfig):
    """Incremental LoRA (fields: see :class:`clift.adapters.LoraFields` and
    :class:`clift.fused_lora.FrozenAdapterFields`)."""

    #: runs stored before ``frozen_adapters`` existed ran PEFT's per-adapter loop
    STORED_DEFAULTS: ClassVar[dict[str, Any]] = {"frozen_adapters": "separate"}

    def problems(self) -> list[str]:
        return self.lora_problems()


class IncLoRA(ContinualMethod):
    """Task i adds PEFT adapter ``task<i>``; adapters ``task0 … task<i-1>`` stay active but frozen.

    The model after task i computes ``W0 x + Σ_{k≤i} s · B_k A_k x``: the same model for every task, so
    inference needs no task id. Earlier adapters are never updated, so they stay bit-identical. This is
    the base of O-LoRA and GORP, which subclass it.
    """

    config_cls = IncLoRAConfig
    summary = "a fresh LoRA per task; earlier LoRAs frozen and all active (no task id)"

    def __init__(self, config: IncLoRAConfig) -> None:
        super().__init__(config)
        self.adapters: list[str] = []
        self.fused = FusedFrozenLoRA()

    def new_adapter_config(self, model: nn.Module) -> LoraConfig:
        """The PEFT config of each new task adapter (subclasses add options, e.g. excluded modules)."""
        return lora_config(self.config, model)

    def before_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        name = adapter_name(stage.task_index)
        model = add_lora(model, self.new_adapter_config(model), name)
        self.adapters.append(name)
        self.activate_all(model)
        return model

    def activate_all(self, model: PeftModel) -> None:
        """Make every task adapter active; only the newest one stays trainable."""
        # LoraModel.set_adapter accepts a list (PeftModel.set_adapter takes one name) and marks every
        # listed adapter trainable, so the older ones are frozen again right after.
        model.base_model.set_adapter(list(self.adapters))
        for old in self.adapters[:-1]:
            for p in adapter_parameters(model, old).values():
                p.requires_grad_(False)
        if getattr(self.config, "frozen_adapters", "separate") == "fused":
            # one frozen LoRA per layer reading the new adapter's dropout output (gorp.md §1.1)
            self.fused.install(model, self.adapters[:-1], self.current)

    def after_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        """The task is over: give the frozen adapters back to PEFT's own loop. The model evaluated, saved and
        exported after a task is then the plain PEFT model that a replay (resume, export) rebuilds, to the
        bit (the fused sum rounds differently); the next ``before_task`` fuses them again for training."""
        self.fused.remove()
        return model

    def restore_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        """On a replay (resume, export), leave the frozen adapters in PEFT's own loop: a rebuilt final model
        is then a plain PEFT model (``merge_and_unload`` merges the adapters PEFT runs); the next
        ``before_task`` fuses them again."""
        self.fused.remove()
        return model

    @property
    def current(self) -> str:
        return self.adapters[-1]

    def save_task(self, model: nn.Module, stage: Stage, folder: Path) -> list[Path]:
        return [save_adapter(model, adapter_name(stage.task_index), folder)]
