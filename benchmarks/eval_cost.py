"""Evaluation throughput of ``generate``, ``rank`` and ``score``, measured side by side in one process.

One model, one tokenizer, the same examples: for each task the three modes evaluate the same
``--examples`` test examples in alternating rounds (generate, rank, score, generate, …) so that load
changes on a shared machine hit every mode alike; the best round's examples/s is reported (the
least-disturbed measurement), with the median beside it. ``score`` must predict what ``rank`` predicts;
the agreement is printed too.

Note on ``generate``: on a model that has not been trained on the answer format, greedy decoding runs to
its cap (longest label + 4 tokens) instead of stopping after the label, so its cost here is an upper
bound of what a trained model pays.

Usage::

    python benchmarks/eval_cost.py                                   # SmolLM2, SST-2 (2 labels) and dbpedia (14)
    python benchmarks/eval_cost.py --model tiny-llama --benchmark fixture --tasks toysent,toytopic --examples 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from clift.config import DataConfig, EvalConfig, ModelConfig
from clift.data.benchmarks import load_stream
from clift.data.collate import PromptEncoder
from clift.evaluation import Evaluator
from clift.models import load_model

MODES = ("generate", "rank", "score")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="model alias, folder or hub id")
    p.add_argument("--benchmark", default="long", help="benchmark whose task catalog holds --tasks")
    p.add_argument("--tasks", default="SST-2,dbpedia", help="comma-separated tasks")
    p.add_argument("--examples", type=int, default=32, help="test examples per task and round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-source-length", type=int, default=128)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def _time_mode(evaluator: Evaluator, model: torch.nn.Module, task: Any, exs: list[Any]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    out = evaluator.evaluate(model, task, exs)
    return len(exs) / (time.perf_counter() - start), [r["prediction"] for r in out.predictions]


def measure_task(model: torch.nn.Module, encoder: PromptEncoder, task: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Examples/s of each mode on ``task`` (alternating rounds) and score-vs-rank agreement."""
    acc = Accelerator(cpu=not torch.cuda.is_available())
    evals = {m: Evaluator(encoder, EvalConfig(mode=m, batch_size=args.batch_size), acc) for m in MODES}
    exs = list(task.test[: args.examples])
    speeds: dict[str, list[float]] = {m: [] for m in MODES}
    preds: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for m in MODES:
            speed, preds[m] = _time_mode(evals[m], model, task, exs)
            speeds[m].append(speed)
    best = {m: max(v) for m, v in speeds.items()}
    agree = sum(a == b for a, b in zip(preds["score"], preds["rank"], strict=True)) / len(exs)
    return {
        "task": task.name,
        "labels": len(task.labels),
        "examples": len(exs),
        "examples_per_s": best,
        "examples_per_s_median": {m: statistics.median(v) for m, v in speeds.items()},
        "score_over_rank": best["score"] / best["rank"],
        "score_over_generate": best["score"] / best["generate"],
        "score_rank_agreement": agree,
    }


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| task | labels | generate ex/s | rank ex/s | score ex/s | score / rank | score / generate | score = rank |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["examples_per_s"]
        lines.append(
            f"| {r['task']} | {r['labels']} | {s['generate']:.2f} | {s['rank']:.2f} | {s['score']:.2f} | "
            f"{r['score_over_rank']:.2f}× | {r['score_over_generate']:.2f}× | {100 * r['score_rank_agreement']:.0f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    loaded = load_model(ModelConfig(name=args.model))
    model = loaded.model.eval()
    encoder = PromptEncoder(loaded.tokenizer, loaded.kind, args.max_source_length, 16)
    tasks = args.tasks.split(",")
    stream = load_stream(DataConfig(benchmark=args.benchmark, tasks=tasks, test_per_task=args.examples), 0)
    rows = [measure_task(model, encoder, t, args) for t in stream.tasks]
    out = {
        "model": args.model,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "results": rows,
    }
    print(f"model {args.model}, {torch.get_num_threads()} threads, best of {args.rounds} alternating rounds")
    print(render(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
