"""The README's step-cost table from ``benchmarks/step_cost.py`` JSON files, one per ``--stage``.

Each file holds the methods measured side by side in one process at one stage; the table shows every
method's median step time relative to ``seq_lora`` in the same file (the mean in brackets: it includes
the GaLore projector refresh every T steps, which the median hides), one column per stage, and the peak
memory ratio where the file measured memory. Nothing is computed that the benchmark did not write.

    python scripts/step_cost_table.py results/step_cost/stage1.json results/step_cost/stage4.json \
        results/step_cost/stage15.json --readme README.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from clift.io import replace_marked_block

MARKER = "step-cost"


def load(paths: list[Path]) -> list[tuple[int, dict[str, Any]]]:
    """``[(stage, results)]`` sorted by stage; one file per stage."""
    runs = []
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        runs.append((int(data["args"]["stage"]), data["results"]))
    stages = [s for s, _ in runs]
    if len(set(stages)) != len(stages):
        raise SystemExit(f"two files for the same stage among {stages}; give one file per --stage")
    return sorted(runs, key=lambda r: r[0])


def table(runs: list[tuple[int, dict[str, Any]]]) -> str:
    """Markdown: method × stage, median (mean) step time relative to seq_lora, and peak memory."""
    labels = list(dict.fromkeys(m for _, res in runs for m in res))
    mem_stages = [s for s, res in runs if any("peak_ratio" in row for row in res.values())]
    peak_head = f"stage {mem_stages[0]}: peak memory × LoRA" if mem_stages else "peak memory × LoRA"
    head = ["method"] + [f"stage {s}: × LoRA time, median (mean)" for s, _ in runs] + [peak_head]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for label in labels:
        cells = [f"`{label}`"]
        peak = "—"
        for _, res in runs:
            row = res.get(label)
            if row is None or "time_ratio" not in row:
                cells.append("—")
                continue
            cells.append(f"{row['time_ratio']:.2f} ({row['time_ratio_mean']:.2f})")
            if "peak_ratio" in row and peak == "—":
                peak = f"{row['peak_ratio']:.2f}"
        lines.append("| " + " | ".join([*cells, peak]) + " |")
    base = [f"stage {s}: {res['seq_lora']['step_s_median']:.2f} s" for s, res in runs if "seq_lora" in res]
    lines.append("")
    lines.append(f"`seq_lora` (plain PEFT LoRA) median step: {', '.join(base)}.")
    return "\n".join(lines) + "\n"


def replace_block(text: str, body: str) -> str:
    """``text`` with the ``<!-- step-cost -->`` … ``<!-- /step-cost -->`` block replaced by ``body``."""
    updated = replace_marked_block(text, MARKER, body)
    if updated is None:
        raise SystemExit(f"no <!-- {MARKER} --> … <!-- /{MARKER} --> block to replace; add one where the table goes")
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="step_cost.py --json files, one per stage")
    parser.add_argument("--readme", type=Path, default=None, help="replace the step-cost block of this file")
    args = parser.parse_args(argv)
    body = table(load(args.files))
    if args.readme is None:
        print(body, end="")
    else:
        args.readme.write_text(replace_block(args.readme.read_text(encoding="utf-8"), body), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
