"""benchmarks/gpu_check.py runs end to end on CPU with --tiny (the GPU path with tiny shapes)."""

from __future__ import annotations

import json

from tests.conftest import load_script


def test_tiny_gpu_check_end_to_end(tmp_path, capsys):
    gpu_check = load_script("benchmarks/gpu_check.py")
    argv = ["--tiny", "--out", str(tmp_path), "--shapes", "llama-1b,t5-large", "--methods", "inc_lora,deal"]
    report = gpu_check.main([*argv, "--steps", "1", "--warmup", "0", "--run-steps", "4"])
    on_disk = json.loads((tmp_path / "gpu-check.json").read_text())
    assert on_disk["pairs"] == json.loads(json.dumps(report["pairs"]))
    variants = [(p["shape"], p["variant"]) for p in report["pairs"]]
    assert ("llama-1b", "inc_lora") in variants and ("t5-large", "seq_lora+checkpointing") in variants
    assert ("llama-1b", "seq_lora+qlora-4bit") in variants
    for row in report["pairs"]:
        assert "skipped" in row or (row["time_ratio"] > 0 and row["step_s"] > 0)
    assert [r["method"] for r in report["runs"]] == ["inc_lora", "deal"]
    for run in report["runs"]:
        assert run["steps"] == 4 and run["losses_finite"] and run["resumed"] and run["resume_matches"]
    text = (tmp_path / "gpu-check.md").read_text()
    assert "1.77×" in text and "- llama-1b deal:" in text
    assert "× LoRA time" in capsys.readouterr().out
