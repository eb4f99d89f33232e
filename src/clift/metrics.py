"""Continual-learning metrics as pure functions of the accuracy matrix (protocol.md §4).

``R[i, j]`` is the accuracy on task ``j`` after training task ``i`` (0-based, ``T`` tasks), measured on
every task, seen or not. ``b[j]`` is the zero-shot accuracy of the untouched base model on task ``j``.
Accuracies may be fractions or percentages; the metrics are in the same unit. Metrics that need a
square ``T × T`` matrix (a task sequence) return ``None`` for a single-row matrix (joint training) or
fewer than two tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[Sequence[float]] | np.ndarray


def _matrix(R: ArrayLike) -> np.ndarray:
    m = np.asarray(R, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"the accuracy matrix must be 2-D and non-empty, got shape {m.shape}.")
    return m


def _square(m: np.ndarray) -> bool:
    return m.shape[0] == m.shape[1] and m.shape[0] >= 2


def average_accuracy(R: ArrayLike) -> float:
    """AA = (1/T) Σ_j R[T-1, j]: the macro mean over tasks of the accuracy after the last stage.

    Works for any number of rows (the last row is used), so joint training has an AA too.
    """
    m = _matrix(R)
    return float(m[-1].mean())


def backward_transfer(R: ArrayLike) -> float | None:
    """BWT = 1/(T-1) Σ_{j<T-1} (R[T-1, j] − R[j, j]).

    Negative values mean forgetting: how much the accuracy on each earlier task changed between right
    after learning it and the end of the sequence.
    """
    m = _matrix(R)
    if not _square(m):
        return None
    t = m.shape[0]
    return float(np.mean([m[t - 1, j] - m[j, j] for j in range(t - 1)]))


def forward_transfer(R: ArrayLike, b: Sequence[float] | np.ndarray) -> float | None:
    """FWT = 1/(T-1) Σ_{j>0} (R[j-1, j] − b[j]).

    How much training on tasks ``< j`` helped task ``j`` before it was trained, relative to the base
    model's zero-shot accuracy ``b[j]``.
    """
    m = _matrix(R)
    if not _square(m):
        return None
    base = np.asarray(b, dtype=np.float64)
    if base.shape != (m.shape[1],):
        raise ValueError(f"the zero-shot row must have {m.shape[1]} entries (one per task), got shape {base.shape}.")
    t = m.shape[0]
    return float(np.mean([m[j - 1, j] - base[j] for j in range(1, t)]))


def forgetting(R: ArrayLike) -> float | None:
    """F = 1/(T-1) Σ_{j<T-1} max_{i<T-1} (R[i, j] − R[T-1, j]).

    The mean over all but the last task of the drop from the best accuracy reached at any earlier
    stage to the final accuracy (protocol.md §4 takes the max over every ``i < T-1``). Can be negative
    when every earlier accuracy is below the final one.
    """
    m = _matrix(R)
    if not _square(m):
        return None
    t = m.shape[0]
    return float(np.mean([np.max(m[: t - 1, j]) - m[t - 1, j] for j in range(t - 1)]))


def all_metrics(R: ArrayLike, b: Sequence[float] | np.ndarray | None = None) -> dict[str, float | None]:
    """``{"aa", "bwt", "fwt", "forgetting"}``; ``fwt`` is None without a zero-shot row ``b``."""
    return {
        "aa": average_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, b) if b is not None else None,
        "forgetting": forgetting(R),
    }
