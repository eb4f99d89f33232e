"""``clift report``: Markdown and PNG plots for one or several run directories.

For each run: a heatmap of the accuracy matrix R (zero-shot row on top) and each task's accuracy over
the stages (forgetting curves, with a marker where the task was trained). For several runs (orders,
seeds, methods): a mean ± std table per method (the comparison suite's aggregation) and an AA bar
chart. Needs matplotlib (``pip install clift[report]``).
"""

from __future__ import annotations

from pathlib import Path

from clift import safety
from clift.charts import aa_bars, forgetting_curves, heatmap, metric_bars
from clift.errors import CliftError
from clift.io import atomic_write_text, relative_path
from clift.pooling import check_poolable, group_runs
from clift.results import RESULTS_FILE, RunRecord, format_matrix, read_record


def _summary_section(records: list[RunRecord], out: Path, prefix: str = "") -> list[str]:
    """The mean ± std [95 % interval] table of complete runs and the AA and BWT charts."""
    from clift.suite import aggregate, format_table

    rows = aggregate(records)
    aa = aa_bars(rows, safety.refuse_link_target(out / f"{prefix}aa.png"))
    bwt = metric_bars(rows, "bwt", safety.refuse_link_target(out / f"{prefix}bwt.png"), "BWT (points)")
    return [format_table(rows), "", f"![AA per method]({aa.name})", f"![BWT per method]({bwt.name})", ""]


def _summaries(records: list[RunRecord], dirs: list[Path], out: Path, allow_mixed: bool) -> list[str]:
    """Summary sections: one for a poolable set of complete runs, or one per setting with ``allow_mixed``."""
    complete = [(r, d) for r, d in zip(records, dirs, strict=True) if r.complete]
    if len(complete) < 2:
        return []
    dicts = [r.to_dict() for r, _ in complete]
    heading = "## Summary (mean ± std [95 % interval] over runs)"
    if not allow_mixed:
        return [heading, "", *_summary_section([r for r, _ in complete], out)]
    lines: list[str] = []
    for k, (label, idx) in enumerate(group_runs(dicts), 1):
        lines += [f"{heading} — {label}", ""]
        lines += _summary_section([complete[i][0] for i in idx], out, prefix=f"setting{k}-")
    return lines


def _run_label(record: RunRecord, run_dir: Path) -> str:
    return str(record.run.name or run_dir.name)


def write_report(run_dirs: list[str | Path], out: str | Path | None = None, allow_mixed: bool = False) -> Path:
    """Write ``report.md`` and PNG plots for ``run_dirs`` into ``out``.

    Args:
        run_dirs: run directories (complete or still running; a running one is plotted as far as it got
            and left out of the summary table).
        out: output folder; default: the single run's folder, or ``./report`` for several runs.
        allow_mixed: pool runs of different settings (model, benchmark, budgets, eval) into one table per
            setting instead of refusing them.

    Returns:
        The path of ``report.md``.

    Raises:
        CliftError: for a folder that holds no results.json, or complete runs of different settings
            without ``allow_mixed`` (the message names the differing keys).
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise CliftError("clift report needs at least one run directory.")
    for d in dirs:
        if not (d / RESULTS_FILE).is_file():
            raise CliftError(f"{str(d)!r} holds no {RESULTS_FILE}; give folders written by `clift run`.")
    out = Path(out) if out is not None else (dirs[0] / "report" if len(dirs) == 1 else Path("report"))
    records = [read_record(d) for d in dirs]
    if not allow_mixed:  # refuse before writing anything
        done = [(r.to_dict(), str(d)) for r, d in zip(records, dirs, strict=True) if r.complete]
        check_poolable([r for r, _ in done], [d for _, d in done], "clift report")
    safety.claim_folder(out, "report", "choose another folder with --out.")
    lines = ["# clift report", ""]
    lines += _summaries(records, dirs, out, allow_mixed)
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
