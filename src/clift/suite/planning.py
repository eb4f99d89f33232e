"""Planning a suite: which runs are new, which are reused (complete, same config), which are resumed."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from clift.config import upgrade_config
from clift.errors import DataError, ResumeError
from clift.results import RESULTS_FILE, RunRecord
from clift.suite.schema import SuiteRun, json_normal

log = logging.getLogger("clift")


def read_results(run_dir: Path) -> RunRecord | None:
    """The ``results.json`` of ``run_dir`` as a :class:`~clift.results.RunRecord`, or None when there is none yet.

    Raises:
        ResumeError: for a file that cannot be read, naming it and the fix.
    """
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return RunRecord.from_json(path.read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError, DataError) as err:
        raise ResumeError(
            f"{str(path)!r} cannot be read ({err}); delete that run directory so the suite reruns it."
        ) from None


def plan(runs: list[SuiteRun]) -> list[SuiteRun]:
    """Mark each run ``new``, ``reuse`` or ``resume`` from what its folder holds.

    The comparison is the runner's own resume rule (:func:`clift.runner.config_diff`: ``log``, ``name``
    and ``output_dir`` may differ; fields added to clift since a run was made count at their defaults,
    :func:`clift.config.upgrade_config`), so whatever the suite reuses or resumes the runner would accept.

    Raises:
        ResumeError: listing every run folder that holds a run with a different config.
    """
    from clift.runner import config_diff

    conflicts = []
    for run in runs:
        found = read_results(run.run_dir)
        if found is None:
            run.state = "new"
            continue
        diff = config_diff(json_normal(upgrade_config(found.config)), run.resolved)
        if diff:
            shown = "; ".join(diff[:8]) + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else "")
            conflicts.append(f"{run.run_dir}: holds a run with a different config ({shown})")
            continue
        run.state = "reuse" if found.complete else "resume"
    if conflicts:
        raise ResumeError(
            "the suite's output folders hold runs made with other settings; delete those folders, or set "
            "another output_dir, or restore the settings:\n" + "\n".join(f"  - {c}" for c in conflicts)
        )
    return runs


def adopt_finished(runs: list[SuiteRun], sources: Sequence[Path], copy: bool = True) -> list[SuiteRun]:
    """Take each ``new`` run from another suite's output folder when that folder already holds it.

    A budget sweep's run at the main suite's budget, for example, is the main suite's run: same resolved
    config (by the runner's resume rule), only another folder. For every run planned ``new`` this looks
    at ``<source>/<entry label>/<o…-s…>`` and ``<source>/<label>/<o…-s…>``; a complete run there with the
    same config is copied into the run's own folder (state ``reuse``), so the suite's folder stays
    self-contained. With ``copy=False`` (a dry run) such runs are only marked ``adopt``.
    """
    from clift.runner import config_diff

    for run in runs:
        if run.state != "new":
            continue
        for source in sources:
            found = _matching_run(source, run, config_diff)
            if found is None:
                continue
            if copy:
                shutil.copytree(found, run.run_dir, dirs_exist_ok=True)
                log.info("%s %s: copied from %s (same config)", run.label, run.run_dir.name, found)
            run.state = "reuse" if copy else "adopt"
            break
    return runs


def _matching_run(source: Path, run: SuiteRun, config_diff: Callable[..., list[str]]) -> Path | None:
    """The folder under ``source`` holding a complete run with ``run``'s resolved config, if any."""
    for label in dict.fromkeys([run.entry or run.label, run.label]):
        candidate = source / label / run.run_dir.name
        if candidate.resolve() == run.run_dir.resolve():
            continue
        found = read_results(candidate)
        if found is None or not found.complete:
            continue
        if not config_diff(json_normal(upgrade_config(found.config)), run.resolved):
            return candidate
    return None
