"""Running a suite: each planned run inline or in its own process, then ``suite.md`` and ``suite.json``."""

from __future__ import annotations

import gc
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from clift.charts import budget_curve
from clift.errors import CliftError, ConfigError, TrainingError
from clift.io import atomic_write_json, atomic_write_text, relative_path
from clift.pooling import check_poolable
from clift.results import RESULTS_FILE, RunRecord
from clift.suite.aggregation import aggregate, budget_groups, paired_by_budget
from clift.suite.markdown import format_markdown, suite_meta
from clift.suite.planning import adopt_finished, plan, read_results
from clift.suite.schema import ZERO_SHOT_CACHE, Suite, SuiteRun, json_normal, load_suite, order_dir

log = logging.getLogger("clift")

SUITE_MD = "suite.md"
SUITE_JSON = "suite.json"
#: the data-efficiency figure of a suite with ``budgets``
BUDGET_CURVE = "budget_curve.png"

Isolation = Literal["process", "inline"]


@dataclass
class SuiteResult:
    """What :func:`run_suite` returns.

    Attributes:
        suite: the validated suite.
        runs: every planned run with its final state (``reused``, ``ran``, ``missing``; ``new``,
            ``resume`` or ``reuse`` in a dry run).
        rows: the aggregated table rows (see :func:`aggregate`).
        markdown: the content of ``suite.md``.
        paths: the files written (empty for a dry run).
    """

    suite: Suite
    runs: list[SuiteRun]
    rows: list[dict[str, Any]]
    markdown: str
    paths: list[Path]


def _run_inline(run: SuiteRun, zero_shot_cache: Path) -> None:
    from clift.runner import run as run_one

    # an unfinished run continues from its checkpoint
    result = run_one(run.config, zero_shot_cache=zero_shot_cache)
    del result  # drop the model before the next run
    gc.collect()


def _run_process(run: SuiteRun, python: str, zero_shot_cache: Path) -> None:
    """Run one config in a fresh interpreter, so its peak memory is its own; output to a log file."""
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = run.run_dir.with_suffix(".log")
    fd, cfg_path = tempfile.mkstemp(prefix=f".{run.run_dir.name}.", suffix=".yaml", dir=run.run_dir.parent)
    os.close(fd)
    try:
        Path(cfg_path).write_text(yaml.safe_dump(run.config, sort_keys=False), encoding="utf-8")
        # no --force: an unfinished run in run_dir continues from its checkpoint
        cmd = [python, "-m", "clift.cli", "run", cfg_path, "--quiet", "--zero-shot-cache", str(zero_shot_cache)]
        with open(log_path, "w", encoding="utf-8") as fh:
            code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    finally:
        Path(cfg_path).unlink(missing_ok=True)
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise TrainingError(
            f"suite run {run.label} {order_dir(run.order)} seed {run.seed} failed (exit code {code}); full log: "
            f"{log_path}\n" + "\n".join(f"    {line}" for line in tail) + "\nFix the cause and run the suite "
            "again: finished runs are reused."
        )


def _execute(
    runs: list[SuiteRun], isolation: Isolation, report_only: bool, python: str | None, zero_shot_cache: Path
) -> tuple[list[tuple[str, RunRecord]], list[str]]:
    """Run or reuse every planned run; ``([(label, record)] of the finished ones, [missing runs])``.

    The runs share ``zero_shot_cache`` (:mod:`clift.zero_shot_cache`): the base model's evaluation on a
    task is made once per suite, not once per method × order × seed.
    """
    done: list[tuple[str, RunRecord]] = []
    missing: list[str] = []
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}] {run.label} {order_dir(run.order)} seed {run.seed}"
        if run.state == "reuse":
            log.info("%s: reused (%s)", tag, run.run_dir)
            run.state = "reused"
        elif report_only:
            log.info("%s: not finished (report only)", tag)
            run.state = "missing"
            missing.append(f"{run.label}/{run.run_dir.name}")
            continue
        else:
            log.info("%s: %s (%s)", tag, "resuming" if run.state == "resume" else "running", run.run_dir)
            if isolation == "inline":
                _run_inline(run, zero_shot_cache)
            else:
                _run_process(run, python or sys.executable, zero_shot_cache)
            run.state = "ran"
        found = read_results(run.run_dir)
        if found is None or not found.complete:
            raise TrainingError(
                f"suite run {run.label} {order_dir(run.order)} seed {run.seed} ended without a complete "
                f"{RESULTS_FILE} in {run.run_dir}; run the suite again to retry it."
            )
        done.append((run.label, found))
    return done, missing


def _summary(
    suite: Suite,
    runs: Sequence[SuiteRun],
    rows: list[dict[str, Any]],
    command: str,
    isolation: Isolation,
    paired: list[dict[str, Any]],
) -> dict[str, Any]:
    """The content of ``suite.json``."""
    return {
        "suite": suite.name,
        "command": command,
        "isolation": isolation,
        "config": json_normal(suite.raw),
        "rows": rows,
        "paired": paired,
        "runs": [
            {
                "label": r.label,
                "method": r.method,
                "order": r.order,
                "seed": r.seed,
                # relative to output_dir, so a suite directory can be moved or committed as a whole
                "run_dir": relative_path(r.run_dir, suite.output_dir),
                "state": r.state,
            }
            for r in runs
        ],
    }


def run_suite(
    config: str | Path | Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    isolation: Isolation = "process",
    dry_run: bool = False,
    report_only: bool = False,
    command: str | None = None,
    python: str | None = None,
) -> SuiteResult:
    """Run (or reuse) every method × order × seed of a suite and write ``suite.md`` and ``suite.json``.

    Args:
        config: a suite YAML path or mapping (see :mod:`clift.suite`).
        overrides: ``dotted.key=value`` overrides of the suite mapping (``seeds=[1,2]``,
            ``base.train.max_steps=2``).
        isolation: ``process`` runs each config in a fresh Python process (``python -m clift.cli run``;
            per-run peak memory is then exact, and memory is returned between runs); ``inline`` runs
            them in this process (faster to start; used by the tests).
        dry_run: only plan: report which runs would be reused, run or resumed; write nothing.
        report_only: run nothing; tabulate the runs already complete (others are listed as missing).
        command: the command line to record in ``suite.md`` (default ``clift compare <file>``).
        python: the interpreter for ``process`` isolation (default: this one).

    Returns:
        A :class:`SuiteResult`.

    Raises:
        ConfigError: an invalid suite or run config (before anything runs).
        ResumeError: output folders holding runs with other configs (before anything runs).
        TrainingError: a run that failed (``process`` isolation); finished runs stay reusable.
    """
    if isolation not in ("process", "inline"):
        raise ConfigError(f"isolation: got {isolation!r}; allowed: 'process', 'inline'.")
    suite = load_suite(config, overrides)
    runs = plan(suite.runs())
    if suite.reuse_from and not report_only:
        adopt_finished(runs, suite.reuse_from, copy=not dry_run)
    if command is None:
        where = str(suite.source) if suite.source is not None else "<suite mapping>"
        command = shlex.join(["clift", "compare", where, *overrides])
    if dry_run:
        return SuiteResult(suite, runs, [], "", [])
    done, missing = _execute(runs, isolation, report_only, python, suite.output_dir / ZERO_SHOT_CACHE)
    rows, paired = _tabulate(suite, runs, done)
    meta = {**suite_meta(suite), "isolation": isolation, "missing": missing}
    markdown = format_markdown(rows, meta, command, paired)
    suite.output_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        atomic_write_text(suite.output_dir / SUITE_MD, markdown),
        atomic_write_json(
            suite.output_dir / SUITE_JSON, json_normal(_summary(suite, runs, rows, command, isolation, paired))
        ),
    ]
    if suite.budgets and any(r.get("budget") is not None for r in rows):
        paths += _budget_curve(rows, suite.output_dir / BUDGET_CURVE)
    return SuiteResult(suite, runs, rows, markdown, paths)


def _tabulate(
    suite: Suite, runs: Sequence[SuiteRun], done: list[tuple[str, RunRecord]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows (each with its method ``entry`` and ``budget``) and paired differences of the finished runs.

    Runs are pooled only within a budget (a budget sweep differs in ``data.train_per_task`` on purpose),
    and each row is paired with the reference at its own budget.
    """
    planned = {r.label: r for r in runs}
    records, labels = [r for _, r in done], [label for label, _ in done]
    budgets = [planned[label].budget for label in labels]
    for _, idx in budget_groups(budgets):
        check_poolable([records[i].to_dict() for i in idx], [labels[i] for i in idx], "clift compare")
    rows = aggregate(records, labels)
    for row in rows if suite.budgets else []:  # suites without a sweep keep their rows as before
        run = planned.get(row["label"])
        row["entry"] = run.entry if run is not None else row["label"]
        row["budget"] = run.budget if run is not None else None
    paired = [row for ref in suite.references for row in paired_by_budget(records, labels, budgets, ref)]
    return rows, paired


def _budget_curve(rows: list[dict[str, Any]], path: Path) -> list[Path]:
    """The data-efficiency figure; skipped with a warning when matplotlib (``clift[report]``) is missing."""
    try:
        return [budget_curve(rows, path)]
    except CliftError as err:
        log.warning("%s: not drawn (%s)", path.name, err)
        return []
