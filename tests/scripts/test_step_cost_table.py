"""scripts/step_cost_table.py: the README step-cost table is read from step_cost.py's JSON, one file per stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script


def _load():
    return load_script("scripts/step_cost_table.py")


def _write(path: Path, stage: int, rows: dict) -> Path:
    path.write_text(json.dumps({"args": {"stage": stage}, "results": rows}))
    return path


def _row(median: float, mean: float, base: tuple[float, float], peak: float | None = None) -> dict:
    row = {
        "step_s_median": median,
        "step_s_mean": mean,
        "time_ratio": median / base[0],
        "time_ratio_mean": mean / base[1],
    }
    return row | ({} if peak is None else {"peak_ratio": peak})


def test_table_has_one_column_per_stage_and_ratios_from_the_files(tmp_path):
    s1 = _write(tmp_path / "a.json", 1, {"seq_lora": _row(4, 4, (4, 4), 1.0), "gorp": _row(4.4, 4.8, (4, 4), 1.1)})
    s4 = _write(tmp_path / "b.json", 4, {"seq_lora": _row(5, 5, (5, 5)), "gorp": _row(5.5, 6, (5, 5))})
    module = _load()
    text = module.table(module.load([s4, s1]))  # sorted by stage, whatever the argument order
    assert "| `gorp` | 1.10 (1.20) | 1.10 (1.20) | 1.10 |" in text
    assert "| `seq_lora` | 1.00 (1.00) | 1.00 (1.00) | 1.00 |" in text
    assert text.index("stage 1:") < text.index("stage 4:")
    assert "median step: stage 1: 4.00 s, stage 4: 5.00 s." in text


def test_method_missing_at_a_stage_is_a_dash_and_readme_block_is_replaced(tmp_path):
    s1 = _write(tmp_path / "a.json", 1, {"seq_lora": _row(4, 4, (4, 4)), "deal": _row(4, 4, (4, 4))})
    s4 = _write(tmp_path / "b.json", 4, {"seq_lora": _row(5, 5, (5, 5))})
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- step-cost -->\nold\n<!-- /step-cost -->\nafter\n")
    module = _load()
    assert module.main([str(s1), str(s4), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert "| `deal` | 1.00 (1.00) | — | — |" in text


def test_two_files_for_one_stage_and_a_readme_without_the_block_are_refused(tmp_path):
    a = _write(tmp_path / "a.json", 1, {"seq_lora": _row(4, 4, (4, 4))})
    b = _write(tmp_path / "b.json", 1, {"seq_lora": _row(4, 4, (4, 4))})
    module = _load()
    with pytest.raises(SystemExit, match="two files for the same stage"):
        module.load([a, b])
    readme = tmp_path / "R.md"
    readme.write_text("no block\n")
    with pytest.raises(SystemExit, match="no <!-- step-cost -->"):
        module.main([str(a), "--readme", str(readme)])
