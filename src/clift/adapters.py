"""LoRA adapters through PEFT: configuration fields, injection, discovery, saving.

clift never re-implements LoRA: adapters are PEFT ``LoraConfig`` adapters, injected with
``get_peft_model`` / ``add_adapter``, saved with ``save_pretrained`` (safetensors) and loadable anywhere
PEFT is. Adapter parameters are found through PEFT's tuner-layer interface (``BaseTunerLayer``), never by
matching substrings of parameter names.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn

from clift.errors import ConfigError

ADAPTER_PREFIX = "task"


def adapter_name(index: int) -> str:
    """The PEFT adapter name of stream task ``index`` (``task0``, ``task1``, …)."""
    return f"{ADAPTER_PREFIX}{index}"


@dataclass
class LoraFields:
    """LoRA hyper-parameters shared by every LoRA-based method config.

    Attributes:
        r: adapter rank. Default 8 (O-LoRA / GORP setting).
        alpha: scaling numerator; the update is (alpha / r) · B A. Default 32 (scaling 4 at r = 8).
        dropout: dropout on the adapter input. Default 0.1 (O-LoRA / DEAL code).
        target_modules: module names to adapt; null = PEFT's default for the architecture
            (LLaMA: q_proj, v_proj; T5: q, v).
    """

    r: int = field(default=8, metadata={"help": "LoRA rank"})
    alpha: float = field(default=32.0, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    dropout: float = field(default=0.1, metadata={"help": "LoRA dropout"})
    target_modules: list[str] | None = field(
        default=None, metadata={"help": "modules to adapt (null: PEFT default for the architecture)"}
    )

    def lora_problems(self) -> list[str]:
        p = []
        if self.r < 1:
            p.append(f"r must be a positive integer, got r={self.r}.")
        if self.alpha <= 0:
            p.append(f"alpha must be > 0, got alpha={self.alpha}.")
        if not 0 <= self.dropout < 1:
            p.append(f"dropout must be in [0, 1), got dropout={self.dropout}.")
        if self.target_modules is not None and not self.target_modules:
            p.append("target_modules is an empty list; give module names (e.g. [q_proj, v_proj]) or null.")
        return p


def base_model_of(model: nn.Module) -> nn.Module:
    """The transformers model under a ``PeftModel`` (or ``model`` itself)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def linear_layer_names(model: nn.Module) -> list[str]:
    """Short names of the model's Linear layers, seeing through PEFT tuner layers that wrap them."""
    tuners = [n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    names = set()
    for n, m in model.named_modules():
        if any(n.startswith(t + ".") for t in tuners):
            continue  # the inside of a tuner layer (its base_layer and adapter Linears)
        base = m.get_base_layer() if isinstance(m, BaseTunerLayer) else m
        if isinstance(base, nn.Linear) and n:
            names.add(n.rsplit(".", 1)[-1])
    return sorted(names)


def resolve_target_modules(model: nn.Module, targets: list[str] | None) -> list[str]:
    """Check that ``targets`` name Linear layers of ``model`` (or pick PEFT's default for its type).

    Raises:
        ConfigError: naming the missing targets and the model's available Linear layer names.
    """
    linear_names = linear_layer_names(model)
    if targets is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
        if targets is None:
            raise ConfigError(
                f"no default LoRA target modules for model type {model_type!r}; set method.target_modules, "
                f"e.g. to some of: {', '.join(linear_names)}."
            )
    missing = [t for t in targets if t not in linear_names]
    if missing:
        raise ConfigError(
            f"method.target_modules {missing} not found in the model; available Linear layers: "
            f"{', '.join(linear_names)}."
        )
    return list(targets)


def lora_config(fields: LoraFields, model: nn.Module, **extra) -> LoraConfig:
    """A PEFT ``LoraConfig`` from ``fields`` (target modules validated against ``model``)."""
    base = base_model_of(model)
    kind = "SEQ_2_SEQ_LM" if getattr(base.config, "is_encoder_decoder", False) else "CAUSAL_LM"
    return LoraConfig(
        r=fields.r,
        lora_alpha=fields.alpha,
        lora_dropout=fields.dropout,
        target_modules=resolve_target_modules(base, fields.target_modules),
        bias="none",
        task_type=kind,
        **extra,
    )


def add_lora(model: nn.Module, config: LoraConfig, name: str) -> PeftModel:
    """Add adapter ``name`` to ``model`` (wrapping it in a ``PeftModel`` the first time).

    The new adapter becomes the only active one, and PEFT makes it the only trainable one.
    """
    if isinstance(model, PeftModel):
        model.add_adapter(name, config)
        model.set_adapter(name)
        return model
    return get_peft_model(model, config, adapter_name=name)


def lora_layers(model: nn.Module) -> list[tuple[str, BaseTunerLayer]]:
    """Every PEFT tuner layer of ``model`` with its module name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


def adapter_parameters(model: nn.Module, name: str) -> dict[str, nn.Parameter]:
    """All parameters that belong to adapter ``name`` (its LoRA A and B matrices), by qualified name."""
    out: dict[str, nn.Parameter] = {}
    for layer_name, layer in lora_layers(model):
        for attr in layer.adapter_layer_names:  # ("lora_A", "lora_B", "lora_embedding_A", …)
            container = getattr(layer, attr)
            if name in container:
                sub = container[name]
                params = sub.named_parameters() if isinstance(sub, nn.Module) else [("", sub)]
                for pname, p in params:
                    out[f"{layer_name}.{attr}.{name}" + (f".{pname}" if pname else "")] = p
    return out


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def set_trainable(params: dict[str, nn.Parameter] | list[nn.Parameter], flag: bool = True) -> None:
    for p in params.values() if isinstance(params, dict) else params:
        p.requires_grad_(flag)


def save_adapter(model: PeftModel, name: str, folder: Path) -> Path:
    """Save adapter ``name`` so that ``PeftModel.from_pretrained(base, folder)`` loads it.

    PEFT writes non-default adapters to ``<dir>/<name>/``; this writes through a temporary folder and
    moves the result into ``folder`` in one rename, so a crash never leaves a partial adapter.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".adapter-") as tmp:
        model.save_pretrained(tmp, selected_adapters=[name], safe_serialization=True)
        src = Path(tmp) / name if name != "default" else Path(tmp)
        staged = Path(tmp + ".ready")
        shutil.move(str(src), str(staged))
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)
    return folder


@torch.no_grad()
def snapshot(params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    """Detached copies of ``params`` (for bit-identity checks and anchors)."""
    return {k: v.detach().clone() for k, v in params.items()}
