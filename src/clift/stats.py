"""Uncertainty of the numbers clift shows: bootstrap intervals per run, t-intervals and paired differences per suite.

Pure functions of per-example correctness and of per-run metric values.

Per run (:func:`bootstrap_run`): the test examples of each task are a sample, so every cell
``R[i, j]`` and every metric has sampling error. A resample draws, for every task ``j``, ``n_j`` of its
test examples with replacement and applies the *same* draw to every stage's evaluation of task ``j``
(the same examples are evaluated after every stage, so cells of one task are paired). The interval is
the percentile interval ``[q_{α/2}, q_{1−α/2}]`` of the statistic over the resamples.

Per suite (:func:`t_interval`): over ``n`` runs (orders × seeds) the mean ``x̄``, the sample standard
deviation ``s`` and the interval ``x̄ ± t_{1−α/2, n−1} · s / √n``. :func:`paired_differences` pairs a
method's runs with a reference method's runs of the same (order, seed) and gives the same interval for
the mean difference; an interval that excludes 0 is a *resolved* difference, unless it has zero width
(every pair differed by the same amount: no spread to measure, so it resolves nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clift import metrics

Interval = tuple[float, float]


@dataclass(frozen=True)
class Summary:
    """Mean, spread and 95 % interval of a sample of run-level values.

    Attributes:
        n: number of values.
        mean: their mean.
        std: sample standard deviation (ddof 1); None for n = 1.
        low / high: the t-interval; None for n = 1 (no interval from one value).
    """

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None

    @property
    def spread(self) -> bool:
        """True when the values differ (``s > 0``, up to rounding): only then does the interval measure anything.

        Run metrics move in whole test examples, so a few runs can agree exactly by chance (two seeds whose
        BWT differences are both +3.0); their interval then has zero width, which is no evidence of precision.
        """
        return self.std is not None and self.std > 1e-9 * max(1.0, abs(self.mean))

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 0 (a difference the data resolve) and has a width (:attr:`spread`)."""
        return self.spread and self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "ci95": None if self.low is None else [self.low, self.high],
        }


def t_interval(values: Sequence[float], level: float = 0.95) -> Summary:
    """Mean and Student-t interval ``x̄ ± t_{(1+level)/2, n−1} · s/√n`` of ``values``.

    Raises:
        ValueError: for an empty sample or a level outside (0, 1).
    """
    from scipy.stats import t as student_t

    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("t_interval needs at least one value.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    mean = float(x.mean())
    if x.size == 1:
        return Summary(1, mean, None, None, None)
    std = float(x.std(ddof=1))
    half = float(student_t.ppf((1 + level) / 2, x.size - 1)) * std / math.sqrt(x.size)
    return Summary(int(x.size), mean, std, mean - half, mean + half)


def paired_differences(
    method: Mapping[Any, float], reference: Mapping[Any, float], level: float = 0.95
) -> Summary | None:
    """The mean of ``method[k] − reference[k]`` over the keys both have (e.g. (order, seed)), with its t-interval.

    Returns:
        None when no key is shared.
    """
    keys = sorted(set(method) & set(reference), key=repr)
    if not keys:
        return None
    return t_interval([method[k] - reference[k] for k in keys], level)


def ratio_of_means(
    method: Sequence[float], reference: Sequence[float], n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, Interval]:
    """``mean(method) / mean(reference)`` and its percentile-bootstrap interval (e.g. a per-step time ratio).

    Each resample draws both samples with replacement, independently (the two methods' steps are not
    paired), and takes the ratio of their means.

    Raises:
        ValueError: for an empty sample or a reference mean that is not positive.
    """
    a, b = np.asarray(method, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.size == 0 or b.size == 0 or b.mean() <= 0:
        raise ValueError("ratio_of_means needs non-empty samples and a positive reference mean.")
    rng = np.random.default_rng(seed)
    ra = a[rng.integers(0, a.size, size=(n_resamples, a.size))].mean(axis=1)
    rb = b[rng.integers(0, b.size, size=(n_resamples, b.size))].mean(axis=1)
    return float(a.mean() / b.mean()), _percentile(ra / rb, level)


# --------------------------------------------------------------------------------------------------
# bootstrap of one run
# --------------------------------------------------------------------------------------------------

MetricFn = Callable[[np.ndarray, np.ndarray | None], float | None]

RUN_METRICS: dict[str, MetricFn] = {
    "aa": lambda R, b: metrics.average_accuracy(R),
    "bwt": lambda R, b: metrics.backward_transfer(R),
    "fwt": lambda R, b: None if b is None else metrics.forward_transfer(R, b),
    "forgetting": lambda R, b: metrics.forgetting(R),
}


def _resampled_cells(correct: Sequence[Sequence[np.ndarray]], n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, rows, tasks) accuracies (percent), one shared example draw per task and resample."""
    rows, tasks = len(correct), len(correct[0])
    out = np.empty((n_resamples, rows, tasks))
    for j in range(tasks):
        c = np.stack([np.asarray(correct[i][j], dtype=np.float64) for i in range(rows)])  # (rows, n_j)
        n = c.shape[1]
        if n == 0:
            out[:, :, j] = np.nan
            continue
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples)  # (B, n_j) counts of each example
        out[:, :, j] = 100.0 * (weights @ c.T) / n
    return out


def _percentile(values: np.ndarray, level: float) -> Interval:
    a = (1 - level) / 2
    lo, hi = np.percentile(values, [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def bootstrap_run(
    correct: Sequence[Sequence[np.ndarray]],
    zero_shot: Sequence[np.ndarray] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap intervals of every cell of R and of AA, BWT, FWT and forgetting.

    Args:
        correct: ``correct[i][j]`` is the 0/1 vector (n_j,) of task ``j``'s test examples after stage ``i``,
            in the same example order at every stage.
        zero_shot: the base model's 0/1 vectors per task (n_j,), for FWT; None leaves FWT out.
        n_resamples: bootstrap resamples (≥ 1000 for a 95 % interval).
        seed: seeds the resampling (the same seed gives the same intervals).
        level: coverage of the interval.

    Returns:
        ``{"n_resamples", "seed", "level", "cells": [[ [lo, hi], ...] per row], "zero_shot": [[lo, hi], ...] | None,
        "metrics": {name: [lo, hi] | None}}`` (percent).

    Raises:
        ValueError: for an empty or ragged input, rows whose per-task lengths disagree, or n_resamples < 1.
    """
    if not correct or not correct[0]:
        raise ValueError("bootstrap_run needs at least one stage and one task.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}.")
    tasks = len(correct[0])
    lengths = [len(correct[0][j]) for j in range(tasks)]
    for i, row in enumerate(correct):
        if [len(c) for c in row] != lengths:
            raise ValueError(f"stage {i} has per-task example counts {[len(c) for c in row]}, expected {lengths}.")
    rows = [list(r) for r in correct]
    if zero_shot is not None:
        if [len(c) for c in zero_shot] != lengths:
            raise ValueError(
                f"the zero-shot row has per-task counts {[len(c) for c in zero_shot]}, expected {lengths}."
            )
        rows = [list(zero_shot), *rows]
    rng = np.random.default_rng(seed)
    cube = _resampled_cells(rows, n_resamples, rng)  # (B, [1 +] stages, tasks)
    base = cube[:, 0] if zero_shot is not None else None
    mats = cube[:, 1:] if zero_shot is not None else cube
    out_metrics: dict[str, Interval | None] = {}
    for name, fn in RUN_METRICS.items():
        vals = [fn(mats[k], None if base is None else base[k]) for k in range(n_resamples)]
        out_metrics[name] = None if vals[0] is None else _percentile(np.asarray(vals, dtype=np.float64), level)
    cells = [[list(_percentile(mats[:, i, j], level)) for j in range(tasks)] for i in range(mats.shape[1])]
    return {
        "n_resamples": n_resamples,
        "seed": seed,
        "level": level,
        "cells": cells,
        "zero_shot": None if base is None else [list(_percentile(base[:, j], level)) for j in range(tasks)],
        "metrics": {k: None if v is None else list(v) for k, v in out_metrics.items()},
    }
