"""The comparison suite: aggregation of hand-made results, reuse, conflicts, validation, CLI, a real run."""

from __future__ import annotations

import argparse
import json
import time
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
import yaml

from clift.errors import ConfigError, ResumeError, TrainingError
from clift.methods import METHODS
from clift.results import RunRecord
from clift.suite import (
    add_compare_parser,
    aggregate,
    format_markdown,
    format_table,
    load_suite,
    order_dir,
    peak_memory_mb,
    run_suite,
)
from clift.suite.markdown import suite_meta
from tests.conftest import fake_results, tiny_suite

TABLE_HEAD = [
    "| method | runs | AA | BWT | FWT | forgetting | wall time (s) | peak memory (MB) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]


def hand_made_set() -> tuple[list[dict[str, Any]], list[str]]:
    results = [
        fake_results(
            "seq_lora",
            {"aa": 50.0, "bwt": -10.0, "fwt": None, "forgetting": 10.0},
            order="o1",
            total=100.0,
            peaks=(1000.0, 1200.0),
            zero_shot=[30.0, 40.0],
        ),
        fake_results(
            "seq_lora",
            {"aa": 60.0, "bwt": -20.0, "fwt": 2.0, "forgetting": 20.0},
            order="o2",
            total=120.0,
            peaks=(1100.0,),
            zero_shot=[20.0, 30.0],
        ),
        fake_results(
            "per_task",
            {"aa": 70.0},
            order="o1",
            total=50.0,
            peaks=(900.0,),
            zero_shot=[40.0, 30.0],  # same (model, stream, seed) as the first run: not counted again
            needs_task_id=True,
        ),
    ]
    return results, ["a", "a", "b"]


def test_aggregate_hand_made_results_into_the_expected_table():
    results, labels = hand_made_set()
    rows = aggregate(results, labels)
    assert [r["label"] for r in rows] == ["zero-shot", "a", "b"]
    a = rows[1]
    assert a["n"] == 2 and a["method"] == "seq_lora" and a["orders"] == ["o1", "o2"] and a["seeds"] == [1]
    # AA 50 and 60: s = 7.071, t_{0.975, 1} = 12.7062 -> half width 12.7062 * 7.071 / sqrt(2) = 63.531
    assert a["aa"] == {
        "mean": 55.0,
        "std": pytest.approx(50**0.5),
        "n": 2,
        "ci95": pytest.approx([-8.531, 118.531], abs=1e-3),
    }
    assert a["fwt"] == {"mean": 2.0, "std": None, "n": 1, "ci95": None}
    assert a["peak_memory_mb"] == 1200.0 and a["wall_seconds"]["mean"] == 110.0
    assert rows[2]["needs_task_id"] is True and rows[2]["bwt"]["mean"] is None
    assert rows[0]["aa"]["mean"] == 30.0 and rows[0]["n"] == 2
    assert format_table(rows).splitlines() == [
        *TABLE_HEAD,
        "| zero-shot | 2 | 30.0 ± 7.1 [-33.5, 93.5] | — | — | — | — | — |",
        "| a | 2 | 55.0 ± 7.1 [-8.5, 118.5] | -15.0 ± 7.1 [-78.5, 48.5] | 2.0 | 15.0 ± 7.1 [-48.5, 78.5] "
        "| 110 ± 14 | 1200 |",
        "| b † | 1 | 70.0 | — | — | — | 50 | 900 |",
    ]
    # default labels are the method names; incomplete runs are refused
    assert [r["label"] for r in aggregate(results)] == ["zero-shot", "seq_lora", "per_task"]
    with pytest.raises(ValueError, match="status 'running'"):
        aggregate([fake_results("x", {}, status="running")])
    with pytest.raises(ValueError, match="one label per run"):
        aggregate(results, ["a"])


def test_aggregate_reads_run_records_and_mappings_alike():
    results, labels = hand_made_set()
    records = [RunRecord.from_json(json.dumps(r)) for r in results]
    assert aggregate(records, labels) == aggregate(results, labels)
    assert peak_memory_mb(records[0]) == 1200.0 and peak_memory_mb({"timings": {"stages": []}}) is None


def test_plan_refuses_an_unreadable_results_file(tmp_path):
    spec = tiny_suite(tmp_path / "suite", ["seq_lora"])
    run = load_suite(spec).runs()[0]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "results.json").write_text('{"status": "complete", "run": {"seed": "one"}}')
    with pytest.raises(ResumeError, match=r"results.json' cannot be read .*run\.seed.*delete that run directory"):
        run_suite(spec, isolation="inline", dry_run=True)
    (run.run_dir / "results.json").write_text("{not json")
    with pytest.raises(ResumeError, match="cannot be read"):
        run_suite(spec, isolation="inline", dry_run=True)


def test_markdown_flags_wall_times_from_different_thread_counts():
    results, labels = hand_made_set()
    results[0]["environment"] = {"torch_threads": 2}
    results[1]["environment"] = {"torch_threads": 1}
    results[2]["environment"] = {"torch_threads": 2}
    rows = aggregate(results, labels)
    assert rows[1]["torch_threads"] == [1, 2] and rows[2]["torch_threads"] == [2]
    text = format_markdown(rows)
    assert "different CPU thread counts" in text and "a (1 thread, 2 threads)" in text and "b (" not in text
    # runs made before clift recorded the thread count are named as such; one setting is not flagged
    del results[1]["environment"]
    assert "a (2 threads, unrecorded)" in format_markdown(aggregate(results, labels))
    results[0].pop("environment")
    assert "thread counts" not in format_markdown(aggregate(results[:2], labels[:2]))


def test_markdown_flags_rows_run_with_another_thread_count_than_most():
    results, labels = hand_made_set()
    results.append(deepcopy(results[2]))  # a third row, "c", so that one thread count is the usual one
    labels.append("c")
    for result, threads in zip(results, [2, 2, 1, 2], strict=True):
        result["environment"] = {"torch_threads": threads}
    text = format_markdown(aggregate(results, labels))
    assert "most rows ran with 2 threads, these did not: b (1 thread)." in text
    assert "mixes runs" not in text
    results[2]["environment"] = {"torch_threads": 2}
    assert "thread count" not in format_markdown(aggregate(results, labels))
    # most rows ran before the count was recorded: the sentence says so instead of "ran with unrecorded"
    for result in results[:3]:
        result.pop("environment")
    text = format_markdown(aggregate(results, labels))
    assert "most rows ran with an unrecorded thread count, these did not: c (2 threads)." in text


def test_markdown_names_every_thread_group_when_no_count_is_the_usual_one():
    results, labels = hand_made_set()  # rows a (two runs) and b (one run): one row each way is a tie
    for result, threads in zip(results, [1, 1, 2], strict=True):
        result["environment"] = {"torch_threads": threads}
    text = format_markdown(aggregate(results, labels))
    assert "the rows split between thread counts (1 thread: a; 2 threads: b)." in text
    assert "most rows" not in text


def test_report_only_reads_hand_made_result_files(tmp_path):
    spec = tiny_suite(
        tmp_path / "suite",
        ["seq_lora", {"name": "olora", "lambda1": 0.1, "label": "olora-x"}],
        orders=["o1", "o2"],
    )
    spec["base"]["data"].pop("tasks")
    runs = load_suite(spec).runs()
    assert [(r.label, r.run_dir.name) for r in runs] == [
        ("seq_lora", "o1-s1"),
        ("seq_lora", "o2-s1"),
        ("olora-x", "o1-s1"),
        ("olora-x", "o2-s1"),
    ]
    assert runs[2].config["method"] == {"name": "olora", "lambda1": 0.1}
    made = [
        {"aa": 40.0, "bwt": -5.0, "fwt": 1.0, "forgetting": 5.0},
        {"aa": 44.0, "bwt": -7.0, "fwt": 3.0, "forgetting": 7.0},
        {"aa": 50.0, "bwt": -1.0, "fwt": 0.0, "forgetting": 1.0},
    ]
    for run, metrics in zip(runs[:3], made, strict=True):
        run.run_dir.mkdir(parents=True)
        res = fake_results(run.method, metrics, order=order_dir(run.order), config=run.resolved, zero_shot=[25.0])
        (run.run_dir / "results.json").write_text(json.dumps(res))
    result = run_suite(spec, report_only=True, isolation="inline")
    assert [r.state for r in result.runs] == ["reused", "reused", "reused", "missing"]
    table = [line for line in result.markdown.splitlines() if line.startswith("|")]
    assert table == [
        *TABLE_HEAD,
        "| zero-shot | 2 | 25.0 ± 0.0 [25.0, 25.0] | — | — | — | — | — |",
        "| seq_lora | 2 | 42.0 ± 2.8 [16.6, 67.4] | -6.0 ± 1.4 [-18.7, 6.7] | 2.0 ± 1.4 [-10.7, 14.7] "
        "| 6.0 ± 1.4 [-6.7, 18.7] | 100 ± 0 | 1000 |",
        "| olora-x | 1 | 50.0 | -1.0 | 0.0 | 1.0 | 100 | 1000 |",
        # olora-x against the reference, paired over the one (order, seed) both have: no interval
        "| method − seq_lora | pairs | ΔAA | ΔBWT | Δforgetting |",
        "|---|---:|---:|---:|---:|",
        "| olora-x | 1 | +10.0 | +4.0 | -4.0 |",
    ]
    assert "Not finished (left out of the table): olora-x/o2-s1." in result.markdown
    on_disk = json.loads((tmp_path / "suite" / "suite.json").read_text())
    assert [r["label"] for r in on_disk["rows"]] == ["zero-shot", "seq_lora", "olora-x"]
    assert on_disk["runs"][3]["state"] == "missing"
    assert on_disk["runs"][0]["run_dir"] == "seq_lora/o1-s1"  # relative: the directory can be moved
    assert (tmp_path / "suite" / "suite.md").read_text() == result.markdown


def test_suite_runs_every_method_on_tiny_llama_then_reuses_them(tmp_path):
    names = METHODS.names()
    spec = tiny_suite(tmp_path / "suite", names)
    first = run_suite(spec, isolation="inline")
    assert all(r.state == "ran" for r in first.runs)
    rows = {r["label"]: r for r in first.rows}
    assert set(rows) == {"zero-shot", *names}
    assert all(rows[n]["aa"]["mean"] is not None for n in names)
    assert rows["per_task"]["needs_task_id"] and not rows["inc_lora"]["needs_task_id"]
    assert "| per_task † | 1 |" in first.markdown
    stamps = {r.run_dir: (r.run_dir / "results.json").stat().st_mtime_ns for r in first.runs}

    t0 = time.time()
    second = run_suite(spec, isolation="inline")
    assert all(r.state == "reused" for r in second.runs) and time.time() - t0 < 5
    assert {r.run_dir: (r.run_dir / "results.json").stat().st_mtime_ns for r in second.runs} == stamps
    assert second.rows == first.rows

    # another setting in the same folders is refused, naming what differs; nothing runs
    changed = json.loads(json.dumps(spec))
    changed["base"]["train"]["lr"] = 1e-3
    with pytest.raises(ResumeError, match=r"different config \(train\.lr: 0\.005 → 0\.001\)"):
        run_suite(changed, isolation="inline")
    # an unfinished run is resumed (the runner continues from its checkpoint)
    path = first.runs[0].run_dir / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "running"}))
    plan = run_suite(spec, isolation="inline", dry_run=True)
    assert [r.state for r in plan.runs].count("resume") == 1 and plan.runs[0].state == "resume"


def test_process_isolation_runs_each_config_through_the_cli(tmp_path, monkeypatch):
    """``process`` isolation runs ``python -m clift.cli run <config> --quiet``; here the child process is
    replaced by the same CLI called in-process (a real interpreter start costs ~6 s of imports)."""
    import subprocess
    import sys

    from clift import cli

    calls = []
    real_run = subprocess.run

    def fake_run(cmd, stdout=None, stderr=None, check=False, **kwargs):
        if cmd[:3] != [sys.executable, "-m", "clift.cli"]:  # e.g. `git rev-parse` inside the run
            return real_run(cmd, stdout=stdout, stderr=stderr, check=check, **kwargs)
        calls.append(cmd)
        assert cmd[:4] == [sys.executable, "-m", "clift.cli", "run"] and "--quiet" in cmd
        assert yaml.safe_load(Path(cmd[4]).read_text())["method"] == {"name": "seq_lora"}
        code = cli.main(cmd[3:]) if not calls_fail else 2
        stdout.write("fake child output\nlast line\n")
        return subprocess.CompletedProcess(cmd, code)

    monkeypatch.setattr("clift.suite.execute.subprocess.run", fake_run)
    spec = tiny_suite(tmp_path / "suite", ["seq_lora"])
    spec["base"]["data"]["tasks"] = ["toysent"]
    calls_fail = True
    with pytest.raises(TrainingError, match=r"(?s)seq_lora o1 seed 1 failed \(exit code 2\).*last line"):
        run_suite(spec, isolation="process")
    calls_fail = False
    result = run_suite(spec, isolation="process")
    assert [r.state for r in result.runs] == ["ran"] and len(calls) == 2
    assert (tmp_path / "suite" / "seq_lora" / "o1-s1.log").read_text().startswith("fake child output")
    assert not list((tmp_path / "suite" / "seq_lora").glob(".*.yaml"))  # the temporary config is removed
    assert result.rows[1]["peak_memory_mb"] > 0


def test_suite_config_problems_are_reported_together(tmp_path):
    spec = tiny_suite(
        tmp_path,
        ["seq_lora", "seq_lora", "olra", {"name": "olora", "label": "bad label"}, {"name": "ewc", "gamma": 3}],
        seeds=[1, "two"],
        extra_key=1,
    )
    spec["base"]["method"] = {"name": "seq_lora"}
    with pytest.raises(ConfigError) as err:
        load_suite(spec)
    text = str(err.value)
    for part in (
        "unknown key 'extra_key'",
        "Did you mean 'olora'",
        "label 'bad label' is not a valid folder name",
        "label 'seq_lora' is used twice",
        "'two' is not an integer",
        "suite.base: sets `method`",
    ):
        assert part in text, part
    good = tiny_suite(tmp_path, [{"name": "ewc", "gamma": 3}])
    with pytest.raises(ConfigError, match=r"'ewc' \(order 1, seed 1\).*gamma must be in \[0, 1\]"):
        load_suite(good)


def test_method_defaults_and_per_entry_run_sections(tmp_path):
    spec = tiny_suite(
        tmp_path,
        ["seq_ft", "olora", {"name": "seq_lora", "r": 4, "run": {"train": {"lr": 1e-4}}}],
        method_defaults={"r": 2, "alpha": 4.0},
        orders=["order1"],
    )
    runs = {r.label: r for r in load_suite(spec).runs()}
    assert runs["olora"].config["data"]["order"] == "1" and runs["olora"].run_dir.name == "o1-s1"
    assert runs["seq_ft"].config["method"] == {"name": "seq_ft"}  # no LoRA fields: defaults skipped
    assert runs["olora"].resolved["method"]["r"] == 2 and runs["olora"].resolved["method"]["alpha"] == 4.0
    assert runs["seq_lora"].resolved["method"]["r"] == 4 and runs["seq_lora"].resolved["train"]["lr"] == 1e-4
    assert runs["olora"].resolved["train"]["lr"] == 5e-3
    with pytest.raises(ConfigError, match="'aplha' is a field of none of the listed methods"):
        load_suite({**spec, "method_defaults": {"aplha": 4.0}})


def test_compare_subcommand(tmp_path, capsys):
    spec = tiny_suite(tmp_path / "out", ["seq_lora"])
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    parser = argparse.ArgumentParser(prog="clift")
    add_compare_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["compare", str(path), "seeds=[1,2]", "--dry-run"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "o1-s1" in out and "o1-s2" in out and "2 to run, 0 to resume (unfinished), 0 reused" in out
    args = parser.parse_args(["compare", str(path), "--report-only", "-q"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert TABLE_HEAD[0] in out and "Not finished (left out of the table): seq_lora/o1-s1." in out
    assert f"command: `clift compare {path} --report-only -q`" not in out  # flags are not the command's args
    assert f"command: `clift compare {path}`" in out


def test_shipped_suite_configs_validate():
    root = Path(__file__).resolve().parents[1] / "configs" / "suite"
    files = sorted(root.rglob("*.yaml"))
    assert [f.name for f in files] == [
        "deal-ablation.yaml",
        "deal-dev.yaml",
        "gorp-ablation.yaml",
        "learnable-budgets.yaml",
        "learnable.yaml",
        "standard-proxy.yaml",
        "tiny.yaml",
        "titles.yaml",
    ]
    for f in files:
        suite = load_suite(f)
        assert {m.name for m in suite.methods} <= set(METHODS.names())
        assert suite.runs()


def test_a_suite_pairs_against_each_of_several_references(tmp_path):
    spec = tiny_suite(tmp_path / "suite", ["seq_lora", "inc_lora", "olora"], orders=["o1", "o2"])
    spec["base"]["data"].pop("tasks")
    spec["reference"] = ["seq_lora", "inc_lora", "replay"]
    aa = {"seq_lora": (40.0, 42.0), "inc_lora": (44.0, 47.0), "olora": (45.0, 49.0)}
    for run in load_suite(spec).runs():
        run.run_dir.mkdir(parents=True)
        metrics = {"aa": aa[run.label][int(run.order) - 1], "bwt": -1.0, "fwt": 0.0, "forgetting": 1.0}
        res = fake_results(run.method, metrics, order=order_dir(run.order), config=run.resolved)
        (run.run_dir / "results.json").write_text(json.dumps(res))
    result = run_suite(spec, report_only=True, isolation="inline")
    paired = json.loads((tmp_path / "suite" / "suite.json").read_text())["paired"]
    pairs = {(p["label"], p["reference"]): p["aa"]["mean"] for p in paired}
    # olora − inc_lora: (45 − 44, 49 − 47) → mean 1.5; each reference gets its own table
    assert pairs == {
        ("inc_lora", "seq_lora"): 4.5,
        ("olora", "seq_lora"): 6.0,
        ("seq_lora", "inc_lora"): -4.5,
        ("olora", "inc_lora"): 1.5,
    }
    md = result.markdown
    assert md.index("| method − seq_lora |") < md.index("| method − inc_lora |")
    # a reference with no finished runs is said, not silently dropped
    assert "No paired differences against `replay`: it has no finished runs in this table." in md
    alone = run_suite({**spec, "methods": ["seq_lora"]}, report_only=True, isolation="inline").markdown
    assert "No paired differences against `seq_lora`: no other row has a run to pair with it in this table." in alone


@pytest.mark.parametrize("value", [3, [], ["seq_lora", 1], ["seq_lora", "seq_lora"]])
def test_a_bad_reference_is_refused_naming_the_value(tmp_path, value):
    spec = tiny_suite(tmp_path / "suite", ["seq_lora"])
    spec["reference"] = value
    with pytest.raises(ConfigError, match=r"suite\.reference"):
        load_suite(spec)


def test_an_entry_can_run_more_seeds_than_the_suite(tmp_path):
    spec = tiny_suite(tmp_path / "s", ["seq_lora", {"name": "inc_lora", "seeds": [1, 2, 3]}], seeds=[1, 2])
    suite = load_suite(spec)
    assert [(r.label, r.seed) for r in suite.runs()] == [
        ("seq_lora", 1),
        ("seq_lora", 2),
        ("inc_lora", 1),
        ("inc_lora", 2),
        ("inc_lora", 3),
    ]
    assert suite.methods[1].overrides == {}  # `seeds` is the entry's, not a method field
    assert suite_meta(suite)["seeds"] == "1, 2 (inc_lora: 1, 2, 3)"
    spec["methods"][1]["seeds"] = [1, "x"]
    with pytest.raises(ConfigError, match=r"suite\.methods\[1\]\.seeds: 'x' is not an integer"):
        load_suite(spec)


def test_only_keeps_the_named_entries_with_their_settings(tmp_path):
    entries = ["seq_lora", {"name": "olora", "lambda1": 0.3, "label": "olora-0.3"}, "inc_lora"]
    spec = tiny_suite(tmp_path / "s", entries)
    suite = load_suite(spec, ["only=[inc_lora,olora-0.3]"])
    # the file's order, not the override's; the entry keeps its own method keys
    assert [m.label for m in suite.methods] == ["olora-0.3", "inc_lora"]
    assert suite.methods[0].overrides == {"lambda1": 0.3}
    assert {r.label for r in suite.runs()} == {"olora-0.3", "inc_lora"}
    assert [m.label for m in load_suite(spec, ["only=seq_lora"]).methods] == ["seq_lora"]
    with pytest.raises(ConfigError, match=r"suite\.only: 'olora' is not a label.*seq_lora, olora-0\.3, inc_lora"):
        load_suite(spec, ["only=[olora]"])
    with pytest.raises(ConfigError, match=r"suite\.only: got \[\]"):
        load_suite(spec, ["only=[]"])
