"""Prompt templates: olora (unchanged), chat (loss on the assistant turn only), format strings, `clift prompt`."""

from __future__ import annotations

import pytest

import clift
from clift.cli import main
from clift.config import RunConfig
from clift.data.collate import IGNORE_INDEX, PromptEncoder, TrainCollator
from clift.data.prompts import ChatTemplate, FormatTemplate, check_prompt, make_template
from clift.data.task import Example, Task
from clift.errors import ConfigError
from clift.models import tiny_tokenizer
from tests.conftest import fixture_stream, tiny_config

CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _task() -> Task:
    return Task("reviews", "SC", "What is the sentiment?\n", ("positive", "negative"), True)


def _chat_tokenizer():
    tok = tiny_tokenizer()
    tok.chat_template = CHAT
    return tok


def test_olora_prompt_is_unchanged() -> None:
    tok = tiny_tokenizer()
    plain = PromptEncoder(tok, "causal", 256, 50)
    explicit = PromptEncoder(tok, "causal", 256, 50, make_template("olora", tok))
    task, ex = _task(), Example("great film", "positive")
    assert plain.prompt_ids(task, ex.sentence) == explicit.prompt_ids(task, ex.sentence)
    text = "".join(make_template("olora", tok).parts(task, "great film"))
    assert text == "Task:SC\nDataset:reviews\nWhat is the sentiment?\nOption: positive, negative \ngreat film\nAnswer:"


def test_chat_template_masks_everything_but_the_assistant_turn() -> None:
    tok = _chat_tokenizer()
    template = make_template("chat", tok)
    assert isinstance(template, ChatTemplate) and template.stop_text == "<|end|>"
    enc = PromptEncoder(tok, "causal", 256, 50, template)
    task, ex = _task(), Example("great film", "positive")
    head, _, tail = template.parts(task, ex.sentence)
    assert head.startswith("<|user|>What is the sentiment?\nOption: positive, negative \n")
    assert tail == "<|end|>\n<|assistant|>"
    batch = TrainCollator(enc)([(task, ex)])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    scored = [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    prompt_len = len(enc.prompt_ids(task, ex.sentence))
    assert all(lab == IGNORE_INDEX for lab in labels[:prompt_len])
    assert scored == labels[prompt_len:]
    assert tok.decode(scored, skip_special_tokens=True).replace(" ", "").startswith("positive<|end|>")
    assert template.clean("positive<|end|>\n<|user|>") == "positive"


def test_chat_needs_a_chat_template() -> None:
    with pytest.raises(ConfigError, match="chat template"):
        make_template("chat", tiny_tokenizer())


def test_format_string_template() -> None:
    tok = tiny_tokenizer()
    t = make_template("Q: {instruction}[{options}] {input}\nA:", tok)
    assert isinstance(t, FormatTemplate)
    assert "".join(t.parts(_task(), "x")) == "Q: What is the sentiment?\n[positive, negative] x\nA:"
    assert check_prompt("{input}") == []
    assert any("exactly once" in p for p in check_prompt("{instruction}"))
    assert any("unknown field" in p for p in check_prompt("{input} {label}"))
    with pytest.raises(ConfigError, match="exactly once"):
        RunConfig.from_dict({"data": {"prompt": "no input here"}})


@pytest.mark.slow
def test_chat_run_on_tiny_model(tmp_path, monkeypatch) -> None:
    import clift.models as models

    real = models.tiny_tokenizer
    monkeypatch.setattr(models, "tiny_tokenizer", lambda: _set(real()))
    cfg = tiny_config(tmp_path, data={"prompt": "chat"}, eval={"mode": "generate", "zero_shot": False})
    res = clift.run(cfg, stream=fixture_stream(train=8, test=4, names=["toysent"]))
    assert res.results["status"] == "complete" and len(res.results["matrix"]) == 1


def _set(tok):
    tok.chat_template = CHAT
    return tok


def test_clift_prompt_command(capsys) -> None:
    assert main(["prompt", "model=tiny-llama", "--task", "toysent", "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert "=== task toysent" in out and "prompt tokens (masked)" in out
    assert ">>> loss on: ' positive'" in out or ">>> loss on: ' negative'" in out
    assert main(["prompt", "model=tiny-llama", "--task", "nope"]) == 2
