"""The PNG charts of ``clift report`` and ``clift compare``: matrix heatmaps, forgetting curves, metric bars
with 95 % intervals, and the data-efficiency curve of a budget sweep. Needs matplotlib
(``pip install 'clift[report]'``).

A module of its own so that the suite (which draws the data-efficiency curve) and the report (which uses
the suite's aggregation) do not import each other.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from clift.errors import CliftError
from clift.results import RunRecord


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise CliftError("clift report needs matplotlib; install it with `pip install 'clift[report]'`.") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def heatmap(record: RunRecord, path: Path) -> Path:
    """PNG heatmap of R: rows = zero-shot + one per stage, columns = tasks, each cell annotated."""
    plt = _plt()
    rows = ([record.zero_shot] if record.zero_shot else []) + record.matrix
    labels = (["zero-shot"] if record.zero_shot else []) + [f"{i + 1}. {s}" for i, s in enumerate(record.stages)]
    tasks = record.tasks
    fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 2.5, 0.55 * len(rows) + 1.6))
    data = [[math.nan if v is None else v for v in row] for row in rows]
    im = ax.imshow(data, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if v < 60 else "black", fontsize=8)
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training")
    run = record.run
    metric = record.metric or "accuracy"
    ax.set_title(f"R — {run.method or '?'} on {run.stream or '?'} ({metric} %)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def forgetting_curves(record: RunRecord, path: Path) -> Path:
    """PNG: each task's accuracy after every stage (x = 0 is zero-shot); a dot marks its own stage."""
    plt = _plt()
    R, b, tasks = record.matrix, record.zero_shot, record.tasks
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = list(range(0 if b else 1, len(R) + 1))
    for j, task in enumerate(tasks):
        ys = ([b[j]] if b else []) + [row[j] for row in R]
        (line,) = ax.plot(xs, ys, marker=".", label=task)
        if j < len(R) and len(R) == len(tasks):  # sequential runs: task j is trained in stage j
            ax.plot([j + 1], [R[j][j]], "o", color=line.get_color(), markersize=8)
    ax.set_xticks(xs, (["0-shot"] if b else []) + [str(i) for i in range(1, len(R) + 1)])
    ax.set_xlabel("after stage")
    ax.set_ylabel(f"{record.metric or 'accuracy'} (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"accuracy over the stream — {record.run.method or '?'}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: rows that are points of reference, not continual methods: drawn apart and in grey
REFERENCE_ROWS = ("zero-shot", "per_task", "mtl")


def metric_bars(rows: list[dict[str, Any]], metric: str, path: Path, ylabel: str) -> Path:
    """PNG bar chart of one metric's mean per row, with its 95 % interval (no bar for a single run).

    Continual methods come first in blue; reference rows (zero-shot, ``per_task``, ``mtl``) follow after a
    gap, in grey, so they are never read as competing methods.
    """
    plt = _plt()
    rows = [r for r in rows if r[metric]["mean"] is not None]
    methods = [r for r in rows if r["label"] not in REFERENCE_ROWS]
    refs = [r for r in rows if r["label"] in REFERENCE_ROWS]
    xs = list(range(len(methods))) + [len(methods) + 0.6 + i for i in range(len(refs))]
    ordered = methods + refs
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(ordered) + 1.5), 3.6))
    for x, r in zip(xs, ordered, strict=True):
        stat = r[metric]
        ci = stat.get("ci95")
        err = None if not ci else [[stat["mean"] - ci[0]], [ci[1] - stat["mean"]]]
        color = "#9a9a9a" if r["label"] in REFERENCE_ROWS else "#4c72b0"
        ax.bar([x], [stat["mean"]], yerr=err, capsize=3, color=color)
    ax.set_xticks(xs, [f"{r['label']} (n={r[metric]['n']})" for r in ordered], rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def budget_curve(rows: list[dict[str, Any]], path: Path) -> Path:
    """PNG data-efficiency curve: AA and BWT against training examples per task, one line per method.

    Args:
        rows: suite rows with ``entry`` (the method entry's label) and ``budget``; rows without a budget
            (the zero-shot row) are left out. Each point is the mean over orders × seeds with its 95 %
            interval as an error bar (none for a single run); the methods are drawn slightly apart around
            each budget, which is marked on the (log) x axis.
        path: the PNG to write.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8))
    entries = list(dict.fromkeys(r["entry"] for r in rows if r.get("budget") is not None))
    budgets = sorted({r["budget"] for r in rows if r.get("budget") is not None})
    for ax, metric, ylabel in ((axes[0], "aa", "AA (%)"), (axes[1], "bwt", "BWT (points)")):
        for i, entry in enumerate(entries):
            # methods side by side around each budget, so their error bars do not hide each other
            dodge = 1.0 + 0.025 * (i - (len(entries) - 1) / 2)
            pts = sorted(
                (r["budget"], r[metric]) for r in rows if r.get("entry") == entry and r[metric]["mean"] is not None
            )
            if not pts:
                continue
            xs = [b * dodge for b, _ in pts]
            ys = [st["mean"] for _, st in pts]
            err = [
                [st["mean"] - st["ci95"][0] if st.get("ci95") else 0.0 for _, st in pts],
                [st["ci95"][1] - st["mean"] if st.get("ci95") else 0.0 for _, st in pts],
            ]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=entry)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("training examples per task")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[1].axhline(0, color="black", linewidth=0.6)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def aa_bars(rows: list[dict[str, Any]], path: Path) -> Path:
    """PNG bar chart of AA per row with 95 % interval bars (see :func:`metric_bars`)."""
    return metric_bars(rows, "aa", path, "AA (%)")
