"""Accuracy of a model on a task: greedy generation + normalised exact match, or rank classification.

``generate`` decodes greedily and compares the normalised text with the normalised label (the papers'
metric). ``rank`` scores every label option by the summed log-likelihood of ``option + eos`` given the
prompt and predicts the best one — no generation, so the prediction is always a valid label; its cost
grows with the number of options. ``score`` predicts what ``rank`` predicts from one prompt pass per
example (the options are scored off the prompt's KV cache, :mod:`clift.scoring`), optionally length-
normalised or calibrated (``eval.score_norm``). Examples are split across processes and gathered, so a multi-process
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
from clift.scoring import normalize_scores, option_logprobs
from clift.text_metrics import SECONDARY, example_scores, mean_percent


@dataclass
class TaskEval:
    """The evaluation of one task.

    Attributes:
        accuracy: the task's own metric in percent (0–100): accuracy for a label task, else its
            ``metric`` (exact_match, rouge1 or rougeL).
        n: number of examples evaluated.
        predictions: (example id, gold label, prediction, correct) per example, in input order.
        metric: the name of the metric in ``accuracy``.
        scores: every metric of :data:`clift.text_metrics.SECONDARY` in percent.
    """

    accuracy: float
    n: int
    predictions: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "accuracy"
    scores: dict[str, float] = field(default_factory=dict)


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
            eos_token_id=self.enc.stop_ids if len(self.enc.stop_ids) > 1 else self.enc.eos_id,
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
            out.extend(self.enc.template.clean(t) for t in self.enc.tok.batch_decode(seqs, skip_special_tokens=True))
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

    @torch.no_grad()
    def _score(self, model: nn.Module, task: Task, exs: list[Example], desc: str = "") -> list[str]:
        options = list(task.labels)
        norm = self.cfg.score_norm
        prior = None
        if norm == "pmi":
            # the content-free prompt: the task's template with an empty sentence, scored once per task
            empty = [self.enc.prompt_ids(task, "")]
            with self.acc.autocast():
                prior = option_logprobs(model, self.enc, empty, options)[0][0]
        preds: list[str] = []
        for i in self._batches(len(exs), desc):
            prompts = [self.enc.prompt_ids(task, ex.sentence) for ex in exs[i : i + self.cfg.batch_size]]
            with self.acc.autocast():
                scores, lengths = option_logprobs(model, self.enc, prompts, options)
            best = normalize_scores(scores, lengths, prior, norm).argmax(-1)
            preds.extend(options[j] for j in best.tolist())
        return preds

    def _predict(self, model: nn.Module, task: Task, exs: list[Example], desc: str) -> list[str]:
        if task.free_form:  # no options to rank or score: always generated, scored by the task's metric
            return self._generate(model, task, exs, desc)
        if self.cfg.mode == "rank":
            return self._rank(model, task, exs, desc)
        if self.cfg.mode == "score":
            return self._score(model, task, exs, desc)
        return self._generate(model, task, exs, desc)

    def evaluate(self, model: nn.Module, task: Task, examples: list[Example], desc: str = "") -> TaskEval:
        """Accuracy of ``model`` on ``examples`` of ``task`` (every process must call this together)."""
        from accelerate.utils import gather_object

        was_training = model.training
        model.eval()
        indices = list(range(len(examples)))
        with self.acc.split_between_processes(indices) as mine:
            exs = [examples[i] for i in mine]
            preds = self._predict(model, task, exs, desc)
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
        metric, scores = score_predictions(task, ordered)
        return TaskEval(scores[metric] if metric != "accuracy" else acc, n, ordered, metric, scores)


def score_predictions(task: Task, rows: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """The task's metric name and every metric of :data:`SECONDARY` in percent, from prediction rows.

    A free-form task's rows also get their per-example ``score`` (its metric, 0–1).
    """
    metric = task.score_metric
    per_example = [example_scores(r["prediction"], r["label"]) for r in rows]
    if task.free_form:
        for r, s in zip(rows, per_example, strict=True):
            r["score"] = s[metric]
    names = dict.fromkeys([*SECONDARY, metric])
    return metric, {m: mean_percent([s[m] for s in per_example]) for m in names}
