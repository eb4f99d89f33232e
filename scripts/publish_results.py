"""Publish a comparison suite's results into the repository: results files, report, README table.

Copies each finished run's ``results.json``, ``config.yaml`` and ``predictions.jsonl`` (not adapters or
checkpoints) from the suite's output folder into ``results/<suite>/``, writes the suite table
(``suite.md`` / ``suite.json``, through ``clift compare --report-only``) and the report with plots
(``clift report``), and replaces the block between ``<!-- results:<suite> -->`` and
``<!-- /results:<suite> -->`` in README.md with the table. Nothing is computed here that the runs did not
write, so the README table is generated from the committed files.

    python scripts/publish_results.py configs/suite/standard-proxy.yaml
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from clift.report import write_report
from clift.suite import load_suite, run_suite

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("results.json", "config.yaml", "predictions.jsonl")


def publish(suite_file: Path, overrides: list[str], readme: Path = ROOT / "README.md") -> Path:
    suite = load_suite(suite_file, overrides)
    dest = ROOT / "results" / suite.name
    runs = []
    for run in suite.runs():
        if not (run.run_dir / "results.json").is_file():
            continue
        target = dest / "runs" / run.label / run.run_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for name in COPIED:
            if (run.run_dir / name).is_file():
                shutil.copy2(run.run_dir / name, target / name)
        runs.append(target)
    # tabulate from the copied files, so the table is reproducible from the repository alone
    result = run_suite(
        suite_file,
        [*overrides, f"output_dir={dest / 'runs'}"],
        report_only=True,
        command=f"clift compare {suite_file.relative_to(ROOT) if suite_file.is_absolute() else suite_file}",
    )
    for path in result.paths:
        shutil.move(str(path), dest / path.name)
    complete = [r for r in runs if '"status": "complete"' in (r / "results.json").read_text()]
    if complete:
        write_report(complete, dest / "report")
    marker = f"results:{suite.name}"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- {re.escape(marker)} -->\n).*?(<!-- /{re.escape(marker)} -->)", re.S)
    if pattern.search(text):
        table = result.markdown.split("\n", 2)[2]  # drop the "# Suite: …" title
        readme.write_text(pattern.sub(lambda m: m.group(1) + table + m.group(2), text), encoding="utf-8")
    else:
        print(f"README.md has no <!-- {marker} --> block; table not inserted", file=sys.stderr)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("overrides", nargs="*", help="suite overrides, e.g. orders=[1]")
    args = parser.parse_args()
    dest = publish(args.suite, args.overrides)
    print(f"published to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
