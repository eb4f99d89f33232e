"""Shared test helpers: the fixture stream and tiny runs (CPU, seconds each)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from clift.data.task import Example, Stream, Task

FIXTURE_ROOT = Path(__file__).resolve().parents[1] / "src" / "clift" / "data" / "fixtures" / "cl_fixture"
FIXTURE_TASKS = [("SC", "toysent"), ("TC", "toytopic"), ("NLI", "toynli")]

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")

# tiny models: thread start-up costs more than it saves, and CI machines have few cores
torch.set_num_threads(1)


def fixture_stream(train: int = 32, test: int = 12, names: list[str] | None = None) -> Stream:
    """The three fixture tasks read straight from their files (independent of the benchmark loader)."""
    tasks = []
    for family, name in FIXTURE_TASKS:
        if names and name not in names:
            continue
        folder = FIXTURE_ROOT / family / name
        rows = json.loads((folder / "train.json").read_text())
        test_rows = json.loads((folder / "test.json").read_text())
        tr = [Example(r["sentence"], r["label"], f"{name}/train/{i}") for i, r in enumerate(rows)]
        te = [Example(r["sentence"], r["label"], f"{name}/test/{i}") for i, r in enumerate(test_rows)]
        tasks.append(
            Task(
                name,
                family,
                "Choose one from the option.\n",
                tuple(json.loads((folder / "labels.json").read_text())),
                True,
                tr[:train],
                tr[train : train + 8],
                te[:test],
            )
        )
    return Stream("fixture-test", tasks)


def tiny_config(
    tmp_path: Path, model: str = "tiny-llama", method: str | dict = "seq_lora", **sections: Any
) -> dict[str, Any]:
    """A run config for a tiny model: a few steps per task, rank evaluation, no progress bars."""
    cfg: dict[str, Any] = {
        "name": "test",
        "output_dir": str(tmp_path / "run"),
        "model": {"name": model},
        "method": method if isinstance(method, dict) else {"name": method},
        "train": {"max_steps": 3, "batch_size": 4, "lr": 5e-3},
        "eval": {"mode": "rank", "batch_size": 16},
        "log": {"progress": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def stream() -> Stream:
    return fixture_stream()
