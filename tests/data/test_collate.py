"""Collators: loss only on answer + eos, sentence-only truncation, left padding for generation."""

import pytest
import torch

from clift.data.collate import IGNORE_INDEX, GenerationCollator, PromptEncoder, TrainCollator
from clift.data.task import Example, Task
from clift.errors import ConfigError
from clift.models import tiny_tokenizer

TASK = Task("toytopic", "TC", "What is the topic? Choose one from the option.\n", ("Sports", "Business"))


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_causal_labels_cover_answer_and_eos_only(tok):
    enc = PromptEncoder(tok, "causal", 256, 16)
    items = [
        (TASK, Example("Title: the team won\nText: yes", "Sports")),
        (TASK, Example("short", "Business")),
    ]
    batch = TrainCollator(enc)(items)
    for i, (task, ex) in enumerate(items):
        prompt = enc.prompt_ids(task, ex.sentence)
        target = enc.target_ids(ex.label)
        assert target[-1] == tok.eos_token_id
        n = len(prompt) + len(target)
        assert batch["input_ids"][i, :n].tolist() == prompt + target
        assert batch["labels"][i, : len(prompt)].eq(IGNORE_INDEX).all()
        assert batch["labels"][i, len(prompt) : n].tolist() == target
        assert batch["labels"][i, n:].eq(IGNORE_INDEX).all()  # right padding is not scored
        assert batch["attention_mask"][i].sum() == n
    assert tok.decode(enc.target_ids("Sports")[:-1]).strip() == "Sports"


def test_eos_as_pad_does_not_mask_the_answer_eos(tok):
    # LLaMA-family tokenizers pad with eos; the eos that ends an answer must still be a label
    tok2 = tiny_tokenizer()
    tok2.pad_token = tok2.eos_token
    enc = PromptEncoder(tok2, "causal", 256, 16)
    batch = TrainCollator(enc)([(TASK, Example("a", "Sports")), (TASK, Example("a much longer sentence", "Sports"))])
    assert (batch["labels"] == tok2.eos_token_id).sum() == 2


def test_truncation_keeps_instruction_options_and_answer_tail(tok):
    enc = PromptEncoder(tok, "causal", 64, 16)
    ids = enc.prompt_ids(TASK, "word " * 500)
    assert len(ids) == 64
    text = tok.decode(ids)
    assert text.startswith("Task:TC\nDataset:toytopic\nWhat is the topic?")
    assert "Option: Sports, Business" in text and text.endswith("\nAnswer:")


def test_too_short_limit_is_a_config_error(tok):
    enc = PromptEncoder(tok, "causal", 10, 16)
    with pytest.raises(ConfigError, match=r"data.max_source_length=10 is shorter than task 'toytopic'"):
        enc.prompt_ids(TASK, "x")


def test_generation_batches_are_left_padded_for_causal(tok):
    enc = PromptEncoder(tok, "causal", 256, 16)
    batch = GenerationCollator(enc)([(TASK, Example("a", "Sports")), (TASK, Example("a b c d e f g", "Sports"))])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1
    assert batch["input_ids"][0, 0] == tok.pad_token_id


def test_seq2seq_batches(tok):
    enc = PromptEncoder(tok, "seq2seq", 256, 16)
    batch = TrainCollator(enc)([(TASK, Example("a", "Business")), (TASK, Example("b", "Sports"))])
    assert batch["labels"][0].tolist()[: len(enc.target_ids("Business"))] == enc.target_ids("Business")
    assert torch.equal(batch["input_ids"][0, : len(enc.prompt_ids(TASK, "a"))], torch.tensor(enc.prompt_ids(TASK, "a")))
    gen = GenerationCollator(enc)([(TASK, Example("a", "Sports")), (TASK, Example("a b c d e", "Sports"))])
    assert gen["attention_mask"][0, 0] == 1  # encoder inputs are right padded
