"""Two CPU processes (torchrun + gloo) give the single-process matrix within tolerance, written once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from .conftest import free_port


def _config(path, out, batch_size):
    path.write_text(
        yaml.safe_dump(
            {
                "model": "tiny-llama",
                "method": "seq_lora",
                "output_dir": str(out),
                "data": {"benchmark": "fixture", "train_per_task": 48, "test_per_task": 16},
                "train": {"max_steps": 4, "batch_size": batch_size, "lr": 3e-3, "checkpoint_every": 2},
                "eval": {"mode": "rank", "batch_size": 8},
                "log": {"progress": False},
            }
        )
    )
    return path


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="torchrun not installed",
)
def test_two_processes_match_one(tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    # 2 processes × batch 4 see the same 8 examples per step as 1 process × batch 8
    multi = _config(tmp_path / "multi.yaml", tmp_path / "multi", 4)
    single = _config(tmp_path / "single.yaml", tmp_path / "single", 8)
    out = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "clift.cli", "run", str(multi)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("accuracy (%)") == 1  # only the main process prints
    ref = subprocess.run(
        [sys.executable, "-m", "clift.cli", "run", str(single)], env=env, capture_output=True, text=True, timeout=900
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    a = json.loads((tmp_path / "multi" / "results.json").read_text())
    b = json.loads((tmp_path / "single" / "results.json").read_text())
    assert a["num_processes"] == 2 and b["num_processes"] == 1
    assert a["zero_shot"] == b["zero_shot"]  # evaluation is sharded and gathered: identical numbers
    for ra, rb in zip(a["matrix"], b["matrix"], strict=True):
        for x, y in zip(ra, rb, strict=True):
            assert abs(x - y) <= 12.5 + 1e-9  # at most 2 of 16 test examples differ
    for la, lb in zip(a["training"], b["training"], strict=True):
        assert la["first_loss"] == pytest.approx(lb["first_loss"], rel=0.05)
    # written once: every test example appears exactly once in the predictions
    preds = [json.loads(line) for line in (tmp_path / "multi" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 3 * 16 and len({(p["task"], p["id"]) for p in preds}) == 48
    assert not list((tmp_path / "multi").glob("**/*.tmp"))
    # the checkpoint holds both processes' generator states, each restored by its own process on resume
    state = json.loads((tmp_path / "multi" / "checkpoint" / "state.json").read_text())
    assert len(state["rng_ranks"]) == 2
    single_state = json.loads((tmp_path / "single" / "checkpoint" / "state.json").read_text())
    assert single_state["rng_ranks"] is None
