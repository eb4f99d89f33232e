"""Aggregation (pure): finished runs' results → one table row per label, plus a zero-shot row."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from clift.results import RunRecord
from clift.stats import paired_differences, t_interval
from clift.suite.schema import budget_label, dedupe

METRICS = ("aa", "bwt", "fwt", "forgetting")


def _stat(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation (ddof 1) and 95 % t-interval of the non-None values.

    ``std`` and ``ci95`` are None for fewer than two values (no spread, no interval from one run).
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "ci95": None}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    summary = t_interval(vals)
    ci = None if summary.low is None else [summary.low, summary.high]
    return {"mean": mean, "std": std, "n": len(vals), "ci95": ci}


def as_record(results: RunRecord | Mapping[str, Any]) -> RunRecord:
    """A run's :class:`~clift.results.RunRecord`; a results.json mapping is read into one."""
    return results if isinstance(results, RunRecord) else RunRecord.from_dict(results)


def peak_memory_mb(results: RunRecord | Mapping[str, Any]) -> float | None:
    """The largest ``timings.stages[].peak_memory_mb`` of one run (None when not recorded)."""
    peaks = [s.peak_memory_mb for s in as_record(results).timings.stages if s.peak_memory_mb is not None]
    return max(peaks) if peaks else None


def _zero_shot_row(zero: Mapping[tuple[Any, ...], float]) -> dict[str, Any]:
    empty = {"mean": None, "std": None, "n": 0, "ci95": None}
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


PAIRED_METRICS = ("aa", "bwt", "forgetting")


def pair_key(record: RunRecord) -> tuple[str, Any]:
    """(order, seed) of a run: the unit over which two methods are paired."""
    return record.run.stream.rsplit("/", 1)[-1], record.run.seed


def paired_rows(
    results: Sequence[RunRecord | Mapping[str, Any]], labels: Sequence[str], reference: str
) -> list[dict[str, Any]]:
    """Each label's difference to ``reference``, paired run by run over the same (order, seed).

    ``d_k = metric(label, k) − metric(reference, k)`` for every (order, seed) ``k`` both have; the row gives
    the mean of ``d`` and its 95 % t-interval (:func:`clift.stats.paired_differences`) per metric in
    :data:`PAIRED_METRICS`, and ``resolved`` where the interval excludes 0.

    Returns:
        One row per label other than ``reference`` (first-appearance order); empty when ``reference`` is
        not among the labels.
    """
    records = [as_record(r) for r in results]
    by_label: dict[str, dict[tuple[str, Any], RunRecord]] = {}
    for label, rec in zip(labels, records, strict=True):
        by_label.setdefault(label, {})[pair_key(rec)] = rec
    if reference not in by_label:
        return []
    ref = by_label[reference]
    rows = []
    for label, runs in by_label.items():
        if label == reference:
            continue
        row: dict[str, Any] = {"label": label, "reference": reference}
        for m in PAIRED_METRICS:
            mine = {k: r.metrics[m] for k, r in runs.items() if r.metrics.get(m) is not None}
            theirs = {k: r.metrics[m] for k, r in ref.items() if r.metrics.get(m) is not None}
            diff = paired_differences(mine, theirs)
            row[m] = None if diff is None else {**diff.to_dict(), "resolved": diff.resolved}
        rows.append(row)
    return rows


def budget_groups(budgets: Sequence[int | None]) -> list[tuple[int | None, list[int]]]:
    """``[(budget, indices of the runs at that budget)]`` in first-appearance order (one group without a sweep)."""
    return [(b, [i for i, x in enumerate(budgets) if x == b]) for b in dict.fromkeys(budgets)]


def paired_by_budget(
    results: Sequence[RunRecord | Mapping[str, Any]],
    labels: Sequence[str],
    budgets: Sequence[int | None],
    reference: str,
) -> list[dict[str, Any]]:
    """:func:`paired_rows` within each training budget, against the reference entry's row at that budget.

    Args:
        results / labels: as for :func:`paired_rows`.
        budgets: each run's budget (None for a suite without a sweep: one group).
        reference: the reference method entry's label (``<reference>-n<budget>`` is its row at a budget).

    Returns:
        The rows of every budget in first-appearance order, each with ``budget`` and ``reference_entry`` (the
        reference's entry label) added (swept suites only).
    """
    out: list[dict[str, Any]] = []
    for budget, idx in budget_groups(budgets):
        ref = reference if budget is None else budget_label(reference, budget)
        rows = paired_rows([results[i] for i in idx], [labels[i] for i in idx], ref)
        out += [row if budget is None else {**row, "budget": budget, "reference_entry": reference} for row in rows]
    return out
