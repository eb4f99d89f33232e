"""``clift report``: Markdown and PNG plots for one or several run directories.

For each run: a heatmap of the accuracy matrix R (zero-shot row on top) and each task's accuracy over
the stages (forgetting curves, with a marker where the task was trained). For several runs (orders,
seeds, methods): a mean ± std table per method (the comparison suite's aggregation) and an AA bar
chart. Needs matplotlib (``pip install clift[report]``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from clift import safety
from clift.errors import CliftError
from clift.io import atomic_write_text, relative_path
from clift.results import RESULTS_FILE, RunRecord, format_matrix, read_record


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
    ax.set_title(f"R — {run.method or '?'} on {run.stream or '?'} (accuracy %)", fontsize=10)
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
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"accuracy over the stream — {record.run.method or '?'}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def aa_bars(rows: list[dict[str, Any]], path: Path) -> Path:
    """PNG bar chart of AA (mean ± std) per method row of the aggregated table."""
    plt = _plt()
    rows = [r for r in rows if r["aa"]["mean"] is not None]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.6))
    means = [r["aa"]["mean"] for r in rows]
    stds = [r["aa"]["std"] or 0.0 for r in rows]
    ax.bar(range(len(rows)), means, yerr=stds, capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("AA (%)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _run_label(record: RunRecord, run_dir: Path) -> str:
    return str(record.run.name or run_dir.name)


def write_report(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Write ``report.md`` and PNG plots for ``run_dirs`` into ``out``.

    Args:
        run_dirs: run directories (complete or still running; a running one is plotted as far as it got
            and left out of the summary table).
        out: output folder; default: the single run's folder, or ``./report`` for several runs.

    Returns:
        The path of ``report.md``.

    Raises:
        CliftError: for a folder that holds no results.json.
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise CliftError("clift report needs at least one run directory.")
    for d in dirs:
        if not (d / RESULTS_FILE).is_file():
            raise CliftError(f"{str(d)!r} holds no {RESULTS_FILE}; give folders written by `clift run`.")
    out = Path(out) if out is not None else (dirs[0] / "report" if len(dirs) == 1 else Path("report"))
    records = [read_record(d) for d in dirs]
    safety.claim_folder(out, "report", "choose another folder with --out.")
    lines = ["# clift report", ""]
    complete = [r for r in records if r.complete]
    if len(complete) > 1:
        from clift.suite import aggregate, format_table

        rows = aggregate(complete)
        lines += ["## Summary (mean ± std over runs)", "", format_table(rows), ""]
        lines += [f"![AA per method]({aa_bars(rows, safety.refuse_link_target(out / 'aa.png')).name})", ""]
    used: set[str] = set()
    for d, rec in zip(dirs, records, strict=True):
        label = _run_label(rec, d)
        stem = label
        k = 1
        while stem in used:  # two runs with the same name (e.g. orders) must not overwrite each other's plots
            k += 1
            stem = f"{label}-{k}"
        used.add(stem)
        lines += [
            f"## {label}",
            "",
            f"`{relative_path(d, out)}` — method `{rec.run.method}`, stream `{rec.run.stream}`, status {rec.status}",
            "",
        ]
        if rec.matrix:
            lines += ["```", format_matrix(rec), "```", ""]
            hm = heatmap(rec, safety.refuse_link_target(out / f"{stem}-matrix.png"))
            fc = forgetting_curves(rec, safety.refuse_link_target(out / f"{stem}-curves.png"))
            lines += [f"![accuracy matrix]({hm.name})", f"![accuracy over the stream]({fc.name})", ""]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report
