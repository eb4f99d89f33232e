"""MTL: one LoRA trained jointly on every task's data at once (the multi-task upper bound)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from clift.adapters import LoraFields, add_lora, lora_config, save_adapter
from clift.data.task import Stream
from clift.methods.base import ContinualMethod, MethodConfig, Stage


@dataclass
class MTLConfig(LoraFields, MethodConfig):
    """Joint multi-task LoRA training (fields: see :class:`clift.adapters.LoraFields`)."""

    def problems(self) -> list[str]:
        return self.lora_problems()


class MTL(ContinualMethod):
    """A single stage whose training set is the union of all tasks (shuffled together).

    The accuracy matrix therefore has one row: AA is defined, while BWT, FWT and forgetting — which
    need a sequence — are reported as null. ``train.epochs``/``max_steps`` apply to the joint stage.
    """

    config_cls = MTLConfig
    summary = "joint training on all tasks at once (upper bound; one matrix row)"
    adapter = "default"

    def attach(self, model: nn.Module) -> nn.Module:
        return add_lora(model, lora_config(self.config, model), self.adapter)

    def stages(self, stream: Stream) -> list[Stage]:
        return [Stage(0, "joint", list(stream.tasks), -1)]

    def save_task(self, model: nn.Module, stage: Stage, folder: Path) -> list[Path]:
        return [save_adapter(model, self.adapter, folder)]
