"""Which runs may be pooled into one mean ± interval: same model, benchmark, task set, budgets and eval.

Averaging an AA over runs is only meaningful when the runs measured the same thing. Two runs are
*poolable* when their :func:`pool_key` is equal: the model, the benchmark (or user stream) and its task
set — orders of one benchmark pool, that is the point of running orders —, the data budgets and the
evaluation mode and split. Methods and seeds may differ (they are what a comparison varies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clift.errors import CliftError

BUDGET_KEYS = ("train_per_task", "dev_per_task", "test_per_task", "max_source_length", "max_target_length")


def pool_key(results: Mapping[str, Any]) -> dict[str, Any]:
    """The fields two runs must share to be averaged together (a dict of JSON values).

    Args:
        results: a run's results.json content (``RunRecord.to_dict()``).
    """
    run = results.get("run") or {}
    data = results.get("data") or {}
    stream = str(run.get("stream") or "")
    benchmark = data.get("benchmark") or data.get("stream") or stream.split("/")[0]
    budgets = results.get("budgets") or {}
    return {
        "model": run.get("model"),
        "benchmark": benchmark,
        "tasks": sorted(results.get("tasks") or []),
        "budgets": {k: budgets.get(k) for k in BUDGET_KEYS},
        "eval_mode": results.get("eval_mode"),
        "eval_split": results.get("eval_split"),
    }


def _describe(key: Mapping[str, Any]) -> str:
    b = key["budgets"]
    return (
        f"{key['model']} · {key['benchmark']} · {key['eval_mode']}/{key['eval_split']} · "
        f"train {b['train_per_task']} test {b['test_per_task']}"
    )


def group_runs(results: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[int]]]:
    """Indices of ``results`` grouped by pool key, in first-seen order, each with a readable label."""
    groups: dict[str, list[int]] = {}
    labels: dict[str, str] = {}
    for i, r in enumerate(results):
        key = pool_key(r)
        ident = repr(sorted(key.items()))
        groups.setdefault(ident, []).append(i)
        labels.setdefault(ident, _describe(key))
    return [(labels[k], idx) for k, idx in groups.items()]


def differing_keys(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The pool-key fields on which ``results`` disagree (budgets named one by one)."""
    keys = [pool_key(r) for r in results]
    out: list[str] = []
    for field in ("model", "benchmark", "tasks", "eval_mode", "eval_split"):
        if len({repr(k[field]) for k in keys}) > 1:
            out.append(field)
    out += [f"budgets.{b}" for b in BUDGET_KEYS if len({repr(k["budgets"][b]) for k in keys}) > 1]
    return out


def check_poolable(results: Sequence[Mapping[str, Any]], names: Sequence[str], command: str) -> None:
    """Refuse to pool runs that measured different things.

    Raises:
        CliftError: naming the differing fields, each value with the runs that have it, and the fix.
    """
    diff = differing_keys(results)
    if not diff:
        return
    lines = []
    for field in diff:
        values: dict[str, list[str]] = {}
        for r, name in zip(results, names, strict=True):
            k = pool_key(r)
            v = k["budgets"][field.split(".", 1)[1]] if field.startswith("budgets.") else k[field]
            values.setdefault(repr(v), []).append(name)
        shown = "; ".join(f"{v} ({', '.join(n[:3])}{' …' if len(n) > 3 else ''})" for v, n in values.items())
        lines.append(f"  {field}: {shown}")
    raise CliftError(
        f"{command} would average runs that measured different things; they differ in "
        f"{', '.join(diff)}:\n" + "\n".join(lines) + "\nGive runs of one setting, or pass --allow-mixed to get one "
        "table per setting."
    )
