"""A user stream in each file format runs end to end on the tiny LLaMA model (two steps per task)."""

from __future__ import annotations

import json

import pytest

import clift
from clift.config import RunConfig

from ..conftest import write_stream


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_user_stream_runs_end_to_end_on_tiny_llama(tmp_path, fmt):
    stream_yaml = write_stream(tmp_path / "data", fmt, n_train=24, n_test=8, family="SC")
    config = RunConfig.from_dict(
        {
            "name": f"user-{fmt}",
            "output_dir": str(tmp_path / "run"),
            "model": "tiny-llama",
            "data": {"stream": str(stream_yaml)},
            "method": "seq_lora",
            "train": {"max_steps": 2, "batch_size": 4},
            "eval": {"mode": "rank"},
            "log": {"progress": False},
        }
    )
    result = clift.run(config)
    on_disk = json.loads((result.run_dir / "results.json").read_text())
    assert on_disk["status"] == "complete"
    assert on_disk["tasks"] == ["reviews"]
    assert len(on_disk["matrix"]) == 1 and 0.0 <= on_disk["matrix"][0][0] <= 100.0
    assert on_disk["data"]["source"] == "user"
    assert on_disk["data"]["files"]["reviews"]["train"]["path"].endswith(f"train.{fmt}")
