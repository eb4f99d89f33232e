"""SeqLoRA: one LoRA adapter trained through all tasks in sequence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from clift.adapters import LoraFields, add_lora, lora_config, save_adapter
from clift.methods.base import ContinualMethod, MethodConfig, Stage


@dataclass
class SeqLoRAConfig(LoraFields, MethodConfig):
    """Sequential LoRA (fields: see :class:`clift.adapters.LoraFields`)."""

    def problems(self) -> list[str]:
        return self.lora_problems()


class SeqLoRA(ContinualMethod):
    """A single PEFT LoRA adapter (``default``) keeps training on each new task; the base stays frozen.

    After each task the adapter's current state is saved, so ``adapters/<i>-<task>`` is the model
    after task i.
    """

    config_cls = SeqLoRAConfig
    summary = "one LoRA trained through all tasks"
    adapter = "default"

    def attach(self, model: nn.Module) -> nn.Module:
        return add_lora(model, lora_config(self.config, model), self.adapter)

    def save_task(self, model: nn.Module, stage: Stage, folder: Path) -> list[Path]:
        return [save_adapter(model, self.adapter, folder)]
