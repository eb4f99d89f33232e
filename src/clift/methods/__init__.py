"""Continual methods: the interface, the registry, and every built-in method (registered explicitly)."""

from clift.methods.base import (
    METHODS,
    ContinualMethod,
    MethodConfig,
    MethodContext,
    Stage,
    build_method,
    build_method_config,
    register_method,
)
from clift.methods.inc_lora import IncLoRA, IncLoRAConfig
from clift.methods.mtl import MTL, MTLConfig
from clift.methods.per_task import PerTask, PerTaskConfig
from clift.methods.seq_ft import SeqFT, SeqFTConfig
from clift.methods.seq_lora import SeqLoRA, SeqLoRAConfig

register_method("seq_ft", SeqFTConfig, SeqFT)
register_method("seq_lora", SeqLoRAConfig, SeqLoRA)
register_method("per_task", PerTaskConfig, PerTask)
register_method("mtl", MTLConfig, MTL)
register_method("inc_lora", IncLoRAConfig, IncLoRA)

__all__ = [
    "METHODS",
    "MTL",
    "ContinualMethod",
    "IncLoRA",
    "IncLoRAConfig",
    "MTLConfig",
    "MethodConfig",
    "MethodContext",
    "PerTask",
    "PerTaskConfig",
    "SeqFT",
    "SeqFTConfig",
    "SeqLoRA",
    "SeqLoRAConfig",
    "Stage",
    "build_method",
    "build_method_config",
    "register_method",
]
