"""`clift report`: Markdown + PNG plots for one or several runs."""

from __future__ import annotations

import pytest

import clift
from clift.cli import main

from .conftest import fixture_stream, tiny_config

pytest.importorskip("matplotlib")


def test_report_for_several_runs(tmp_path, capsys):
    runs = []
    for method in ("seq_lora", "inc_lora"):
        for seed in (1, 2):
            cfg = tiny_config(tmp_path / f"{method}-{seed}", method=method, seed=seed, name=f"{method}-s{seed}")
            runs.append(clift.run(cfg, stream=fixture_stream()).run_dir)
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Summary (mean ± std [95 % interval] over runs)" in md
    assert "| seq_lora | 2 |" in md and "| inc_lora | 2 |" in md and "| zero-shot |" in md
    for name in ("seq_lora-s1", "inc_lora-s2"):
        assert (tmp_path / "rep" / f"{name}-matrix.png").stat().st_size > 5000
        assert (tmp_path / "rep" / f"{name}-curves.png").stat().st_size > 5000
    assert (tmp_path / "rep" / "aa.png").is_file()
    # run folders are named relative to the report, so both can be moved or committed together
    rel = runs[0].relative_to(tmp_path).as_posix()
    assert f"`../{rel}` — method `seq_lora`" in md and str(tmp_path) not in md
    assert "report written to" in capsys.readouterr().out


def test_report_on_a_single_run_defaults_into_it(tmp_path):
    res = clift.run(tiny_config(tmp_path), stream=fixture_stream())
    assert main(["report", str(res.run_dir)]) == 0
    md = (res.run_dir / "report" / "report.md").read_text()
    assert "AA " in md and "![accuracy matrix](test-matrix.png)" in md
    assert "`..` — method" in md


def test_report_needs_run_directories(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no results.json" in capsys.readouterr().err
