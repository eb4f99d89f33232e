"""Distributed engines through Accelerate: which engine a run uses, and which methods it can run correctly.

clift never launches or shards anything itself: ``accelerate launch`` (or ``torchrun``) starts the
processes and Accelerate drives DDP, FSDP or DeepSpeed ZeRO from its config file. This module reads that
file (``clift run CONFIG --accelerate-config FILE`` re-executes clift under ``accelerate launch``),
names the engine a run is actually using (:func:`engine_of`, recorded in results.json), refuses an
engine Accelerate silently replaced (FSDP or DeepSpeed asked for on CPU), and refuses method × engine
combinations that would train something other than the method (:func:`engine_problem`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clift.errors import ConfigError
from clift.io import read_yaml

ENGINES = ("single", "ddp", "fsdp", "zero1", "zero2", "zero3")
_DDP_TYPES = {"MULTI_CPU", "MULTI_GPU", "MULTI_NPU", "MULTI_XPU", "MULTI_MLU", "MULTI_HPU", "MULTI_MUSA"}
_CONFIG_TYPES = ("NO", *sorted(_DDP_TYPES), "FSDP", "DEEPSPEED")

#: methods whose optimizer projects each weight's whole 2-D gradient (GaLore-style)
PROJECTED = {
    "gorp": "GORP's GaLore-style projection (of lora_A and of the full-rank W)",
    "galore": "GaLore's gradient projection",
}
#: methods whose hooks read whole weights outside the model's forward pass (regularisers, teachers, penalties)
READS_WEIGHTS = {
    "olora": "O-LoRA's orthogonality loss reads every task's lora_A outside the forward",
    "deal": "DEAL's regulariser reads the LoRA factors outside the forward",
    "deal_code": "DEAL (released code)'s regulariser reads the LoRA factors outside the forward",
    "ewc": "EWC's penalty reads every weight against its anchor outside the forward",
    "lwf": "LwF's teacher is a copy of the model run outside the prepared (sharded) one",
}
DDP_HINT = "use DDP (Accelerate distributed_type: MULTI_GPU, or MULTI_CPU on CPU), which keeps whole weights"


@dataclass(frozen=True)
class Engine:
    """The engine a run uses.

    Attributes:
        name: ``single``, ``ddp``, ``fsdp``, ``zero1``, ``zero2`` or ``zero3``.
        world_size: number of processes.
        shards_parameters: weights are split across processes outside the forward (FSDP with a
            sharding strategy, ZeRO-3).
        flattens_optimizer: the optimizer sees flat 1-D partitions, not each weight (ZeRO-1/2/3, FSDP1).
        detail: the engine's own words (``FSDP2 reshard_after_forward=True``, ``MULTI_CPU``, ...).
    """

    name: str
    world_size: int = 1
    shards_parameters: bool = False
    flattens_optimizer: bool = False
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fsdp_engine(world_size: int, version: int, strategy: str, detail: str) -> Engine:
    shards = strategy.upper() not in ("NO_SHARD", "3")  # accelerate accepts names or 1-based numbers (3: NO_SHARD)
    return Engine("fsdp" if shards else "ddp", world_size, shards, shards and version == 1, detail)


def _zero_engine(world_size: int, stage: int) -> Engine:
    if stage == 0:
        return Engine("ddp", world_size, detail="DeepSpeed ZeRO-0")
    return Engine(f"zero{stage}", world_size, stage == 3, True, f"DeepSpeed ZeRO-{stage}")


def engine_of(accelerator: Any) -> Engine:
    """The engine ``accelerator`` is running (what actually happens, whatever was asked for)."""
    kind = str(accelerator.distributed_type).split(".")[-1]
    n = accelerator.num_processes
    if kind == "FSDP":
        plugin = accelerator.state.fsdp_plugin
        version = int(getattr(plugin, "fsdp_version", 1) or 1)
        strategy = str(getattr(plugin, "sharding_strategy", "FULL_SHARD")).split(".")[-1]
        if version == 2:
            strategy = "FULL_SHARD"  # FSDP2 always shards; reshard_after_forward only chooses when
        return _fsdp_engine(n, version, strategy, f"FSDP{version} {strategy}")
    if kind == "DEEPSPEED":
        return _zero_engine(n, int(accelerator.state.deepspeed_plugin.zero_stage))
    if kind in _DDP_TYPES:
        return Engine("ddp", n, detail=kind)
    return Engine("single", n, detail=kind)


def requested_engine(env: Mapping[str, str] | None = None) -> Engine | None:
    """The engine ``accelerate launch`` asked for through its environment (None: no FSDP/DeepSpeed asked)."""
    env = os.environ if env is None else env
    n = int(env.get("WORLD_SIZE", "1"))
    if env.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        version = int(env.get("FSDP_VERSION", "1"))
        strategy = "FULL_SHARD" if version == 2 else env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD")
        return _fsdp_engine(n, version, strategy, f"FSDP{version} {strategy}")
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return _zero_engine(n, int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")))
    return None


def engine_problem(method_name: str, engine: Engine) -> str | None:
    """Why ``method_name`` cannot run correctly under ``engine`` (None when it can)."""
    if method_name in PROJECTED and (engine.shards_parameters or engine.flattens_optimizer):
        how = "shards each weight across processes" if engine.shards_parameters else "hands the optimizer"
        if not engine.shards_parameters:
            how += " flat 1-D partitions of the parameters instead of the weight matrices"
        return (
            f"method {method_name!r} cannot run under {engine.detail or engine.name}: {PROJECTED[method_name]} "
            f"needs each weight's whole 2-D gradient, and {engine.detail or engine.name} {how}, so the "
            f"projection would silently be skipped or wrong. {DDP_HINT}."
        )
    if method_name in READS_WEIGHTS and engine.shards_parameters:
        return (
            f"method {method_name!r} cannot run under {engine.detail or engine.name}: {READS_WEIGHTS[method_name]}, "
            f"where {engine.detail or engine.name} holds only this process's shard. {DDP_HINT}, or ZeRO-2 "
            "(DeepSpeed zero_stage: 2), which shards only optimizer state and gradients."
        )
    return None


def check_engine(method_name: str, accelerator: Any) -> Engine:
    """The run's engine, after refusing a replaced engine or an impossible method × engine combination.

    Raises:
        ConfigError: when Accelerate runs another engine than its config asked for (FSDP or DeepSpeed
            on a machine without GPUs), or when the method cannot be trained correctly under the engine.
    """
    engine = engine_of(accelerator)
    asked = requested_engine()
    if asked is not None and asked.name != engine.name:
        raise ConfigError(
            f"the Accelerate config asks for {asked.detail}, but Accelerate is running {engine.detail or engine.name} "
            "(it drives FSDP and DeepSpeed only on GPU devices; without one it falls back silently). Use "
            "distributed_type: MULTI_CPU (DDP over gloo) on CPU, or run on GPUs."
        )
    problem = engine_problem(method_name, engine)
    if problem is not None:
        raise ConfigError(problem)
    return engine


# --------------------------------------------------------------------------------------------------
# Accelerate config files and the launch
# --------------------------------------------------------------------------------------------------


def read_accelerate_config(path: str | Path) -> dict[str, Any]:
    """Read an Accelerate config file (``accelerate config`` writes one) and check its engine keys.

    Raises:
        ConfigError: for a missing or unreadable file, or an unknown ``distributed_type``.
    """
    data = read_yaml(Path(path), ConfigError, "Accelerate config", "write one with `accelerate config`")
    if not isinstance(data, dict):
        raise ConfigError(f"Accelerate config {str(path)!r} must be a YAML mapping (see `accelerate config`).")
    kind = str(data.get("distributed_type", "NO")).upper()
    if kind not in _CONFIG_TYPES:
        raise ConfigError(
            f"Accelerate config {str(path)!r}: distributed_type {kind!r} is not one clift knows; allowed: "
            f"{', '.join(_CONFIG_TYPES)}."
        )
    return data


def engine_from_accelerate_config(data: Mapping[str, Any]) -> Engine:
    """The engine an Accelerate config file asks for."""
    kind = str(data.get("distributed_type", "NO")).upper()
    n = int(data.get("num_processes", 1) or 1) * int(data.get("num_machines", 1) or 1)
    if kind == "FSDP":
        fsdp = data.get("fsdp_config") or {}
        version = int(fsdp.get("fsdp_version", 1))
        strategy = "FULL_SHARD" if version == 2 else str(fsdp.get("fsdp_sharding_strategy", "FULL_SHARD"))
        return _fsdp_engine(n, version, strategy, f"FSDP{version} {strategy}")
    if kind == "DEEPSPEED":
        return _zero_engine(n, int((data.get("deepspeed_config") or {}).get("zero_stage", 2)))
    if kind in _DDP_TYPES:
        return Engine("ddp", n, detail=kind)
    return Engine("single", n, detail=kind)


def launched() -> bool:
    """Whether this process was started by a launcher (``accelerate launch``, ``torchrun``)."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_command(accelerate_config: str | Path, clift_args: list[str]) -> list[str]:
    """``accelerate launch --config_file FILE -m clift.cli ARGS`` as an argument list."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config),
        "-m",
        "clift.cli",
        *clift_args,
    ]


def prelaunch_check(accelerate_config: str | Path, method_name: str) -> Engine:
    """Refuse, before any process starts, a method the config file's engine cannot run."""
    engine = engine_from_accelerate_config(read_accelerate_config(accelerate_config))
    problem = engine_problem(method_name, engine)
    if problem is not None:
        raise ConfigError(problem)
    return engine
