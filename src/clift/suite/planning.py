"""Planning a suite: which runs are new, which are reused (complete, same config), which are resumed."""

from __future__ import annotations

from pathlib import Path

from clift.config import upgrade_config
from clift.errors import DataError, ResumeError
from clift.results import RESULTS_FILE, RunRecord
from clift.suite.schema import SuiteRun, json_normal


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
