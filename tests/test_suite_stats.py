"""Suite-level uncertainty: t-intervals per row, paired differences against the reference, no mixed pools."""

from __future__ import annotations

import copy

import pytest

import clift
from clift.errors import CliftError
from clift.report import write_report
from clift.suite.aggregation import aggregate, paired_rows
from clift.suite.markdown import format_markdown
from tests.conftest import fixture_stream, tiny_config


def _rec(method: str, order: str, seed: int, aa: float, bwt: float) -> dict:
    return {
        "status": "complete",
        "run": {
            "name": f"{method}-{order}-{seed}",
            "method": method,
            "model": "m",
            "stream": f"b/{order}",
            "seed": seed,
        },
        "tasks": ["a", "b"],
        "metrics": {"aa": aa, "bwt": bwt, "fwt": 0.0, "forgetting": -bwt},
        "timings": {"stages": [], "total_seconds": 10.0},
    }


RUNS = [
    _rec("seq_lora", "o1", 1, 40.0, -10.0),
    _rec("seq_lora", "o2", 1, 44.0, -12.0),
    _rec("seq_lora", "o3", 1, 42.0, -8.0),
    _rec("replay", "o1", 1, 50.0, -2.0),
    _rec("replay", "o2", 1, 55.0, -3.0),
    _rec("replay", "o3", 1, 51.0, -1.0),
    _rec("gorp", "o1", 1, 41.0, -9.0),
    _rec("gorp", "o2", 1, 43.0, -13.0),
]


def test_rows_carry_the_t_interval() -> None:
    rows = {r["label"]: r for r in aggregate(RUNS)}
    aa = rows["seq_lora"]["aa"]
    # 40, 44, 42: mean 42, s = 2, t_{0.975, 2} = 4.302653 -> half width 4.968
    assert aa["mean"] == 42.0 and aa["std"] == 2.0 and aa["n"] == 3
    assert aa["ci95"] == pytest.approx([42 - 4.968275, 42 + 4.968275], abs=1e-5)


def test_paired_differences_pair_by_order_and_seed() -> None:
    labels = [r["run"]["method"] for r in RUNS]
    rows = {r["label"]: r for r in paired_rows(RUNS, labels, "seq_lora")}
    # replay − seq_lora per order: +10, +11, +9 -> mean 10, s = 1, half width 2.484: resolved
    assert rows["replay"]["aa"]["n"] == 3 and rows["replay"]["aa"]["mean"] == pytest.approx(10.0)
    assert rows["replay"]["aa"]["resolved"]
    # gorp has o1 and o2 only: +1, -1 -> mean 0, not resolved
    assert rows["gorp"]["aa"]["n"] == 2 and rows["gorp"]["aa"]["mean"] == pytest.approx(0.0)
    assert not rows["gorp"]["aa"]["resolved"]
    md = format_markdown(aggregate(RUNS), {"name": "s"}, None, list(rows.values()))
    assert "| method − seq_lora | pairs |" in md and "**+10.0 [+7.5, +12.5]** ✓" in md
    assert paired_rows(RUNS, labels, "absent") == []


def test_report_refuses_to_pool_different_models_and_groups_them_when_allowed(tmp_path) -> None:
    dirs = []
    for model in ("tiny-llama", "tiny-t5"):
        cfg = tiny_config(tmp_path / model, model=model, train={"max_steps": 1, "batch_size": 4, "lr": 5e-3})
        dirs.append(clift.run(cfg, stream=fixture_stream(train=4, test=4, names=["toysent", "toytopic"])).run_dir)
    with pytest.raises(CliftError, match="differ in model"):
        write_report(dirs, tmp_path / "rep")
    assert not (tmp_path / "rep").exists()  # refused before writing anything
    report = write_report(dirs, tmp_path / "rep", allow_mixed=True)
    text = report.read_text()
    assert text.count("## Summary") == 2 and "tiny-llama ·" in text and "tiny-t5 ·" in text


def test_single_runs_get_no_interval() -> None:
    rows = {r["label"]: r for r in aggregate([copy.deepcopy(RUNS[0])])}
    assert rows["seq_lora"]["aa"]["ci95"] is None
