"""Per-example scores of generated text, and the per-metric matrices of a run.

A label task is scored by ``accuracy`` (normalised exact match against its label, the papers' metric);
a free-form task (no label set) by ``exact_match``, ``rouge1`` or ``rougeL``: the F1 of Google's
``rouge-score`` package with Porter stemming, as DEAL reports ROUGE-1. Every evaluation also computes
the :data:`SECONDARY` metrics for every task, so a run has one matrix R per metric (label streams get
"AA / R-1" as in DEAL's Table 1) and the continual metrics (AA, BWT, FWT, forgetting) for each.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from clift.data.task import normalize_answer
from clift.errors import ConfigError

#: the metrics a task may be scored by; ``accuracy`` is for label tasks, the rest for free-form ones
METRICS = ("accuracy", "exact_match", "rouge1", "rougeL")
FREE_FORM_METRICS = ("exact_match", "rouge1", "rougeL")
#: computed for every task of every run, next to the task's own metric
SECONDARY = ("exact_match", "rouge1", "rougeL")
#: short names for tables ("AA / R-1")
SHORT = {"accuracy": "Acc", "exact_match": "EM", "rouge1": "R-1", "rougeL": "R-L"}


def check_metric(metric: str, free_form: bool, where: str) -> str:
    """``metric`` if a task of this kind may use it.

    Raises:
        ConfigError: for an unknown metric, or ``accuracy`` on a task without a label set.
    """
    allowed = FREE_FORM_METRICS if free_form else ("accuracy", *FREE_FORM_METRICS)
    if metric not in allowed:
        kind = "a free-form task (no labels)" if free_form else "a label task"
        raise ConfigError(
            f"{where}: metric {metric!r} is not allowed for {kind}; use one of {', '.join(allowed)}"
            + (" (or give the task a label set to use accuracy)." if free_form and metric == "accuracy" else ".")
        )
    return metric


@lru_cache(maxsize=1)
def _scorer() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:  # a declared dependency; only a broken install lacks it
        raise ConfigError(
            "ROUGE needs the 'rouge-score' package, which is missing; reinstall clift (`pip install -e .`) "
            "or `pip install rouge-score`."
        ) from err
    import logging

    # rouge-score logs "Using default tokenizer." at INFO through absl, which `clift run` would print
    logging.getLogger("absl").setLevel(logging.WARNING)
    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_f1(prediction: str, reference: str) -> dict[str, float]:
    """``{"rouge1": F1, "rougeL": F1}`` of ``prediction`` against ``reference`` (0–1, stemmed)."""
    scores = _scorer().score(reference, prediction)
    return {"rouge1": scores["rouge1"].fmeasure, "rougeL": scores["rougeL"].fmeasure}


def example_scores(prediction: str, reference: str) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one example, each in 0–1."""
    exact = float(normalize_answer(prediction) == normalize_answer(reference))
    return {"accuracy": exact, "exact_match": exact, **rouge_f1(prediction, reference)}


def mean_percent(values: Sequence[float]) -> float:
    """The mean of per-example scores as a percentage (NaN for no examples)."""
    return 100.0 * sum(values) / len(values) if values else float("nan")


def stream_metric(task_metrics: Sequence[str]) -> str:
    """The name of a stream's primary metric: the tasks' common metric, or ``mixed``."""
    names = set(task_metrics)
    return task_metrics[0] if len(names) == 1 else "mixed"


def metric_fields(task_metrics: Sequence[str]) -> dict[str, Any]:
    """The :class:`~clift.results.RunRecord` fields a new run starts with: its metric names, empty ``by_metric``."""
    from clift.results import MetricMatrix

    return {
        "metric": stream_metric(task_metrics),
        "task_metrics": list(task_metrics),
        "by_metric": {m: MetricMatrix() for m in SECONDARY},
    }


def secondary_rows(evals: Sequence[Any]) -> dict[str, list[float]]:
    """Metric → one row (a value per task, percent) of every :data:`SECONDARY` metric, from ``TaskEval`` s."""
    return {m: [e.scores[m] for e in evals] for m in SECONDARY}
