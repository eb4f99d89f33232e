"""``clift compare``: the suite's sub-command, registered into clift's CLI by :func:`add_compare_parser`."""

from __future__ import annotations

import argparse
import logging
import shlex
from typing import Any

from clift.suite.execute import run_suite


def _cmd_compare(args: argparse.Namespace) -> int:
    if args.quiet:
        logging.getLogger("clift").setLevel(logging.WARNING)
    result = run_suite(
        args.config,
        args.overrides,
        isolation="inline" if args.inline else "process",
        dry_run=args.dry_run,
        report_only=args.report_only,
        command=shlex.join(["clift", "compare", *args.argv]),
    )
    if args.dry_run:
        for run in result.runs:
            print(f"{run.state:6s} {run.run_dir}")
        counts = {s: sum(r.state == s for r in result.runs) for s in ("new", "resume", "reuse", "adopt")}
        print(
            f"{counts['new']} to run, {counts['resume']} to resume (unfinished), {counts['reuse']} reused, "
            f"{counts['adopt']} to copy from reuse_from"
        )
        return 0
    print(result.markdown)
    print("written: " + ", ".join(str(p) for p in result.paths))
    return 0


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``clift compare CONFIG [overrides] [--dry-run|--report-only] [--inline] [-q]``.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The ``compare`` sub-parser (its handler is set with ``set_defaults(func=...)``; it returns an
        exit code).
    """
    p = subparsers.add_parser(
        "compare",
        help="run methods × orders × seeds on one benchmark; write a Markdown + JSON table",
        description="Run (or reuse) every method × order × seed of a suite YAML and tabulate AA, BWT, FWT "
        "and forgetting (mean ± std), wall time and peak memory into suite.md and suite.json.",
    )
    p.add_argument("config", help="suite YAML (see configs/suite/ and docs/suite.md)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the suite file, e.g. seeds=[1,2]")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="show what would run or be reused; run nothing")
    mode.add_argument("--report-only", action="store_true", help="run nothing; tabulate the runs already finished")
    p.add_argument("--inline", action="store_true", help="run in this process instead of one process per run")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-run progress lines")
    from clift import fanout  # --plan, --plan-json, --run, --launcher: suites beyond one machine

    fanout.add_flags(p)

    def handler(args: argparse.Namespace) -> int:
        args.argv = [args.config, *args.overrides]
        fanned = fanout.handle(args)
        return fanned if fanned is not None else _cmd_compare(args)

    p.set_defaults(func=handler)
    return p
