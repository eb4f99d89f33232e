"""Publish a comparison suite's results into the repository: results files, report, README table.

Copies each finished run's (``status: complete``) ``results.json``, ``config.yaml`` and
``predictions.jsonl`` (not adapters or checkpoints) from the suite's output folder into
``results/<suite>/``, writes the suite table (``suite.md`` / ``suite.json``, through
``clift compare --report-only``) and the report with plots (``clift report``), and replaces two blocks
in README.md: ``<!-- results:<suite> -->`` … ``<!-- /results:<suite> -->`` with the table, and
``<!-- results:<suite>:orders -->`` … (when present) with AA / BWT per method and order. Nothing is
computed here that the runs did not write, so the README tables are generated from the committed files.

    python scripts/publish_results.py configs/suite/standard-proxy.yaml
    python scripts/publish_results.py configs/suite/learnable.yaml configs/suite/learnable-budgets.yaml \
        --claims docs/paper-claims.yaml       # several suites, then the papers' claims read off the first
                                              # (and every other README claims block, e.g. standard-proxy's)
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path
from types import ModuleType

from clift.io import atomic_write_json, marked_names, replace_marked_block
from clift.report import write_report
from clift.results import RunRecord, read_record
from clift.suite import SuiteRun, load_suite, order_dir, run_suite

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("results.json", "config.yaml", "predictions.jsonl")


def _finished(run_dir: Path) -> RunRecord | None:
    """A run's record when it is complete; None when it is missing or unfinished."""
    if not (run_dir / "results.json").is_file():
        return None
    record = read_record(run_dir)
    return record if record.complete else None


def _cell(record: RunRecord | None) -> str:
    """``AA / BWT`` of one finished run (``AA`` alone when BWT is undefined, ``—`` when not finished)."""
    if record is None:
        return "—"
    bwt = record.metrics.get("bwt")
    return f"{record.metrics['aa']:.1f}" + ("" if bwt is None else f" / {bwt:.1f}")


def per_order_table(runs: list[SuiteRun]) -> str:
    """AA / BWT of every label × order (first seed per order), read from each run's ``results.json``."""
    labels = list(dict.fromkeys(r.label for r in runs))
    orders = list(dict.fromkeys(order_dir(r.order) for r in runs))
    cells: dict[tuple[str, str], str] = {}
    for run in runs:
        cells.setdefault((run.label, order_dir(run.order)), _cell(_finished(run.run_dir)))
    lines = ["| method | " + " | ".join(orders) + " |", "|---|" + "---|" * len(orders)]
    lines += [f"| {label} | " + " | ".join(cells[(label, o)] for o in orders) + " |" for label in labels]
    return "\n".join(lines) + "\n"


def load_script_module(name: str) -> ModuleType:
    """Another script of this folder as a module (scripts/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shown(path: Path) -> Path:
    """``path`` relative to the repository when it is absolute (the form a reader can run from the checkout)."""
    return path.relative_to(ROOT) if path.is_absolute() else path


def publish(suite_file: Path, overrides: list[str], readme: Path = ROOT / "README.md") -> Path:
    suite = load_suite(suite_file, overrides)
    dest = ROOT / "results" / suite.name
    planned = suite.runs()
    for run in planned:
        if _finished(run.run_dir) is None:
            continue  # unfinished: its files would be half a run
        target = dest / "runs" / run.label / run.run_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for name in COPIED:
            if (run.run_dir / name).is_file():
                shutil.copy2(run.run_dir / name, target / name)
    # the report, like the table, covers every committed run, also those made on another machine
    committed = (dest / "runs" / run.label / run.run_dir.name for run in planned)
    runs = [path for path in committed if _finished(path) is not None]
    # tabulate from the copied files, so the table is reproducible from the repository alone
    result = run_suite(
        suite_file,
        [*overrides, f"output_dir={dest / 'runs'}"],
        report_only=True,
        command=shlex.join(["clift", "compare", str(_shown(suite_file)), *overrides]),
    )
    for path in result.paths:
        shutil.move(str(path), dest / path.name)
    # the suite ran with an absolute output_dir; record it relative to the repository instead
    summary_file = dest / "suite.json"
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    summary["config"]["output_dir"] = (dest / "runs").relative_to(ROOT).as_posix()
    atomic_write_json(summary_file, summary)
    if runs:  # a budget sweep's runs differ in train_per_task on purpose: one report table per budget
        write_report(runs, dest / "report", allow_mixed=bool(suite.budgets))
    marker = f"results:{suite.name}"
    text = readme.read_text(encoding="utf-8")
    table = result.markdown.split("\n", 2)[2]  # drop the "# Suite: …" title
    updated = replace_marked_block(text, marker, table)
    if updated is None:
        print(f"README.md has no <!-- {marker} --> block; table not inserted", file=sys.stderr)
    else:
        text = updated
    updated = replace_marked_block(text, f"{marker}:orders", per_order_table(result.runs))
    text = text if updated is None else updated
    readme.write_text(text, encoding="utf-8")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "suites", nargs="+", help="suite files, then overrides applied to each (dotted.key=value, e.g. orders=[1])"
    )
    parser.add_argument(
        "--claims",
        type=Path,
        help="then read the papers' claims off the first suite's runs and refresh every README claims block "
        "(docs/paper-claims.yaml)",
    )
    args = parser.parse_args(argv)
    overrides = [a for a in args.suites if "=" in a]  # an override is always key=value; a path never needs '='
    suites = [Path(a) for a in args.suites if "=" not in a]
    if not suites:
        parser.error("give at least one suite file")
    published = [publish(suite, overrides) for suite in suites]
    print("published to " + ", ".join(str(d) for d in published))
    if args.claims is not None:
        claims = load_script_module("paper_claims")
        for suite in claims_suites(ROOT / "README.md", published[0].name, claims.MARKER):
            print(f"written {claims.publish(args.claims, suite, root=ROOT, readme=ROOT / 'README.md')}")
    return 0


def claims_suites(readme: Path, first: str, marker: str) -> list[str]:
    """``first``, then every other suite with a ``<!-- <marker>:<suite> -->`` claims block in ``readme``.

    A claim may read another suite's runs (the data-efficiency claims read the budget sweep's), so every
    claims block is regenerated whenever runs are published, not only the first suite's.
    """
    return list(dict.fromkeys([first, *marked_names(readme.read_text(encoding="utf-8"), marker)]))


if __name__ == "__main__":
    sys.exit(main())
