"""benchmarks/parallel_throughput.py: both phases run on tiny-llama with the thread counts they claim; ratio."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import load_script, tiny_config


def test_throughput_ratio_is_serial_wall_over_parallel_wall():
    module = load_script("benchmarks/parallel_throughput.py")
    phases = [
        module.Phase("serial", 0, 2, 100.0, [50.0, 50.0], [2, 2]),
        module.Phase("parallel", 0, 1, 80.0, [80.0, 79.0], [1, 1]),
        module.Phase("parallel", 1, 1, 90.0, [90.0, 88.0], [1, 1]),
        module.Phase("serial", 1, 2, 120.0, [60.0, 60.0], [2, 2]),
    ]
    # 2 runs / 100 s serial = 72 runs/h; 2 runs / 80 s parallel = 90 runs/h; 90 / 72 = 1.25 = 100 / 80
    assert phases[0].runs_per_hour() == pytest.approx(72.0)
    ratio = module.throughput_ratio(phases)
    assert ratio["per_round"] == pytest.approx([1.25, 120.0 / 90.0])
    assert ratio["median"] == pytest.approx((1.25 + 120.0 / 90.0) / 2)


def test_both_phases_run_with_the_thread_counts_they_report(tmp_path, capsys):
    module = load_script("benchmarks/parallel_throughput.py")
    cfg = tiny_config(
        tmp_path,
        data={"benchmark": "fixture", "tasks": ["toysent", "toytopic"], "train_per_task": 8, "test_per_task": 4},
        train={"max_steps": 1, "batch_size": 4, "lr": 5e-3},
        save_adapters=False,
    )
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    args = [str(tmp_path / "run.yaml"), "--jobs", "2", "--threads", "2", "--workdir", str(tmp_path / "w")]
    out = module.main([*args, "--json", str(tmp_path / "t.json")])
    phases = {p["name"]: p for p in out["phases"]}
    assert phases["serial"]["run_threads"] == [2, 2] and phases["parallel"]["run_threads"] == [1, 1]
    assert out["ratio"]["median"] == pytest.approx(
        phases["serial"]["wall_seconds"] / phases["parallel"]["wall_seconds"]
    )
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [
        "r0-parallel-0",
        "r0-parallel-1",
        "r0-serial-0",
        "r0-serial-1",
    ]
    assert "parallel / serial throughput" in capsys.readouterr().out and (tmp_path / "t.json").exists()


def test_rejects_fewer_threads_than_jobs():
    module = load_script("benchmarks/parallel_throughput.py")
    with pytest.raises(SystemExit):
        module.parse_args(["configs/quickstart.yaml", "--jobs", "4", "--threads", "2"])
