"""Tokenising prompts and answers, and the batch collators for causal and seq2seq models.

Causal LMs see ``[bos] prompt answer eos`` with the loss on ``answer eos`` only (the prompt is masked
with -100), right padding for training and left padding for generation. Seq2seq models see the prompt
on the encoder and ``answer eos`` as labels. Only the sentence of a prompt is ever truncated, so the
instruction, the options and the trailing ``Answer:`` always survive. Label masks are built from
lengths, never from pad ids (LLaMA-family tokenizers use eos as pad).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from clift.data.prompts import PromptTemplate
from clift.data.task import Example, Task
from clift.errors import ConfigError

IGNORE_INDEX = -100


class PromptEncoder:
    """Turns (task, example) pairs into token ids for one tokenizer and model kind.

    Args:
        tokenizer: a Hugging Face tokenizer with ``pad_token`` and ``eos_token`` set.
        kind: ``causal`` or ``seq2seq``.
        max_source_length: maximum prompt tokens (specials included).
        max_target_length: maximum answer tokens (eos included).
        template: the prompt template (``data.prompt``); default the O-LoRA format.
    """

    def __init__(
        self,
        tokenizer: Any,
        kind: str,
        max_source_length: int,
        max_target_length: int,
        template: PromptTemplate | None = None,
    ) -> None:
        if kind not in ("causal", "seq2seq"):
            raise ValueError(f"kind must be 'causal' or 'seq2seq', got {kind!r}.")
        self.tok = tokenizer
        self.kind = kind
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        # which special tokens the tokenizer itself wraps a text with (bos for LLaMA, eos for T5)
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a", add_special_tokens=True)["input_ids"]
        start = full.index(plain[0]) if plain and plain[0] in full else 0
        self.prefix = list(full[:start])
        self.suffix = list(full[start + len(plain) :])
        self.template = template if template is not None else PromptTemplate()
        if not self.template.add_specials:  # a chat template writes its own special tokens
            self.prefix, self.suffix = [], []
        stop = self._ids(self.template.stop_text.strip())
        # generation also stops at a chat template's end-of-turn token when it is a single token
        self.stop_ids = [self.eos_id, *(stop if len(stop) == 1 and stop[0] != self.eos_id else [])]
        self._heads: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        self._targets: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] if text else []

    def prompt_ids(self, task: Task, sentence: str) -> list[int]:
        """Token ids of the full prompt, truncating only the sentence to fit ``max_source_length``.

        Raises:
            ConfigError: when the prompt without its sentence is already longer than the limit.
        """
        head, sent, tail = self.template.parts(task, sentence)
        key = (task.name, head)
        if key not in self._heads:
            self._heads[key] = (self._ids(head), self._ids(tail))
        head_ids, tail_ids = self._heads[key]
        fixed = len(self.prefix) + len(head_ids) + len(tail_ids) + len(self.suffix)
        budget = self.max_source_length - fixed
        if budget < 0:
            raise ConfigError(
                f"data.max_source_length={self.max_source_length} is shorter than task {task.name!r}'s "
                "prompt "
                f"without its sentence ({fixed} tokens); raise it to at least {fixed + 64}."
            )
        sent_ids = self._ids(sent)[:budget]
        return self.prefix + head_ids + sent_ids + tail_ids + self.suffix

    def target_ids(self, label: str) -> list[int]:
        """Token ids of the answer followed by eos (a leading space for causal LMs, after "Answer:")."""
        if label not in self._targets:
            text = self.template.target(label, self.kind)
            ids = self._ids(text)[: self.max_target_length - 1]
            self._targets[label] = [*ids, self.eos_id]
        return self._targets[label]

    def max_label_tokens(self, task: Task) -> int:
        """Longest answer of ``task`` in tokens (eos included)."""
        return max(len(self.target_ids(lab)) for lab in task.labels) if task.labels else self.max_target_length


def _pad(rows: Sequence[Sequence[int]], value: int, left: bool) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            if left:
                out[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            else:
                out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _mask(rows: Sequence[Sequence[int]], left: bool) -> torch.Tensor:
    return _pad([[1] * len(r) for r in rows], 0, left)


class TrainCollator:
    """Batches (task, example) pairs — or (task, example, answer) triples — for the task loss.

    Returns a dict with ``input_ids``, ``attention_mask`` and ``labels`` (long tensors, shape (B, L);
    for seq2seq ``labels`` is (B, L_target)).
    """

    def __init__(self, encoder: PromptEncoder) -> None:
        self.enc = encoder

    def encode(self, task: Task, sentence: str, answer: str) -> tuple[list[int], list[int]]:
        return self.enc.prompt_ids(task, sentence), self.enc.target_ids(answer)

    def __call__(self, items: Sequence[tuple[Task, Example]] | Sequence[tuple[Task, Example, str]]) -> dict:
        pairs = [self.encode(it[0], it[1].sentence, it[2] if len(it) > 2 else it[1].label) for it in items]
        if self.enc.kind == "causal":
            seqs = [p + t for p, t in pairs]
            labels = [[IGNORE_INDEX] * len(p) + t for p, t in pairs]
            return {
                "input_ids": _pad(seqs, self.enc.pad_id, left=False),
                "attention_mask": _mask(seqs, left=False),
                "labels": _pad(labels, IGNORE_INDEX, left=False),
            }
        prompts = [p for p, _ in pairs]
        return {
            "input_ids": _pad(prompts, self.enc.pad_id, left=False),
            "attention_mask": _mask(prompts, left=False),
            "labels": _pad([t for _, t in pairs], IGNORE_INDEX, left=False),
        }


class GenerationCollator:
    """Batches prompts for greedy generation: left padding for causal LMs, right padding for seq2seq."""

    def __init__(self, encoder: PromptEncoder) -> None:
        self.enc = encoder

    def __call__(self, items: Sequence[tuple[Task, Example]]) -> dict:
        prompts = [self.enc.prompt_ids(task, ex.sentence) for task, ex in items]
        left = self.enc.kind == "causal"
        return {
            "input_ids": _pad(prompts, self.enc.pad_id, left=left),
            "attention_mask": _mask(prompts, left=left),
        }
