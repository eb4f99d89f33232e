"""clift.evaluation as a unit: exact-match scoring of generations, rank classification picks the argmax."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator

from clift.config import EvalConfig, ModelConfig
from clift.data.collate import IGNORE_INDEX, PromptEncoder, TrainCollator
from clift.data.task import Task
from clift.evaluation import Evaluator, sequence_logprob
from clift.models import load_model

from .conftest import fixture_stream


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model(ModelConfig(name="tiny-llama"))
    loaded.model.eval()
    return loaded


def _evaluator(loaded, mode: str) -> Evaluator:
    enc = PromptEncoder(loaded.tokenizer, loaded.kind, 128, 16)
    return Evaluator(enc, EvalConfig(mode=mode, batch_size=5), Accelerator(cpu=True))


def test_generate_scores_normalised_exact_match(tiny, monkeypatch):
    task = fixture_stream(names=["toysent"]).tasks[0]
    examples = task.test[:4]
    # what the model "generates": case, punctuation and spaces do not matter; other words do
    outputs = [f"  {examples[0].label.upper()}.", examples[1].label, "nonsense", f"{examples[3].label} extra"]
    monkeypatch.setattr(Evaluator, "_generate", lambda self, model, task, exs, desc="": outputs[: len(exs)])
    ev = _evaluator(tiny, "generate").evaluate(tiny.model, task, examples)
    assert [p["correct"] for p in ev.predictions] == [True, True, False, False]
    assert ev.accuracy == 50.0 and ev.n == 4
    assert [p["id"] for p in ev.predictions] == [ex.id for ex in examples]
    assert ev.predictions[0]["prediction"] == examples[0].label.upper() + "."  # stripped, not normalised


def test_generate_on_the_tiny_model_is_consistent_with_its_predictions(tiny):
    task = fixture_stream(names=["toytopic"]).tasks[0]
    evaluator = _evaluator(tiny, "generate")
    evaluator.cfg.max_new_tokens = 3
    tiny.model.train()
    ev = evaluator.evaluate(tiny.model, task, task.test[:6])
    assert tiny.model.training  # the model's mode is restored
    assert ev.accuracy == 100.0 * sum(p["correct"] for p in ev.predictions) / 6
    tiny.model.eval()


def test_rank_picks_the_option_with_the_highest_log_likelihood(tiny):
    task = fixture_stream(names=["toytopic"]).tasks[0]
    examples = task.test[:4]
    evaluator = _evaluator(tiny, "rank")
    ev = evaluator.evaluate(tiny.model, task, examples)
    collate = TrainCollator(evaluator.enc)
    for ex, pred in zip(examples, ev.predictions, strict=True):
        with torch.no_grad():
            scores = [float(sequence_logprob(tiny.model, collate([(task, ex, o)]), "causal")) for o in task.labels]
        assert pred["prediction"] == task.labels[max(range(len(scores)), key=scores.__getitem__)]
    assert ev.accuracy == 100.0 * sum(p["correct"] for p in ev.predictions) / len(examples)


def test_an_empty_split_has_nan_accuracy(tiny):
    task = Task("empty", "", "", ("a", "b"), True, [], [], [])
    ev = _evaluator(tiny, "rank").evaluate(tiny.model, task, [])
    assert ev.n == 0 and math.isnan(ev.accuracy)


class _FixedLogits(torch.nn.Module):
    """A 'causal LM' whose next-token distribution is the same at every position."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits  # (V,)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
        B, L = input_ids.shape
        return type("Out", (), {"logits": self.logits.expand(B, L, -1)})()


def test_sequence_logprob_sums_the_labelled_tokens_only():
    logits = torch.tensor([0.0, 1.0, 2.0])
    logp = torch.log_softmax(logits, -1)
    ids = torch.tensor([[0, 1, 2, 1]])
    # causal: position t predicts token t+1; only tokens 2 and 3 are labelled
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2, 1]])
    got = sequence_logprob(
        _FixedLogits(logits), {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}, "causal"
    )
    assert got.shape == (1,)
    assert torch.allclose(got, logp[2] + logp[1])
