"""The sequential base of the regularisation and replay baselines (``ewc``, ``lwf``, ``replay``).

As in the O-LoRA paper's baselines, they run on one LoRA trained through all tasks (``seq_lora``);
``trains: full`` applies them to every weight instead (``seq_ft``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torch import nn

from clift.adapters import adapter_parameters
from clift.methods.base import MethodConfig, Stage
from clift.methods.seq_lora import SeqLoRA

# --------------------------------------------------------------------------------------------------


@dataclass
class SequentialFields:
    """What the sequential baselines (``ewc``, ``lwf``, ``replay``) train.

    Attributes:
        trains: ``lora`` — one LoRA adapter trained through all tasks, base frozen (``seq_lora``; the
            setting of the O-LoRA paper's EWC / LwF / Replay rows); ``full`` — every weight of the model
            (``seq_ft``; the LoRA fields are then ignored and nothing is saved per task). Default lora.
    """

    trains: Literal["lora", "full"] = field(
        default="lora", metadata={"help": "lora (one LoRA through all tasks, as seq_lora) | full (seq_ft)"}
    )


class SequentialBaseline(SeqLoRA):
    """``seq_lora`` (or ``seq_ft`` with ``trains: full``) as a base for the regularisation baselines.

    After :meth:`attach`, :attr:`trainable` maps the qualified names of the parameters that train
    (the ``default`` adapter's LoRA matrices, or every weight) to the parameters themselves.
    """

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.trainable: dict[str, nn.Parameter] = {}

    @property
    def full(self) -> bool:
        return getattr(self.config, "trains", "lora") == "full"

    def attach(self, model: nn.Module) -> nn.Module:
        if self.full:
            for p in model.parameters():
                p.requires_grad_(True)
            self.trainable = dict(model.named_parameters())
            return model
        model = super().attach(model)
        self.trainable = adapter_parameters(model, self.adapter)
        return model

    def save_task(self, model: nn.Module, stage: Stage, folder: Path) -> list[Path]:
        # full fine-tuning saves nothing per task (a full model per task is large), like seq_ft
        return [] if self.full else super().save_task(model, stage, folder)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's autocast context (Accelerate's), for forwards made outside the training step."""
        acc = self.ctx.accelerator if self.ctx is not None else None
        return acc.autocast() if acc is not None else contextlib.nullcontext()
