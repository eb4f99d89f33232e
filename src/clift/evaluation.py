"""Accuracy of a model on a task: greedy generation + normalised exact match, or rank classification.

``generate`` decodes greedily and compares the normalised text with the normalised label (the papers'
metric). ``rank`` scores every label option by the summed log-likelihood of ``option + eos`` given the
prompt and predicts the best one — no generation, so the prediction is always a valid label; its cost
grows with the number of options. Examples are split across processes and gathered, so a multi-process
run evaluates each example once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from clift.config import EvalConfig
from clift.data.collate import IGNORE_INDEX, GenerationCollator, PromptEncoder, TrainCollator
from clift.data.task import Example, Task, normalize_answer


@dataclass
class TaskEval:
    """The evaluation of one task.

    Attributes:
        accuracy: percentage of correct examples (0–100).
        n: number of examples evaluated.
        predictions: (example id, gold label, prediction, correct) per example, in input order.
    """

    accuracy: float
    n: int
    predictions: list[dict[str, Any]] = field(default_factory=list)


def sequence_logprob(model: nn.Module, batch: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    """Sum of log-probabilities of the labelled tokens of each row.

    Args:
        model: a causal or seq2seq LM.
        batch: ``input_ids``/``attention_mask`` (B, L) and ``labels`` (B, L) causal or (B, L_t) seq2seq,
            with ``-100`` on positions that are not scored.
        kind: ``causal`` or ``seq2seq``.

    Returns:
        Tensor of shape (B,) (float32).
    """
    labels = batch["labels"]
    if kind == "seq2seq":
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).logits
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits, labels = logits[:, :-1], labels[:, 1:]
    logp = torch.log_softmax(logits.float(), dim=-1)
    mask = labels != IGNORE_INDEX
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


class Evaluator:
    """Evaluates tasks for one model kind and tokenizer.

    Args:
        encoder: the run's prompt encoder.
        config: the ``eval`` section.
        accelerator: an ``accelerate.Accelerator`` (for device, autocast and multi-process gathering).
        progress: show a progress bar per evaluation (main process only).
    """

    def __init__(self, encoder: PromptEncoder, config: EvalConfig, accelerator: Any, progress: bool = False) -> None:
        self.enc = encoder
        self.progress = progress and accelerator.is_local_main_process
        self.cfg = config
        self.acc = accelerator
        self.gen_collate = GenerationCollator(encoder)
        self.train_collate = TrainCollator(encoder)

    def _batches(self, n: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(range(0, n, self.cfg.batch_size), desc=desc, leave=False, disable=not self.progress)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.acc.device) for k, v in batch.items()}

    @torch.no_grad()
    def _generate(self, model: nn.Module, task: Task, exs: list[Example], desc: str = "") -> list[str]:
        from transformers import GenerationConfig

        max_new = self.cfg.max_new_tokens or (self.enc.max_label_tokens(task) + 4)
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.enc.pad_id,
            eos_token_id=self.enc.eos_id,
            decoder_start_token_id=getattr(getattr(model, "config", None), "decoder_start_token_id", None),
        )
        out: list[str] = []
        for i in self._batches(len(exs), desc):
            chunk = exs[i : i + self.cfg.batch_size]
            batch = self._to_device(self.gen_collate([(task, ex) for ex in chunk]))
            with self.acc.autocast():
                seqs = model.generate(**batch, generation_config=gen_cfg)
            if self.enc.kind == "causal":
                seqs = seqs[:, batch["input_ids"].shape[1] :]
            out.extend(self.enc.tok.batch_decode(seqs, skip_special_tokens=True))
        return out

    @torch.no_grad()
    def _rank(self, model: nn.Module, task: Task, exs: list[Example], desc: str = "") -> list[str]:
        options = list(task.labels)
        rows = [(task, ex, opt) for ex in exs for opt in options]
        scores: list[torch.Tensor] = []
        for i in self._batches(len(rows), desc):
            batch = self._to_device(self.train_collate(rows[i : i + self.cfg.batch_size]))
            with self.acc.autocast():
                scores.append(sequence_logprob(model, batch, self.enc.kind).cpu())
        if not rows:
            return []
        table = torch.cat(scores).view(len(exs), len(options))
        return [options[j] for j in table.argmax(-1).tolist()]

    def evaluate(self, model: nn.Module, task: Task, examples: list[Example], desc: str = "") -> TaskEval:
        """Accuracy of ``model`` on ``examples`` of ``task`` (every process must call this together)."""
        from accelerate.utils import gather_object

        was_training = model.training
        model.eval()
        indices = list(range(len(examples)))
        with self.acc.split_between_processes(indices) as mine:
            exs = [examples[i] for i in mine]
            preds = (
                self._rank(model, task, exs, desc)
                if self.cfg.mode == "rank"
                else self._generate(model, task, exs, desc)
            )
            local = [
                {
                    "idx": i,
                    "id": ex.id,
                    "label": ex.label,
                    "prediction": p.strip(),
                    "correct": normalize_answer(p) == normalize_answer(ex.label),
                }
                for i, ex, p in zip(mine, exs, preds, strict=True)
            ]
        rows = gather_object(local) if self.acc.num_processes > 1 else local
        # split_between_processes may pad the last process with duplicates; keep each index once
        seen: dict[int, dict[str, Any]] = {}
        for r in rows:
            seen.setdefault(r["idx"], r)
        ordered = [seen[i] for i in sorted(seen)]
        for r in ordered:
            r.pop("idx")
        model.train(was_training)
        n = len(ordered)
        acc = 100.0 * sum(r["correct"] for r in ordered) / n if n else float("nan")
        return TaskEval(acc, n, ordered)
