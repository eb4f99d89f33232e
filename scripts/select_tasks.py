"""Task-selection table for the learnable CPU benchmark, from one-task ``per_task`` pilot runs on the dev split.

Each pilot run (``configs/selection/per-task-dev.yaml``, one task, evaluated in ``generate`` mode on the
task's dev split) is read back; its final model is rebuilt and the same dev examples are scored again in
``score`` mode (every label option scored off one prompt pass). Beside both accuracies the table shows the
dev split's majority-class rate and the margin over it; a task qualifies when its margin is at least
``--margin`` points (default 15) in the chosen mode.

Usage::

    python scripts/select_tasks.py runs/selection/gen/*  [--out docs/selection.json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from clift.config import EvalConfig, load_config
from clift.data.benchmarks import load_stream
from clift.data.collate import PromptEncoder
from clift.evaluation import Evaluator
from clift.export import rebuild_final_model
from clift.models import model_kind
from clift.results import read_record


def majority_rate(labels: list[str]) -> float:
    """Percentage of the most frequent label (the accuracy of always answering it)."""
    return 100.0 * Counter(labels).most_common(1)[0][1] / len(labels)


def pilot_row(run_dir: Path, margin: float) -> dict[str, Any]:
    """Generate-mode (from the run) and score-mode (re-evaluated) dev accuracy of one pilot run."""
    record = read_record(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    stream = load_stream(cfg.data, cfg.seed)
    task = stream.tasks[0]
    examples = task.dev
    rebuilt = rebuild_final_model(run_dir)
    kind = model_kind(rebuilt.model.config)
    encoder = PromptEncoder(rebuilt.tokenizer, kind, cfg.data.max_source_length, cfg.data.max_target_length)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    scored = Evaluator(encoder, EvalConfig(mode="score", batch_size=16), acc).evaluate(rebuilt.model, task, examples)
    majority = majority_rate([ex.label for ex in examples])
    generate = record.matrix[-1][0]
    return {
        "task": task.name,
        "labels": len(task.labels),
        "train": len(task.train),
        "dev": len(examples),
        "majority": majority,
        "generate": generate,
        "score": scored.accuracy,
        "margin_generate": generate - majority,
        "margin_score": scored.accuracy - majority,
        "qualifies_generate": generate - majority >= margin,
        "qualifies_score": scored.accuracy - majority >= margin,
        "train_seconds": record.timings.stages[0].train_seconds,
    }


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| task | labels | dev n | majority | per_task generate | per_task score | margin (score) | qualifies |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['labels']} | {r['dev']} | {r['majority']:.1f} | {r['generate']:.1f} | "
            f"{r['score']:.1f} | {r['margin_score']:+.1f} | {'yes' if r['qualifies_score'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished pilot run folders")
    p.add_argument("--margin", type=float, default=15.0, help="points above the majority rate to qualify")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    rows = [pilot_row(d, args.margin) for d in args.runs]
    print(render(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
