"""Full-rank weights trained through a low-rank gradient projector: the machinery ``galore`` and ``gorp`` share.

:class:`GaLoreFields` (the projector's config fields), the per-architecture full-rank targets,
module-pattern matching, keeping LoRA off full-rank targets, and :class:`FullRankWeights` (initial
snapshot, cumulative delta, reset, safetensors export). Library code with no method in it: it imports
only :mod:`clift.adapters` and :mod:`clift.errors`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from clift.adapters import LoraFields, base_model_of, lora_layers, resolve_target_modules
from clift.errors import ConfigError

#: GORP's full-rank targets per ``config.model_type`` (gorp.md §1.1): T5's decoder cross-attention q and v,
#: LLaMA's MLP gate. Chosen from the model's config, never from its name.
FULL_RANK_DEFAULTS: dict[str, tuple[str, ...]] = {
    "t5": ("EncDecAttention.q", "EncDecAttention.v"),
    "mt5": ("EncDecAttention.q", "EncDecAttention.v"),
    "llama": ("mlp.gate_proj",),
}

DELTA_FILE = "full_rank_delta.safetensors"
SaveDelta = Literal["every_task", "last_task", "none"]


def linear_modules(model: nn.Module) -> dict[str, nn.Linear]:
    """Every Linear layer of the base model by qualified name, seeing through PEFT tuner layers.

    A LoRA-wrapped layer is listed under the wrapper's name with its ``base_layer``; the adapter's own
    Linears are not listed.
    """
    base = base_model_of(model)
    tuners = dict(lora_layers(base))
    out: dict[str, nn.Linear] = {}
    for name, module in base.named_modules():
        if any(name.startswith(t + ".") for t in tuners):
            continue
        inner = tuners[name].get_base_layer() if name in tuners else module
        if isinstance(inner, nn.Linear) and name:
            out[name] = inner
    return out


def module_matches(name: str, pattern: str) -> bool:
    """Whether qualified module ``name`` matches ``pattern``: the name itself or a dotted suffix of it,
    with shell-style wildcards (``mlp.gate_proj``, ``EncDecAttention.q``, ``layers.1*.mlp.up_proj``)."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, "*." + pattern)


def _module_kinds(names: list[str]) -> list[str]:
    # the last two name components ("mlp.gate_proj", "EncDecAttention.q") keep an error message short
    # while still naming every kind of layer a pattern could select
    return sorted({".".join(n.split(".")[-2:]) for n in names})


def match_modules(model: nn.Module, patterns: list[str], option: str) -> dict[str, nn.Linear]:
    """The Linear layers matched by ``patterns``, in model order.

    Raises:
        ConfigError: naming every pattern that matches no Linear layer and listing the available ones.
    """
    available = linear_modules(model)
    missing = [p for p in patterns if not any(module_matches(n, p) for n in available)]
    if missing:
        raise ConfigError(
            f"{option}: {missing} match no Linear layer of the model; patterns are a qualified module name "
            "or a dotted suffix of one, with * wildcards. Available layers: "
            f"{', '.join(_module_kinds(list(available)))}."
        )
    return {n: m for n, m in available.items() if any(module_matches(n, p) for p in patterns)}


def default_full_rank_patterns(model: nn.Module, option: str) -> list[str]:
    """GORP's per-architecture full-rank targets, from the model config's ``model_type``.

    Raises:
        ConfigError: for an architecture without defaults, listing the available layers.
    """
    model_type = getattr(getattr(base_model_of(model), "config", None), "model_type", None)
    if model_type not in FULL_RANK_DEFAULTS:
        raise ConfigError(
            f"{option}: no default full-rank targets for model type {model_type!r} (defaults exist for "
            f"{', '.join(sorted(FULL_RANK_DEFAULTS))}); set {option} to module patterns, e.g. some of: "
            f"{', '.join(_module_kinds(list(linear_modules(model))))}."
        )
    return list(FULL_RANK_DEFAULTS[model_type])


def lora_exclusions(model: nn.Module, fields: LoraFields, full_rank: list[str]) -> dict[str, Any]:
    """Extra ``LoraConfig`` arguments that keep LoRA off the full-rank modules.

    Full-rank targets are trained as base weights, so they must not also get a LoRA: this turns T5's
    default LoRA targets ``q, v`` into self-attention q and v only (cross-attention q and v train in full
    rank), as GORP does.

    Raises:
        ConfigError: when every LoRA target module is a full-rank target.
    """
    targets = resolve_target_modules(base_model_of(model), fields.target_modules)
    lora_names = [n for n in linear_modules(model) if n.rsplit(".", 1)[-1] in targets]
    excluded = [n for n in full_rank if n in set(lora_names)]
    if lora_names and len(excluded) == len(lora_names):
        raise ConfigError(
            f"every LoRA target module ({targets}) is also a full-rank target; give method.target_modules "
            "other layers than the full-rank ones (or fewer full-rank patterns)."
        )
    return {"exclude_modules": excluded} if excluded else {}


@dataclass
class GaLoreFields:
    """The GaLore projector's fields, shared by ``galore`` and ``gorp``.

    Attributes:
        galore_rank: k, the rank of the gradient projection (capped at min(m, n)). Default 8.
        update_proj_gap: T, optimizer steps between SVD refreshes of the projection (at steps 0, T, 2T,
            ...). Default 10.
        galore_scale: α, the scale of the projected-back update. Default 1.0.
        proj_type: ``std`` (project on the right for tall or square weights, else on the left; GaLore's
            default and GORP's setting), ``left``, ``right`` or ``full`` (two-sided, k × k moments; the
            paper's equation). Default std.
        galore_svd: how the projection is refreshed: ``randomized`` (a randomized range finder for the
            top-k singular vectors, k + 8 columns, 2 power iterations; on SmolLM2's gate_proj gradients it
            captures >= 99.7% of the exact top-8 gradient energy at ~1/35 of the cost) or ``exact`` (full
            SVD, as GaLore and GORP's released code; the paper configs set it). Default randomized, because
            30 exact 1536 x 576 SVDs every 10 steps cost more than the LoRA step itself on a CPU.
    """

    galore_rank: int = field(default=8, metadata={"help": "GaLore rank k"})
    update_proj_gap: int = field(default=10, metadata={"help": "GaLore refresh interval T (steps)"})
    galore_scale: float = field(default=1.0, metadata={"help": "GaLore scale alpha"})
    proj_type: Literal["std", "left", "right", "full"] = field(
        default="std", metadata={"help": "projection side: std | left | right | full"}
    )
    galore_svd: Literal["exact", "randomized"] = field(
        default="randomized", metadata={"help": "projection refresh: randomized | exact SVD"}
    )

    def galore_problems(self) -> list[str]:
        p: list[str] = []
        if self.galore_rank < 1:
            p.append(f"galore_rank must be an integer >= 1, got {self.galore_rank}.")
        if self.update_proj_gap < 1:
            p.append(f"update_proj_gap must be an integer >= 1 (steps), got {self.update_proj_gap}.")
        if not self.galore_scale > 0:
            p.append(f"galore_scale must be > 0, got {self.galore_scale}.")
        return p

    def galore_group(self, lr: float) -> dict[str, Any]:
        """The ``ProjectedAdamW`` group keys for full-rank weights trained at ``lr``."""
        return {
            "rank": self.galore_rank,
            "update_proj_gap": self.update_proj_gap,
            "scale": self.galore_scale,
            "proj_type": self.proj_type,
            "svd": self.galore_svd,
            "lr": lr,
        }


class FullRankWeights:
    """The base-model weight matrices a method trains in full rank, with their initial values.

    Their updates live in the model itself, so they persist from task to task. The initial values are
    kept (on CPU) only when needed, to write cumulative deltas or to reset.

    Args:
        modules: ``{qualified module name: Linear}``.
        keep_init: snapshot the initial weights.
    """

    def __init__(self, modules: dict[str, nn.Linear], keep_init: bool) -> None:
        self.modules = dict(modules)
        #: ``{"<module>.weight": Parameter}``: names as in a fresh base model (what a user loads)
        self.params: dict[str, nn.Parameter] = {f"{n}.weight": m.weight for n, m in self.modules.items()}
        self.init: dict[str, torch.Tensor] | None = (
            {k: p.detach().to("cpu", copy=True) for k, p in self.params.items()} if keep_init else None
        )

    def __len__(self) -> int:
        return len(self.params)

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def set_trainable(self) -> None:
        for p in self.params.values():
            p.requires_grad_(True)

    @torch.no_grad()
    def delta(self) -> dict[str, torch.Tensor]:
        """``W − W_init`` per weight, on CPU, in the weight's dtype."""
        if self.init is None:
            raise RuntimeError("FullRankWeights was built with keep_init=False; no initial weights kept.")
        return {k: (p.detach().cpu() - self.init[k]).contiguous() for k, p in self.params.items()}

    @torch.no_grad()
    def delta_norm(self) -> float | None:
        """‖W − W_init‖_F over all weights, or None without a snapshot."""
        if self.init is None or not self.params:
            return None
        total = sum(
            float((p.detach().cpu().double() - self.init[k].double()).pow(2).sum()) for k, p in self.params.items()
        )
        return total**0.5

    @torch.no_grad()
    def reset(self) -> None:
        """Restore the initial weights."""
        if self.init is None:
            raise RuntimeError("FullRankWeights was built with keep_init=False; cannot reset.")
        for k, p in self.params.items():
            p.copy_(self.init[k].to(p.device))

    def save_delta(self, folder: Path, metadata: dict[str, str] | None = None) -> Path:
        """Write ``W − W_init`` to ``folder/full_rank_delta.safetensors`` (keys: ``<module>.weight``)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / DELTA_FILE
        save_file(self.delta(), str(path), metadata=metadata or {})
        return path


def apply_full_rank_delta(model: nn.Module, path: str | Path) -> None:
    """Add a saved ``full_rank_delta.safetensors`` to a freshly loaded base model, in place.

    Args:
        model: the base transformers model (before any PEFT wrapping).
        path: the delta file written by ``gorp`` / ``galore``.

    Raises:
        KeyError: when a key names no parameter of ``model`` (a different architecture).
    """
    from safetensors.torch import load_file

    with torch.no_grad():
        for name, d in load_file(str(path)).items():
            p = model.get_parameter(name)
            p.add_(d.to(device=p.device, dtype=p.dtype))


def should_save_delta(policy: str, stage_index: int, n_stages: int) -> bool:
    """Whether ``save_full_rank_delta`` asks for the delta after stage ``stage_index`` (of ``n_stages``)."""
    if policy == "every_task":
        return True
    if policy == "last_task":
        return stage_index == n_stages - 1
    return False
