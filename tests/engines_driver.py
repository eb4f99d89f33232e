"""Run several methods in one multi-process launch (tests/test_engines.py starts this under torchrun)."""

from __future__ import annotations

import sys

import clift


def config(method: str, out: str, batch_size: int) -> dict:
    """The tiny two-task run used to compare engines (2 processes × batch 4 see what 1 × batch 8 sees)."""
    return {
        "model": "tiny-llama",
        "method": method,
        "output_dir": out,
        "data": {"benchmark": "fixture", "tasks": ["toysent", "toytopic"], "train_per_task": 32, "test_per_task": 16},
        "train": {"max_steps": 2, "batch_size": batch_size, "lr": 3e-3, "checkpoint_every": 1},
        "eval": {"mode": "rank", "batch_size": 8},
        "log": {"progress": False},
    }


if __name__ == "__main__":
    root, *methods = sys.argv[1:]
    for name in methods:
        clift.run(config(name, f"{root}/{name}", 4))
