"""Presentation: the suite table and ``suite.md`` (a pure function of the aggregated rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clift.suite.aggregation import METRICS
from clift.suite.schema import Suite


def suite_meta(suite: Suite) -> dict[str, Any]:
    """The facts ``suite.md`` lists above its table: model, benchmark, grid, budget, evaluation mode."""
    base = suite.base
    data, train, ev = (base.get(k) if isinstance(base.get(k), dict) else {} for k in ("data", "train", "eval"))
    model = base.get("model")
    model_name = model.get("name") if isinstance(model, dict) else model
    budget = {k: data.get(k) for k in ("train_per_task", "test_per_task", "max_source_length") if k in data}
    budget.update({k: train.get(k) for k in ("max_steps", "epochs", "batch_size", "lr") if k in train})
    return {
        "name": suite.name,
        "model": model_name or "smollm2-135m (default)",
        "benchmark": data.get("benchmark", "fixture (default)"),
        "orders": ", ".join(suite.orders),
        "seeds": ", ".join(str(s) for s in suite.seeds) + _own_seeds(suite),
        "budget": ", ".join(f"{k}={v}" for k, v in budget.items()) or None,
        "eval": ev.get("mode"),
        **_metric_fact(data),
        "references": list(suite.references),
    }


def _own_seeds(suite: Suite) -> str:
    """`` (deal-retention: 42, 43, 44)`` for entries with their own ``seeds``; empty when none has."""
    own = [f"{m.label}: {', '.join(map(str, m.seeds))}" for m in suite.methods if m.seeds]
    return f" ({'; '.join(own)})" if own else ""


def _metric_fact(data: dict[str, Any]) -> dict[str, str]:
    """``{"metric": ...}`` for a free-form benchmark (its AA, BWT … are of that metric); else nothing."""
    from clift.data.derived import DERIVED

    bench = DERIVED.get(str(data.get("benchmark")))
    return {"metric": f"{bench.metric} F1 (%), free-form tasks"} if bench is not None else {}


def _cell(stat: Mapping[str, Any], digits: int = 1, interval: bool = True) -> str:
    """``mean ± std [95 % interval]`` (no ± and no interval for one run)."""
    if stat.get("mean") is None:
        return "—"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std']:.{digits}f}"
    ci = stat.get("ci95")
    if interval and ci:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def _diff_cell(diff: Mapping[str, Any] | None) -> str:
    if not diff:
        return "—"
    text = f"{diff['mean']:+.1f}"
    if diff.get("ci95"):
        lo, hi = diff["ci95"]
        text += f" [{lo:+.1f}, {hi:+.1f}]"
    return f"**{text}** ✓" if diff.get("resolved") else text


def format_paired(rows: Sequence[Mapping[str, Any]]) -> str:
    """Paired differences against the reference as a Markdown table (✓ and bold: resolved, see ``Summary.resolved``)."""
    if not rows:
        return ""
    swept = any(r.get("budget") is not None for r in rows)
    ref = f"{rows[0].get('reference_entry') or 'reference'} at the same budget" if swept else rows[0]["reference"]
    lines = [
        f"| method − {ref} | pairs | ΔAA | ΔBWT | Δforgetting |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = (r.get("aa") or {}).get("n", 0)
        lines.append(
            f"| {r['label']} | {n} | {_diff_cell(r.get('aa'))} | {_diff_cell(r.get('bwt'))} | "
            f"{_diff_cell(r.get('forgetting'))} |"
        )
    return "\n".join(lines)


def format_budgets(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    """One metric of a budget sweep as method entry × training budget (``mean [95 % interval] (n)``)."""
    swept = [r for r in rows if r.get("budget") is not None]
    if not swept:
        return ""
    budgets = sorted({int(r["budget"]) for r in swept})
    cells = {(r["entry"], r["budget"]): r[metric] for r in swept}
    lines = ["| method | " + " | ".join(f"n = {b}" for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for entry in dict.fromkeys(r["entry"] for r in swept):
        shown = []
        for b in budgets:
            stat = cells.get((entry, b))
            shown.append("—" if stat is None else f"{_cell(stat)} ({stat['n']})")
        lines.append(f"| {entry} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a Markdown table (AA, BWT, FWT, forgetting in points; † = needs the task id)."""
    head = "| method | runs | AA | BWT | FWT | forgetting | wall time (s) | peak memory (MB) |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        label = f"{r['label']} †" if r.get("needs_task_id") else str(r["label"])
        peak = r.get("peak_memory_mb")
        cells = [
            label,
            str(r["n"]),
            *(_cell(r[m]) for m in METRICS),
            _cell(r["wall_seconds"], 0, interval=False),
            "—" if peak is None else f"{peak:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _threads(count: int | None) -> str:
    return "unrecorded" if count is None else f"{count} thread" + ("" if count == 1 else "s")


def _thread_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Where wall times are not comparable: rows whose runs mixed CPU thread counts, and rows run with one
    count other than the one most rows used (a serial 2-thread row beside rows run two at a time, 1 thread each)."""
    out: list[str] = []
    mixed = [r for r in rows if len(r.get("torch_threads") or []) > 1]
    if mixed:
        parts = [f"{r['label']} ({', '.join(_threads(t) for t in r['torch_threads'])})" for r in mixed]
        out.append(
            "Wall time mixes runs made with different CPU thread counts (`environment.torch_threads` in "
            f"results.json), so it is not comparable across those runs: {'; '.join(parts)}."
        )
    groups: dict[Any, list[str]] = {}
    for r in rows:
        if len(r.get("torch_threads") or []) == 1:
            groups.setdefault(r["torch_threads"][0], []).append(str(r["label"]))
    if len(groups) < 2:
        return out
    (usual, most), (_, runner_up) = sorted(groups.items(), key=lambda g: len(g[1]), reverse=True)[:2]
    lead = "Wall time compares only between rows run with the same CPU thread count: "
    if len(most) > len(runner_up):  # one count is the usual one: name the rows that differ from it
        others = [f"{label} ({_threads(t)})" for t, labels in groups.items() if t != usual for label in labels]
        # runs made before clift recorded the count: "ran with unrecorded" would not be a sentence
        ran = "an unrecorded thread count" if usual is None else _threads(usual)
        out.append(f"{lead}most rows ran with {ran}, these did not: {'; '.join(others)}.")
    else:  # a tie: no count is the usual one, so name every group
        parts = [f"{_threads(t)}: {', '.join(labels)}" for t, labels in groups.items()]
        out.append(f"{lead}the rows split between thread counts ({'; '.join(parts)}).")
    return out


def _paired_sections(
    paired: Sequence[Mapping[str, Any]], references: Sequence[str], labels: Sequence[str] = ()
) -> list[str]:
    """One paired-difference table per reference (in ``references`` order), and a line for a reference with
    nothing to pair: no finished runs of its own (not among ``labels``, the table's rows), or no other row."""
    out: list[str] = []
    # a budget sweep pairs each row with the reference entry's row at the same budget
    entry = [str(p.get("reference_entry") or p["reference"]) for p in paired]
    for against in dict.fromkeys([*references, *entry]):
        rows = [p for p, e in zip(paired, entry, strict=True) if e == against]
        if not rows:
            why = "no other row has a run to pair with it" if against in labels else "it has no finished runs"
            out += ["", f"No paired differences against `{against}`: {why} in this table."]
            continue
        swept = any(p.get("budget") is not None for p in rows)
        shown = f"`{against}`" + (" at the same budget" if swept else "")
        out += [
            "",
            f"Paired differences against {shown}, run by run over the same (order, seed): "
            "mean difference [95 % t-interval]; **bold ✓** where the interval excludes 0 (a resolved difference), "
            "unless it has zero width (every pair differed alike: no spread measured).",
            "",
            format_paired(rows),
        ]
    return [*out, ""] if out else out


def format_markdown(
    rows: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
    command: str | None = None,
    paired: Sequence[Mapping[str, Any]] = (),
) -> str:
    """``suite.md``: a short header (model, benchmark, grid, budget, command), the table, its legend and the
    paired differences against the reference method."""
    meta = meta or {}
    out = [f"# Suite: {meta.get('name', 'suite')}", ""]
    keys = ("model", "benchmark", "orders", "seeds", "budget", "eval", "metric")
    facts = [(k, meta[k]) for k in keys if meta.get(k)]
    out += [f"- {k}: {v}" for k, v in facts]
    if command:
        out += [f"- command: `{command}`"]
    if facts or command:
        out.append("")
    out += [format_table(rows), ""]
    out.append(
        "AA, BWT, FWT and forgetting in percentage points (protocol.md §4), mean ± sample std over orders × "
        "seeds [95 % t-interval of the mean] (no ± and no interval for a single run); `runs` = runs aggregated "
        "(n). † needs the task id at inference. Wall time "
        "is the whole run (model load, zero-shot row, training, evaluation after every stage); peak memory is "
        "the largest per-stage peak of any run (GPU: max allocated; CPU: the process's max RSS)."
    )
    if meta.get("isolation") == "inline":
        out.append("Runs made inline share one process, so a CPU peak includes earlier runs of the same process.")
    out += _thread_notes(rows)
    if any(r.get("budget") is not None for r in rows):
        out += [
            "",
            "Data efficiency (training examples per task; figure: `budget_curve.png`), mean ± std "
            "[95 % t-interval] (runs). AA:",
            "",
            format_budgets(rows, "aa"),
            "",
            "BWT:",
            "",
            format_budgets(rows, "bwt"),
        ]
    out += _paired_sections(paired, meta.get("references") or [], [str(r["label"]) for r in rows])
    missing = meta.get("missing") or []
    if missing:
        out.append(f"Not finished (left out of the table): {', '.join(missing)}.")
    return "\n".join(out) + "\n"
