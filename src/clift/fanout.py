"""Suites beyond one machine: a plan of independent runs, a lock per run folder, local and Slurm fan-out.

A comparison suite is many independent runs; each run's folder is the unit of work. ``clift compare SUITE
--plan`` prints one command per pending run (``--plan-json`` the same as JSON) for a job array or GNU
parallel; ``--run ID`` runs one of them; ``--launcher local --workers N`` fans the plan out over N local
processes and ``--launcher slurm`` submits it as a Slurm job array through ``submitit`` (optional extra
``clift[slurm]``); clift never schedules anything itself. The aggregate step (``clift compare SUITE
--report-only``) reads whatever has finished.

Two launchers must never train the same run at once: the runner holds ``<run_dir>/clift.lock`` while it
trains (:mod:`clift.runlock`: a second runner is refused naming the holder; a lock whose process died is
taken over on the same host; one from another host must be deleted once that job is known to be dead).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from clift.errors import ConfigError, ResumeError

# the run-folder lock lives in clift.runlock (the runner holds it); its names stay importable from here
from clift.runlock import LOCK_FILE as LOCK_FILE
from clift.runlock import RunLock as RunLock
from clift.runlock import acquire_run_lock as acquire_run_lock
from clift.runlock import lock_run as lock_run

# --------------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------------


def run_id(run: Any) -> str:
    """A suite run's id, ``<label>/<folder>`` (e.g. ``seq_lora/o1-s42``), as ``--run`` takes it."""
    return f"{run.label}/{run.run_dir.name}"


def plan_entries(config: str, overrides: list[str]) -> list[dict[str, Any]]:
    """One entry per pending (new or unfinished) run of the suite: id, method, order, seed, folder, command."""
    from clift.suite.planning import plan  # the submodules: clift.suite's __init__ imports this module
    from clift.suite.schema import load_suite

    out = []
    for run in plan(load_suite(config, overrides).runs()):
        if run.state == "reuse":
            continue
        argv = ["clift", "compare", config, *overrides, "--run", run_id(run)]
        out.append(
            {
                "id": run_id(run),
                "label": run.label,
                "method": run.method,
                "order": run.order,
                "seed": run.seed,
                "run_dir": str(run.run_dir),
                "state": run.state,
                "argv": argv,
                "command": shlex.join(argv),
            }
        )
    return out


def run_one(config: str, overrides: list[str], wanted: str) -> int:
    """Run (or resume) the suite run ``wanted`` in this process; a finished one is left as it is.

    Raises:
        ConfigError: no run of the suite has that id.
    """
    from clift.runner import run as run_config
    from clift.suite.planning import adopt_finished, plan  # the submodules: clift.suite's __init__ imports us
    from clift.suite.schema import ZERO_SHOT_CACHE, load_suite

    suite = load_suite(config, overrides)
    runs = plan(suite.runs())
    match = [r for r in runs if run_id(r) == wanted]
    if not match:
        raise ConfigError(
            f"--run {wanted!r} is not a run of this suite; ids look like {run_id(runs[0])!r} (see --plan)."
        )
    adopt_finished(match, suite.reuse_from)  # as the whole suite would: copy an identical finished run
    if match[0].state != "reuse":
        run_config(match[0].config, zero_shot_cache=suite.output_dir / ZERO_SHOT_CACHE)
    return 0


def worker_env(workers: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one of ``workers`` parallel runs: the machine's cores shared out among them.

    ``OMP_NUM_THREADS`` (torch's intra-op threads) becomes ``max(1, cores // workers)`` unless the caller
    set it; each run records the thread count it used in results.json (``environment.torch_threads``).
    """
    env = dict(os.environ if environ is None else environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, workers))))
    return env


def _fan_out_local(entries: list[dict[str, Any]], workers: int) -> list[str]:
    """Run each entry's command as its own process, ``workers`` at a time; the ids that failed."""
    env = worker_env(workers)

    def one(entry: dict[str, Any]) -> str | None:
        argv = [sys.executable, "-m", "clift.cli", *entry["argv"][1:], "--quiet"]
        log = Path(entry["run_dir"]).with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as fh:
            code = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False, env=env).returncode
        return None if code == 0 else f"{entry['id']} (exit {code}; log {log})"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [f for f in pool.map(one, entries) if f is not None]


def _submit_slurm(entries: list[dict[str, Any]], config: str, overrides: list[str], folder: Path) -> Any:
    """Submit the plan as one Slurm job array through submitit (each task runs one ``--run``)."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--launcher slurm needs submitit, which is not installed: pip install 'clift[slurm]'."
        ) from None
    executor = submitit.AutoExecutor(folder=str(folder))
    # site settings (partition, GPUs, time) come from the environment: SUBMITIT_* / the user's defaults
    executor.update_parameters(name="clift-suite", slurm_array_parallelism=len(entries))
    return executor.map_array(run_one, [config] * len(entries), [overrides] * len(entries), [e["id"] for e in entries])


def handle(args: argparse.Namespace) -> int | None:
    """The fan-out flags of ``clift compare``; None when none was given (the suite runs as before)."""
    config, overrides = args.config, list(args.overrides)
    if getattr(args, "jobs", None):  # --jobs N: the local launcher with N workers
        args.launcher, args.workers = "local", args.jobs
    if args.run:
        return run_one(config, overrides, args.run)
    if not (args.plan or args.plan_json or args.launcher):
        return None
    entries = plan_entries(config, overrides)
    if args.plan_json:
        print(json.dumps(entries, indent=2))
        return 0
    if args.plan:
        for e in entries:
            print(e["command"])
        return 0
    if args.launcher == "slurm":
        jobs = _submit_slurm(entries, config, overrides, Path(args.slurm_folder))
        print(
            f"submitted {len(jobs)} runs as Slurm job array {jobs[0].job_id.split('_')[0] if jobs else '-'}; "
            f"logs in {args.slurm_folder}. When they finish: clift compare {config} --report-only"
        )
        return 0
    failed = _fan_out_local(entries, args.workers)
    if failed:
        raise ResumeError("these suite runs failed: " + "; ".join(failed) + ". Rerun to retry them.")
    return None  # everything ran: fall through to the normal suite (reuses them all, writes the table)


def add_flags(p: argparse.ArgumentParser) -> None:
    """Add ``--plan``, ``--plan-json``, ``--run``, ``--launcher``, ``--workers``, ``--slurm-folder`` to ``compare``."""
    p.add_argument("--plan", action="store_true", help="print one command per pending run (for job arrays)")
    p.add_argument("--plan-json", action="store_true", help="the plan as JSON (id, method, order, seed, command)")
    p.add_argument("--run", metavar="ID", help="run only this run of the suite (an id from --plan)")
    p.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        help="fan the pending runs out: local processes (--workers) or a Slurm job array (submitit)",
    )
    p.add_argument("--workers", type=int, default=2, help="parallel local processes for --launcher local")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="run N suite runs at a time on this machine (= --launcher local --workers N; cores shared out)",
    )
    p.add_argument("--slurm-folder", default="slurm-logs", help="submitit's log folder for --launcher slurm")
