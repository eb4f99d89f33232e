"""A suite over training budgets (``budgets:``): one row per method and budget, pooling and pairing within
a budget, the data-efficiency tables and figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clift.errors import CliftError, ConfigError
from clift.suite import load_suite, order_dir, run_suite
from tests.conftest import fake_results, tiny_suite


def _spec(out: Path, **extra):
    spec = tiny_suite(out, ["seq_lora", {"name": "inc_lora", "label": "inc"}], orders=["o1", "o2"], **extra)
    spec["base"]["data"].pop("tasks")
    spec["base"]["data"].pop("train_per_task")
    return spec


def _write(run, aa: float, bwt: float, train: int | None = None) -> None:
    res = fake_results(run.method, {"aa": aa, "bwt": bwt}, order=order_dir(run.order), config=run.resolved)
    res["budgets"] = {"train_per_task": run.budget if train is None else train, "test_per_task": 4}
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "results.json").write_text(json.dumps(res))


def test_every_method_runs_once_per_budget_with_its_train_per_task(tmp_path):
    runs = load_suite(_spec(tmp_path, budgets=[8, 16])).runs()
    assert [(r.label, r.run_dir.name, r.entry, r.budget) for r in runs[:4]] == [
        ("seq_lora-n8", "o1-s1", "seq_lora", 8),
        ("seq_lora-n8", "o2-s1", "seq_lora", 8),
        ("seq_lora-n16", "o1-s1", "seq_lora", 16),
        ("seq_lora-n16", "o2-s1", "seq_lora", 16),
    ]
    assert len(runs) == 8 and runs[-1].label == "inc-n16"
    assert [r.resolved["data"]["train_per_task"] for r in runs[:4]] == [8, 8, 16, 16]
    assert runs[0].run_dir == tmp_path / "seq_lora-n8" / "o1-s1"
    plain = load_suite(_spec(tmp_path)).runs()  # no sweep: labels and folders as before
    assert [r.label for r in plain] == ["seq_lora", "seq_lora", "inc", "inc"] and plain[0].budget is None


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        ([], r"suite\.budgets: got \[\]; expected a non-empty list of positive integers"),
        ([8, 0], r"suite\.budgets: 0 is not a positive integer"),
        ([8, "16"], r"suite\.budgets: '16' is not a positive integer"),
        ([8, 8], r"suite\.budgets: \[8, 8\] lists a budget twice"),
    ],
)
def test_bad_budgets_are_refused_with_the_fix(tmp_path, budgets, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(_spec(tmp_path, budgets=budgets))


def test_budgets_and_a_fixed_train_per_task_conflict(tmp_path):
    spec = _spec(tmp_path, budgets=[8])
    spec["base"]["data"]["train_per_task"] = 8
    spec["methods"][1]["run"] = {"data": {"train_per_task": 4}}
    with pytest.raises(ConfigError) as err:
        load_suite(spec)
    text = str(err.value)
    assert "base.data, methods 'inc' run.data also sets it" in text and "remove train_per_task there" in text
    clash = _spec(tmp_path, budgets=[8])
    clash["methods"].append({"name": "olora", "label": "seq_lora-n8"})
    with pytest.raises(ConfigError, match="label 'seq_lora-n8' is also the name of a budget row"):
        load_suite(clash)


def test_report_pairs_within_a_budget_and_tabulates_the_curve(tmp_path):
    spec = _spec(tmp_path / "s", budgets=[8, 16])
    runs = load_suite(spec).runs()
    # seq_lora: n8 → AA 30, 34 / n16 → 40, 44; inc: seq_lora + 6 at n8 (both orders), + 10 and + 11 at n16
    values = {"seq_lora-n8": (30, 34), "seq_lora-n16": (40, 44), "inc-n8": (36, 40), "inc-n16": (50, 55)}
    for run in runs:
        aa = values[run.label][0 if order_dir(run.order) == "o1" else 1]
        _write(run, aa, -aa / 10)
    result = run_suite(spec, report_only=True, isolation="inline")
    rows = {r["label"]: r for r in result.rows}
    assert rows["inc-n16"]["entry"] == "inc" and rows["inc-n16"]["budget"] == 16
    assert rows["seq_lora-n8"]["aa"]["mean"] == pytest.approx(32.0)
    paired = json.loads((tmp_path / "s" / "suite.json").read_text())["paired"]
    by_label = {p["label"]: p for p in paired}
    assert set(by_label) == {"inc-n8", "inc-n16"}  # each against the reference at its own budget
    assert by_label["inc-n8"]["reference"] == "seq_lora-n8" and by_label["inc-n8"]["aa"]["mean"] == pytest.approx(6)
    assert by_label["inc-n16"]["reference"] == "seq_lora-n16" and by_label["inc-n16"]["budget"] == 16
    # n16: 10.5 ± 12.706 · 0.707 / √2 = [4.1, 16.9] resolved; n8: +6 in both orders, a zero-width interval: not
    assert by_label["inc-n16"]["aa"]["mean"] == pytest.approx(10.5) and by_label["inc-n16"]["aa"]["resolved"]
    assert by_label["inc-n8"]["aa"]["ci95"] == pytest.approx([6, 6]) and not by_label["inc-n8"]["aa"]["resolved"]
    md = result.markdown
    assert "| method | n = 8 | n = 16 |" in md
    assert "| inc | 38.0 ± 2.8 [12.6, 63.4] (2) | 52.5 ± 3.5 [20.7, 84.3] (2) |" in md
    assert "| method − seq_lora at the same budget | pairs |" in md
    assert "against `seq_lora` at the same budget" in md
    # the table marks only the interval with spread; the legend says why the zero-width one is not marked
    assert "**+10.5 [+4.1, +16.9]** ✓" in md and "+6.0 [+6.0, +6.0] |" in md and "**+6.0" not in md
    assert "unless it has zero width" in md
    curve = tmp_path / "s" / "budget_curve.png"
    assert curve in result.paths and curve.read_bytes()[:4] == b"\x89PNG"
    drawn = curve.read_bytes()
    run_suite(spec, report_only=True, isolation="inline")
    assert curve.read_bytes() == drawn  # the published figure regenerates byte-identically


def test_runs_of_one_budget_that_measured_different_things_are_refused(tmp_path):
    spec = _spec(tmp_path / "s", budgets=[8, 16])
    runs = load_suite(spec).runs()
    for i, run in enumerate(runs):
        # one n8 run claims another training budget than its row: pooling it would mix settings
        _write(run, 40.0, -1.0, train=12 if i == 1 else None)
    # only the n8 runs are compared with each other: the n16 runs differ from them on purpose
    with pytest.raises(CliftError, match=r"train_per_task: 8 \(seq_lora-n8, inc-n8, inc-n8\); 12 \(seq_lora-n8\)\n"):
        run_suite(spec, report_only=True, isolation="inline")


def test_a_tiny_budget_sweep_trains_with_each_budget(tmp_path):
    spec = tiny_suite(tmp_path / "s", ["seq_lora"], budgets=[4, 8])
    spec["base"]["data"].pop("train_per_task")
    result = run_suite(spec, isolation="inline")
    assert [r.state for r in result.runs] == ["ran", "ran"]
    for run in result.runs:
        record = json.loads((run.run_dir / "results.json").read_text())
        assert record["budgets"]["train_per_task"] == run.budget
        assert all(c["train"] == run.budget for c in record["counts"].values())
    assert {r["label"] for r in result.rows} >= {"seq_lora-n4", "seq_lora-n8"}


def test_a_sweep_copies_the_run_another_suite_already_made_at_its_budget(tmp_path):
    main = tiny_suite(tmp_path / "main", ["seq_lora"])
    main["base"]["data"]["train_per_task"] = 8
    run_suite(main, isolation="inline")
    made = tmp_path / "main" / "seq_lora" / "o1-s1" / "results.json"
    sweep = tiny_suite(tmp_path / "sweep", ["seq_lora"], budgets=[4, 8], reuse_from=str(tmp_path / "main"))
    sweep["base"]["data"].pop("train_per_task")
    planned = run_suite(sweep, isolation="inline", dry_run=True)
    assert [(r.label, r.state) for r in planned.runs] == [("seq_lora-n4", "new"), ("seq_lora-n8", "adopt")]
    assert not (tmp_path / "sweep" / "seq_lora-n8").exists()  # a dry run copies nothing
    result = run_suite(sweep, isolation="inline")
    assert [(r.label, r.state) for r in result.runs] == [("seq_lora-n4", "ran"), ("seq_lora-n8", "reused")]
    copied = tmp_path / "sweep" / "seq_lora-n8" / "o1-s1" / "results.json"
    assert copied.read_bytes() == made.read_bytes()
    # another config at the same folder name is not taken: the n4 run was trained here
    ran = json.loads((tmp_path / "sweep" / "seq_lora-n4" / "o1-s1" / "results.json").read_text())
    assert ran["config"]["data"]["train_per_task"] == 4


def test_reuse_from_must_name_folders(tmp_path):
    with pytest.raises(ConfigError, match=r"suite\.reuse_from"):
        load_suite(tiny_suite(tmp_path, ["seq_lora"], reuse_from=3))
