"""Score mode: one prompt pass per example gives rank's log-likelihoods and predictions."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from clift.config import EvalConfig, ModelConfig
from clift.data.collate import PromptEncoder, TrainCollator
from clift.evaluation import Evaluator, sequence_logprob
from clift.models import load_model
from clift.scoring import normalize_scores, option_logprobs
from tests.conftest import fixture_stream


def _setup(alias: str):
    loaded = load_model(ModelConfig(name=alias))
    enc = PromptEncoder(loaded.tokenizer, loaded.kind, max_source_length=96, max_target_length=16)
    return loaded.model.eval(), enc


@pytest.mark.parametrize("alias", ["tiny-llama", "tiny-t5"])
def test_option_logprobs_equal_full_forward(alias: str) -> None:
    model, enc = _setup(alias)
    task = fixture_stream().tasks[1]  # three topic labels of different token lengths
    exs = task.test[:5]
    prompts = [enc.prompt_ids(task, ex.sentence) for ex in exs]
    assert len({len(p) for p in prompts}) > 1  # prompts of different lengths exercise the padding
    scores, lengths = option_logprobs(model, enc, prompts, list(task.labels))
    rows = [(task, ex, opt) for ex in exs for opt in task.labels]
    with torch.no_grad():
        full = sequence_logprob(model, TrainCollator(enc)(rows), enc.kind).view(len(exs), len(task.labels))
    torch.testing.assert_close(scores, full, atol=1e-4, rtol=1e-5)
    assert lengths.tolist() == [len(enc.target_ids(o)) for o in task.labels]


@pytest.mark.parametrize("alias", ["tiny-llama", "tiny-t5"])
def test_score_mode_predicts_what_rank_predicts(alias: str) -> None:
    model, enc = _setup(alias)
    acc = Accelerator(cpu=True)
    stream = fixture_stream(test=12)
    for task in stream.tasks:
        ranked = Evaluator(enc, EvalConfig(mode="rank"), acc).evaluate(model, task, task.test)
        scored = Evaluator(enc, EvalConfig(mode="score", batch_size=5), acc).evaluate(model, task, task.test)
        assert [r["prediction"] for r in scored.predictions] == [r["prediction"] for r in ranked.predictions]
        assert scored.accuracy == ranked.accuracy


def test_score_norm_variants_run_and_differ_from_raw() -> None:
    model, enc = _setup("tiny-llama")
    acc = Accelerator(cpu=True)
    task = fixture_stream(test=12).tasks[1]
    for norm in ("length", "pmi"):
        out = Evaluator(enc, EvalConfig(mode="score", score_norm=norm), acc).evaluate(model, task, task.test)
        assert out.n == 12
        assert {r["prediction"] for r in out.predictions} <= set(task.labels)


def test_normalize_scores_by_hand() -> None:
    scores = torch.tensor([[-2.0, -3.0], [-6.0, -4.0]])
    lengths = torch.tensor([1.0, 4.0])
    prior = torch.tensor([-1.0, -3.5])
    assert torch.equal(normalize_scores(scores, lengths, None, "none"), scores)
    assert torch.equal(normalize_scores(scores, lengths, None, "length"), torch.tensor([[-2.0, -0.75], [-6.0, -1.0]]))
    assert torch.equal(normalize_scores(scores, lengths, prior, "pmi"), torch.tensor([[-1.0, 0.5], [-5.0, -0.5]]))
    with pytest.raises(ValueError, match="content-free"):
        normalize_scores(scores, lengths, None, "pmi")
    with pytest.raises(ValueError, match="normalization must be one of"):
        normalize_scores(scores, lengths, None, "softmax")
