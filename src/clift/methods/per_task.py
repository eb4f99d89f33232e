"""PerTaskFT: a fresh LoRA per task, each task evaluated with its own adapter (the task-ID oracle)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from peft import PeftModel
from torch import nn

from clift.adapters import LoraFields, adapter_name, add_lora, lora_config, save_adapter
from clift.methods.base import ContinualMethod, MethodConfig, Stage


@dataclass
class PerTaskConfig(LoraFields, MethodConfig):
    """One independent LoRA per task (fields: see :class:`clift.adapters.LoraFields`)."""

    def problems(self) -> list[str]:
        return self.lora_problems()


class PerTask(ContinualMethod):
    """Task i trains adapter ``task<i>`` from scratch; every other adapter is inactive and frozen.

    Evaluation of task j uses adapter ``task<j>`` — this needs the task id at inference, which is why it
    is an oracle, not a continual method. A task not trained yet is evaluated on the base model (its
    adapter does not exist), so its forward transfer is exactly zero.
    """

    config_cls = PerTaskConfig
    summary = "a fresh LoRA per task, evaluated with its own adapter (task-ID oracle)"
    needs_task_id = True

    def __init__(self, config: PerTaskConfig) -> None:
        super().__init__(config)
        self.trained: set[int] = set()

    def before_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        # PEFT's add_adapter/set_adapter activate only the new adapter and make only it trainable.
        return add_lora(model, lora_config(self.config, model), adapter_name(stage.task_index))

    def after_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        self.trained.add(stage.task_index)
        return model

    @contextlib.contextmanager
    def eval_scope(self, model: nn.Module, task_index: int) -> Iterator[nn.Module]:
        assert isinstance(model, PeftModel)
        if task_index in self.trained:
            previous = model.active_adapter
            model.set_adapter(adapter_name(task_index))
            try:
                yield model
            finally:
                model.set_adapter(previous)
        else:
            with model.disable_adapter():
                yield model

    def save_task(self, model: nn.Module, stage: Stage, folder: Path) -> list[Path]:
        return [save_adapter(model, adapter_name(stage.task_index), folder)]
