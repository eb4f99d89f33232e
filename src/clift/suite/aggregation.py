"""Aggregation (pure): finished runs' results → one table row per label, plus a zero-shot row."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from clift.results import RunRecord
from clift.suite.schema import dedupe

METRICS = ("aa", "bwt", "fwt", "forgetting")


def _stat(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation (ddof 1; None for fewer than two values) of the non-None values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return {"mean": mean, "std": std, "n": len(vals)}


def as_record(results: RunRecord | Mapping[str, Any]) -> RunRecord:
    """A run's :class:`~clift.results.RunRecord`; a results.json mapping is read into one."""
    return results if isinstance(results, RunRecord) else RunRecord.from_dict(results)


def peak_memory_mb(results: RunRecord | Mapping[str, Any]) -> float | None:
    """The largest ``timings.stages[].peak_memory_mb`` of one run (None when not recorded)."""
    peaks = [s.peak_memory_mb for s in as_record(results).timings.stages if s.peak_memory_mb is not None]
    return max(peaks) if peaks else None


def _zero_shot_row(zero: Mapping[tuple[Any, ...], float]) -> dict[str, Any]:
    empty = {"mean": None, "std": None, "n": 0}
    return {
        "label": "zero-shot",
        "method": None,
        "n": len(zero),
        "orders": [],
        "seeds": [],
        "needs_task_id": False,
        "aa": _stat(list(zero.values())),
        **{m: dict(empty) for m in METRICS[1:]},
        "wall_seconds": dict(empty),
        "peak_memory_mb": None,
        "torch_threads": [],
    }


def _label_row(label: str, group: Sequence[RunRecord]) -> dict[str, Any]:
    runs = [g.run for g in group]
    peaks = [p for p in (peak_memory_mb(g) for g in group) if p is not None]
    methods = dedupe([str(r.method) for r in runs])
    row: dict[str, Any] = {
        "label": label,
        "method": methods[0] if len(methods) == 1 else methods,
        "n": len(group),
        "orders": sorted({r.stream.rsplit("/", 1)[-1] for r in runs}),
        "seeds": sorted({r.seed for r in runs if r.seed is not None}),
        "needs_task_id": any(bool(r.needs_task_id) for r in runs),
    }
    for m in METRICS:
        row[m] = _stat([g.metrics.get(m) for g in group])
    row["wall_seconds"] = _stat([g.timings.total_seconds for g in group])
    row["peak_memory_mb"] = max(peaks) if peaks else None
    row["torch_threads"] = sorted(
        {g.environment.torch_threads if g.environment is not None else None for g in group},
        key=lambda t: (t is None, t or 0),
    )
    return row


def aggregate(
    results: Sequence[RunRecord | Mapping[str, Any]], labels: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Table rows from finished runs' records: a zero-shot row, then one row per label.

    Args:
        results: the runs' :class:`~clift.results.RunRecord` (or results.json mappings, read into one),
            ``status: complete``; ``metrics``, ``run`` and ``timings`` are read, ``zero_shot`` feeds the
            zero-shot row.
        labels: the row each result belongs to (same length); default: each run's method name.

    Returns:
        Rows in first-appearance order. Each row has ``label``, ``method``, ``n`` (runs), ``orders``,
        ``seeds``, ``needs_task_id``, one ``{"mean", "std", "n"}`` per metric (``aa``, ``bwt``, ``fwt``,
        ``forgetting``; std is the sample std over orders × seeds, None for one run), ``wall_seconds``
        (the same over ``timings.total_seconds``), ``peak_memory_mb`` (the largest stage peak of any
        of its runs) and ``torch_threads`` (the distinct CPU thread counts its runs recorded, ``None``
        for runs made before clift recorded it). The zero-shot row (``label: zero-shot``, only AA)
        averages the mean zero-shot accuracy of each distinct (model, stream, seed); it is omitted when
        no run has a zero-shot row.

    Raises:
        ValueError: for a results dict that is not complete, or labels of the wrong length.
    """
    records = [as_record(r) for r in results]
    if labels is None:
        labels = [r.run.method or "?" for r in records]
    if len(labels) != len(records):
        raise ValueError(f"aggregate got {len(records)} results but {len(labels)} labels; give one label per run.")
    groups: dict[str, list[RunRecord]] = {}
    zero: dict[tuple[Any, ...], float] = {}
    for label, rec in zip(labels, records, strict=True):
        run = rec.run
        if not rec.complete:
            raise ValueError(
                f"run {run.name or label!r} has status {rec.status!r}; only complete runs can be "
                "aggregated (finish or rerun it)."
            )
        groups.setdefault(label, []).append(rec)
        b = rec.zero_shot
        if b:
            zero.setdefault((run.model, run.stream, run.seed), sum(b) / len(b))  # type: ignore[arg-type]
    rows = [_zero_shot_row(zero)] if zero else []
    return rows + [_label_row(label, group) for label, group in groups.items()]
