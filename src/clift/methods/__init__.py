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
from clift.methods.deal import DEAL, DEALConfig
from clift.methods.deal_code import DEALCode, DEALCodeConfig
from clift.methods.ewc import EWC, EWCConfig
from clift.methods.galore import GaLore, GaLoreConfig
from clift.methods.gorp import GORP, GORPConfig
from clift.methods.inc_lora import IncLoRA, IncLoRAConfig
from clift.methods.lwf import LwF, LwFConfig
from clift.methods.mtl import MTL, MTLConfig
from clift.methods.olora import OLoRA, OLoRAConfig
from clift.methods.per_task import PerTask, PerTaskConfig
from clift.methods.replay import Replay, ReplayConfig
from clift.methods.seq_ft import SeqFT, SeqFTConfig
from clift.methods.seq_lora import SeqLoRA, SeqLoRAConfig

register_method("seq_ft", SeqFTConfig, SeqFT)
register_method("seq_lora", SeqLoRAConfig, SeqLoRA)
register_method("per_task", PerTaskConfig, PerTask)
register_method("mtl", MTLConfig, MTL)
register_method("inc_lora", IncLoRAConfig, IncLoRA)
register_method("olora", OLoRAConfig, OLoRA)
register_method("ewc", EWCConfig, EWC)
register_method("lwf", LwFConfig, LwF)
register_method("replay", ReplayConfig, Replay)
register_method("gorp", GORPConfig, GORP)
register_method("galore", GaLoreConfig, GaLore)
register_method("deal", DEALConfig, DEAL)
register_method("deal_code", DEALCodeConfig, DEALCode)

__all__ = [
    "DEAL",
    "EWC",
    "GORP",
    "METHODS",
    "MTL",
    "ContinualMethod",
    "DEALCode",
    "DEALCodeConfig",
    "DEALConfig",
    "EWCConfig",
    "GORPConfig",
    "GaLore",
    "GaLoreConfig",
    "IncLoRA",
    "IncLoRAConfig",
    "LwF",
    "LwFConfig",
    "MTLConfig",
    "MethodConfig",
    "MethodContext",
    "OLoRA",
    "OLoRAConfig",
    "PerTask",
    "PerTaskConfig",
    "Replay",
    "ReplayConfig",
    "SeqFT",
    "SeqFTConfig",
    "SeqLoRA",
    "SeqLoRAConfig",
    "Stage",
    "build_method",
    "build_method_config",
    "register_method",
]
