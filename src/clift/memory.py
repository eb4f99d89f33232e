"""Memory knobs: gradient checkpointing, the attention implementation, a quantized base model (QLoRA).

The settings live in the run config (``model.attn_implementation``, ``model.quantization``,
``train.gradient_checkpointing``); this module validates them against the chosen method and what is
installed (:func:`check_memory_settings`), turns them into ``from_pretrained`` arguments
(:func:`from_pretrained_kwargs`), applies them to a loaded model (:func:`apply_to_model`) and switches
gradient checkpointing on once the method has attached its adapters (:func:`enable_gradient_checkpointing`).
Every default keeps the behaviour from before these knobs existed.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from clift.errors import ConfigError

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
_COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QLORA_INSTALL = "pip install 'clift[qlora]' (bitsandbytes)"

# bitsandbytes (imported by PEFT whenever installed) warns at import that an optional CPU kernel package is
# missing, even for runs that quantize nothing; its plain kernels work, so the warning only adds noise
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


@dataclass
class QuantizationConfig:
    """A quantized base model through bitsandbytes (QLoRA: base weights in 4 bits, adapters in ``compute_dtype``).

    Attributes:
        bits: 4 (NF4/FP4, QLoRA) or 8 (LLM.int8). Required.
        quant_type: 4-bit data type: ``nf4`` (QLoRA's) or ``fp4``. Default nf4.
        double_quant: also quantize the quantization constants (QLoRA's, ~0.4 bit/param saved). Default true.
        compute_dtype: dtype of the matmuls and of the adapters: ``bfloat16`` (GPU), ``float16`` or
            ``float32`` (CPU). Default bfloat16.
        skip_modules: module names left unquantized (the output head always is). Default none.
    """

    bits: int = field(default=4, metadata={"help": "4 (QLoRA) or 8"})
    quant_type: Literal["nf4", "fp4"] = field(default="nf4", metadata={"help": "4-bit type: nf4 | fp4"})
    double_quant: bool = field(default=True, metadata={"help": "quantize the quantization constants"})
    compute_dtype: Literal["bfloat16", "float16", "float32"] = field(
        default="bfloat16", metadata={"help": "matmul/adapter dtype: bfloat16 | float16 | float32"}
    )
    skip_modules: list[str] | None = field(default=None, metadata={"help": "module names kept unquantized"})

    def to_transformers(self) -> Any:
        """The ``transformers.BitsAndBytesConfig`` for these settings."""
        from transformers import BitsAndBytesConfig

        if self.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=self.skip_modules)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=_COMPUTE_DTYPES[self.compute_dtype],
            llm_int8_skip_modules=self.skip_modules,
        )


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def base_weight_training(method_cfg: Any) -> str | None:
    """Why ``method_cfg``'s method trains base-model weights (None when it trains adapters only).

    Such methods cannot train a quantized base: its weights are frozen 4/8-bit codes without gradients.
    """
    name = method_cfg.method_name()
    if name == "seq_ft":
        return "seq_ft fine-tunes every base weight; use seq_lora (its adapter counterpart) for a quantized base"
    if name == "galore":
        return (
            "galore trains base weights with projected gradients; use an adapter method (seq_lora, inc_lora) "
            "for a quantized base, or keep the base unquantized (remove model.quantization)"
        )
    if name == "gorp" and getattr(method_cfg, "full_rank_modules", None) != []:
        return (
            "gorp trains full-rank base weights W next to its LoRA; set method.full_rank_modules: [] "
            "(LoRA-only GORP) for a quantized base, or remove model.quantization to keep full-rank W"
        )
    return None


def attn_problem(name: str | None, device: str) -> str | None:
    """Why ``model.attn_implementation=name`` cannot run here (None when it can)."""
    if name != "flash_attention_2":
        return None
    if importlib.util.find_spec("flash_attn") is None:
        return (
            "model.attn_implementation=flash_attention_2 needs the flash-attn package, which is not installed; "
            "install it (`pip install flash-attn --no-build-isolation`, CUDA only) or use sdpa (PyTorch's own "
            "fused attention, the default where supported) or eager."
        )
    if device == "cpu" or not torch.cuda.is_available():
        return "model.attn_implementation=flash_attention_2 runs on CUDA GPUs only; on CPU use sdpa or eager."
    return None


def check_memory_settings(cfg: Any) -> None:
    """Refuse memory settings that cannot work with this method or on this machine.

    Args:
        cfg: a :class:`clift.config.RunConfig`.

    Raises:
        ConfigError: one message per problem, each naming the setting, why, and what works instead.
    """
    problems: list[str] = []
    q = cfg.model.quantization
    if q is not None and q.bits not in (4, 8):
        problems.append(
            f"model.quantization.bits must be 4 or 8, got {q.bits!r}; use 4 for QLoRA (NF4), 8 for LLM.int8, "
            "or remove model.quantization for an unquantized base."
        )
    if q is not None:
        why = base_weight_training(cfg.method)
        if why is not None:
            name = cfg.method.method_name()
            problems.append(f"model.quantization (bits={q.bits}) cannot be used with method {name!r}: {why}.")
        if importlib.util.find_spec("bitsandbytes") is None:
            problems.append(f"model.quantization needs bitsandbytes, which is not installed: {QLORA_INSTALL}.")
        if cfg.model.gguf_file or cfg.model.name.endswith(".gguf") or cfg.model.name == "smollm2-135m":
            problems.append(
                "model.quantization cannot re-quantize a GGUF model (it is de-quantized on load); give a "
                "safetensors model folder or hub id, or remove model.quantization."
            )
    attn = attn_problem(cfg.model.attn_implementation, cfg.model.device)
    if attn is not None:
        problems.append(attn)
    if problems:
        raise ConfigError(problems)


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------


def from_pretrained_kwargs(model_cfg: Any) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments for ``model_cfg``'s memory settings (empty at the defaults)."""
    out: dict[str, Any] = {}
    if model_cfg.attn_implementation is not None:
        out["attn_implementation"] = model_cfg.attn_implementation
    if model_cfg.quantization is not None:
        out["quantization_config"] = model_cfg.quantization.to_transformers()
        # bitsandbytes places the quantized weights itself; one device per process
        out["device_map"] = {"": _device_for(model_cfg)}
    return out


def _device_for(model_cfg: Any) -> str | int:
    if model_cfg.device == "cpu" or not torch.cuda.is_available():
        return "cpu"
    from accelerate import PartialState

    return PartialState().local_process_index  # each process quantizes onto its own GPU


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds bitsandbytes-quantized weights."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def apply_to_model(model: nn.Module, model_cfg: Any) -> nn.Module:
    """Apply the memory settings to a freshly loaded model (a no-op at the defaults).

    A model built in memory (the tiny test models) is quantized by a round trip through a temporary
    safetensors folder, the same path a hub model takes. A quantized model is then prepared for k-bit
    training (PEFT's ``prepare_model_for_kbit_training``: norms in fp32, inputs require grad).
    """
    attn = model_cfg.attn_implementation
    if attn is not None and getattr(model.config, "_attn_implementation", None) != attn:
        model.set_attn_implementation(attn)
    if model_cfg.quantization is None:
        return model
    if not is_quantized(model):
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        auto = AutoModelForSeq2SeqLM if getattr(model.config, "is_encoder_decoder", False) else AutoModelForCausalLM
        with tempfile.TemporaryDirectory(prefix="clift-quantize-") as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            model = auto.from_pretrained(tmp, dtype=model.dtype, **from_pretrained_kwargs(model_cfg))
    from peft import prepare_model_for_kbit_training

    # gradient checkpointing is switched on later (after the adapters exist), by the run's own setting
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def _transformers_model(model: nn.Module) -> nn.Module | None:
    """The transformers ``PreTrainedModel`` inside ``model`` (itself, or the one a PEFT wrapper holds)."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module
    return None


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute activations in the backward pass instead of storing them (train-mode forwards only).

    Non-reentrant checkpointing (PyTorch's recommended variant) plus PEFT's input-grad hook: with frozen
    embeddings no checkpointed block's input requires grad, and the reentrant variant would then drop the
    adapters' gradients; the hook keeps both variants correct.

    Raises:
        ConfigError: for a model transformers cannot checkpoint.
    """
    inner = _transformers_model(model)
    if inner is None or not getattr(inner, "supports_gradient_checkpointing", False):
        raise ConfigError(
            f"train.gradient_checkpointing=true, but {type(inner or model).__name__} does not support it; "
            "set train.gradient_checkpointing: false."
        )
    kwargs = {"use_reentrant": False}
    if hasattr(inner, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    inner.enable_input_require_grads()
