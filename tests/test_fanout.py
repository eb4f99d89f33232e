"""Suites beyond one machine: the plan, the run-folder lock, and a local fan-out of two processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import clift
from clift.cli import main
from clift.errors import ConfigError, ResumeError
from clift.fanout import LOCK_FILE, acquire_run_lock, plan_entries

from .conftest import fixture_stream, tiny_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def _suite(tmp_path: Path, methods: list[str]) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "fan",
                "base": {
                    "model": {"name": "tiny-llama"},
                    "data": {"benchmark": "fixture", "tasks": ["toysent"], "train_per_task": 8, "test_per_task": 8},
                    "train": {"max_steps": 1, "batch_size": 4},
                    "eval": {"mode": "rank"},
                    "log": {"progress": False},
                    "save_adapters": False,
                },
                "methods": methods,
                "orders": [1],
                "seeds": [1],
                "output_dir": str(tmp_path / "out"),
            }
        )
    )
    return path


def test_plan_lists_one_command_per_pending_run(tmp_path, capsys):
    suite = _suite(tmp_path, ["seq_lora", "inc_lora"])
    assert main(["compare", str(suite), "--plan"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        f"clift compare {suite} --run seq_lora/o1-s1",
        f"clift compare {suite} --run inc_lora/o1-s1",
    ]
    assert main(["compare", str(suite), "seeds=[1,2]", "--plan-json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in entries] == ["seq_lora/o1-s1", "seq_lora/o1-s2", "inc_lora/o1-s1", "inc_lora/o1-s2"]
    assert entries[1]["argv"][-3:] == ["seeds=[1,2]", "--run", "seq_lora/o1-s2"] and entries[1]["seed"] == 2
    # a finished run leaves the plan; the aggregate reads whatever has finished
    assert main(["compare", str(suite), "--run", "seq_lora/o1-s1"]) == 0
    assert [e["id"] for e in plan_entries(str(suite), [])] == ["inc_lora/o1-s1"]
    assert not (tmp_path / "out" / "seq_lora" / "o1-s1" / LOCK_FILE).exists()  # released when done
    assert main(["compare", str(suite), "--report-only"]) == 0
    assert "seq_lora" in (tmp_path / "out" / "suite.md").read_text()
    with pytest.raises(ConfigError, match="not a run of this suite"):
        main(["-v", "compare", str(suite), "--run", "nope/o1-s1"])


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    cfg = tiny_config(tmp_path, train={"max_steps": 1})
    run_dir = Path(cfg["output_dir"])
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"host": socket.gethostname(), "pid": holder.pid, "started": time.time(), "command": "clift run x"}
        (run_dir / LOCK_FILE).write_text(json.dumps(lock))
        with pytest.raises(ResumeError, match=f"being trained by pid {holder.pid}.*clift run x"):
            clift.run(cfg, stream=fixture_stream(names=["toysent"]))
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock is stale and taken over; the finished run releases it
    res = clift.run(cfg, stream=fixture_stream(names=["toysent"]))
    assert res.results["status"] == "complete" and not (run_dir / LOCK_FILE).exists()


def test_lock_from_another_host_is_never_taken_over(tmp_path):
    other = {"host": "node-17", "pid": 1, "started": time.time(), "command": "clift compare s.yaml --run a/o1-s1"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(other))
    with pytest.raises(ResumeError, match=r"node-17.*another host.*delete"):
        acquire_run_lock(tmp_path)
    (tmp_path / LOCK_FILE).unlink()
    mine = acquire_run_lock(tmp_path)
    assert acquire_run_lock(tmp_path).holder["pid"] == os.getpid()  # our own earlier lock: re-entrant
    mine.release()


def test_slurm_launcher_needs_submitit(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    suite = _suite(tmp_path, ["seq_lora"])
    assert main(["compare", str(suite), "--launcher", "slurm"]) == 2
    assert "pip install 'clift[slurm]'" in capsys.readouterr().err


@pytest.mark.slow
def test_local_fan_out_of_two_processes(tmp_path):
    suite = _suite(tmp_path, ["seq_lora", "inc_lora"])
    cmd = [sys.executable, "-m", "clift.cli", "compare", str(suite), "--launcher", "local", "--workers", "2", "-q"]
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for label in ("seq_lora", "inc_lora"):
        res = json.loads((tmp_path / "out" / label / "o1-s1" / "results.json").read_text())
        assert res["status"] == "complete"
        assert (tmp_path / "out" / label / "o1-s1.log").is_file()  # each ran as its own process
    table = (tmp_path / "out" / "suite.md").read_text()
    assert "seq_lora" in table and "inc_lora" in table
    assert plan_entries(str(suite), []) == []


def test_jobs_shares_the_cores_out_and_maps_to_the_local_launcher():
    import argparse

    from clift import fanout

    env = fanout.worker_env(2, {"PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert fanout.worker_env(2, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # the caller's choice wins
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    fanout.add_flags(p)
    args = p.parse_args(["suite.yaml", "--jobs", "2", "--plan"])
    assert args.jobs == 2


def test_single_runs_share_the_suite_zero_shot_cache_and_reuse_from(tmp_path):
    suite = _suite(tmp_path, ["seq_lora", "inc_lora"])
    for wanted in ("seq_lora/o1-s1", "inc_lora/o1-s1"):
        assert main(["compare", str(suite), "--run", wanted]) == 0
    timings = [
        json.loads((tmp_path / "out" / m / "o1-s1" / "results.json").read_text())["timings"]
        for m in ("seq_lora", "inc_lora")
    ]
    assert timings[0]["zero_shot_reused"] == [] and timings[1]["zero_shot_reused"] == ["toysent"]
    # another suite naming this one in reuse_from copies the finished run instead of training it
    spec = yaml.safe_load(suite.read_text())
    other = tmp_path / "other.yaml"
    other.write_text(
        yaml.safe_dump({**spec, "output_dir": str(tmp_path / "out2"), "reuse_from": str(tmp_path / "out")})
    )
    assert main(["compare", str(other), "--run", "seq_lora/o1-s1"]) == 0
    copied = tmp_path / "out2" / "seq_lora" / "o1-s1" / "results.json"
    assert copied.read_bytes() == (tmp_path / "out" / "seq_lora" / "o1-s1" / "results.json").read_bytes()
