"""scripts/publish_results.py: README tables and committed files are read from the runs' results.json."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from clift.suite import SuiteRun, load_suite

from ..conftest import fake_results, load_script
from ..conftest import tiny_suite as _tiny_suite


def _load():
    return load_script("scripts/publish_results.py")


def _run(tmp: Path, label: str, order: str, results: dict | None) -> SuiteRun:
    run_dir = tmp / label / f"o{order}-s1"
    if results is not None:
        run_dir.mkdir(parents=True)
        # every results.json clift writes has status and run; a reader refuses a file without them
        record = {**results, "run": {"name": label, "method": label}}
        (run_dir / "results.json").write_text(json.dumps(record), encoding="utf-8")
    return SuiteRun(label, label, order, 1, run_dir, {}, {})


def test_per_order_table_reads_each_run_and_marks_unfinished(tmp_path: Path) -> None:
    pub = _load()
    done = {"status": "complete", "metrics": {"aa": 50.25, "bwt": -4.0}}
    runs = [
        _run(tmp_path, "gorp", "1", done),
        _run(tmp_path, "gorp", "2", {"status": "running", "metrics": {}}),
        _run(tmp_path, "mtl", "1", {"status": "complete", "metrics": {"aa": 55.0, "bwt": None}}),
        _run(tmp_path, "mtl", "2", None),
    ]
    table = pub.per_order_table(runs).splitlines()
    assert table[0] == "| method | o1 | o2 |"
    # 50.25 rounds half to even at one decimal: the table shows what the file holds, to 0.1
    assert table[2] == "| gorp | 50.2 / -4.0 | — |"
    assert table[3] == "| mtl | 55.0 | — |"


def test_publish_copies_finished_runs_and_writes_portable_files(tmp_path: Path, monkeypatch) -> None:
    pub = _load()
    repo = tmp_path / "repo"
    monkeypatch.setattr(pub, "ROOT", repo)
    spec = _tiny_suite(tmp_path / "elsewhere", ["seq_lora"], orders=[1, 2])
    spec["base"]["data"].pop("tasks")
    suite_file = repo / "configs" / "s.yaml"
    suite_file.parent.mkdir(parents=True)
    suite_file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    first, second = load_suite(suite_file).runs()
    first.run_dir.mkdir(parents=True)
    res = fake_results("seq_lora", {"aa": 40.0, "bwt": -5.0}, config=first.resolved, zero_shot=[25.0])
    (first.run_dir / "results.json").write_text(json.dumps(res), encoding="utf-8")
    second.run_dir.mkdir(parents=True)  # unfinished: not copied, not tabulated
    running = fake_results("seq_lora", {}, order="o2", config=second.resolved, status="running")
    (second.run_dir / "results.json").write_text(json.dumps(running), encoding="utf-8")
    readme = repo / "README.md"
    blocks = ["<!-- results:t -->", "<!-- /results:t -->", "<!-- results:t:orders -->", "<!-- /results:t:orders -->"]
    readme.write_text("\n".join(["x", *blocks, ""]))

    dest = pub.publish(suite_file, ["orders=[1,2]"], readme=readme)

    assert dest == repo / "results" / "t"
    assert (dest / "runs" / "seq_lora" / "o1-s1" / "results.json").is_file()
    assert not (dest / "runs" / "seq_lora" / "o2-s1").exists()
    text = readme.read_text()
    assert "| seq_lora | 1 | 40.0 | -5.0 |" in text and "| seq_lora | 40.0 / -5.0 | — |" in text
    # nothing in the committed files names the machine's paths
    summary = json.loads((dest / "suite.json").read_text())
    assert summary["config"]["output_dir"] == "results/t/runs"
    assert summary["runs"][0]["run_dir"] == "seq_lora/o1-s1"
    # the command that regenerates the table, overrides included
    assert "clift compare configs/s.yaml 'orders=[1,2]'" in (dest / "suite.md").read_text()
    for name in ("suite.json", "suite.md", "report/report.md"):
        assert str(tmp_path) not in (dest / name).read_text(), name


def test_publish_reports_the_committed_runs_without_the_output_folder(tmp_path: Path, monkeypatch) -> None:
    """On a fresh clone the suite's output folder is empty: the report is still written, from the runs
    committed under results/ (it used to be skipped, leaving a report that missed later runs)."""
    pub = _load()
    repo = tmp_path / "repo"
    monkeypatch.setattr(pub, "ROOT", repo)
    spec = _tiny_suite(tmp_path / "elsewhere", ["seq_lora", "inc_lora"])
    spec["base"]["data"].pop("tasks")
    suite_file = repo / "configs" / "s.yaml"
    suite_file.parent.mkdir(parents=True)
    suite_file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    for run in load_suite(suite_file).runs():  # committed earlier; the output folder never existed here
        target = repo / "results" / "t" / "runs" / run.label / run.run_dir.name
        target.mkdir(parents=True)
        res = fake_results(run.method, {"aa": 40.0, "bwt": -5.0}, config=run.resolved, zero_shot=[25.0])
        (target / "results.json").write_text(json.dumps(res), encoding="utf-8")
    (repo / "README.md").write_text("x\n", encoding="utf-8")

    dest = pub.publish(suite_file, [], readme=repo / "README.md")

    report = (dest / "report" / "report.md").read_text()
    assert "## seq_lora-o1-s1" in report and "## inc_lora-o1-s1" in report


def test_one_command_publishes_several_suites_then_the_claims(tmp_path: Path, monkeypatch) -> None:
    pub = _load()
    repo = tmp_path / "repo"
    monkeypatch.setattr(pub, "ROOT", repo)
    files = []
    for name, aa in (("a", 40.0), ("b", 50.0)):
        spec = _tiny_suite(tmp_path / "runs" / name, ["seq_lora", "inc_lora"], name=name)
        spec["base"]["data"].pop("tasks")
        for run in load_suite(spec).runs():
            run.run_dir.mkdir(parents=True)
            metrics = {"aa": aa + (5.0 if run.label == "inc_lora" else 0.0), "bwt": -1.0}
            res = fake_results(run.method, metrics, config=run.resolved, zero_shot=[25.0])
            (run.run_dir / "results.json").write_text(json.dumps(res), encoding="utf-8")
        files.append(repo / "configs" / f"{name}.yaml")
        files[-1].parent.mkdir(parents=True, exist_ok=True)
        files[-1].write_text(yaml.safe_dump(spec), encoding="utf-8")
    claims = repo / "claims.yaml"
    test = {"kind": "paired", "method": "inc_lora", "reference": "seq_lora", "metric": "aa", "expect": "higher"}
    claims.write_text(yaml.safe_dump({"suite": "x", "claims": [{"paper": "P", "claim": "c", "test": test}]}))
    # every README claims block is refreshed (b's too), not only the first suite's: a claim may read any suite
    blocks = "<!-- claims:a -->\n<!-- /claims:a -->\n<!-- claims:b -->\n<!-- /claims:b -->\n"
    (repo / "README.md").write_text(blocks, encoding="utf-8")

    assert pub.main([str(files[0]), str(files[1]), "seeds=[1]", "--claims", str(claims)]) == 0

    assert (repo / "results" / "a" / "suite.md").is_file() and (repo / "results" / "b" / "suite.md").is_file()
    # the claims are read off the first suite (one pair: a difference without an interval)
    assert "| P | c | inc_lora − seq_lora, AA (a) | 1 | +5.0 | not resolved |" in (repo / "README.md").read_text()
    assert (repo / "results" / "a" / "claims.md").is_file()
    assert "| P | c | inc_lora − seq_lora, AA (b) | 1 | +5.0 | not resolved |" in (repo / "README.md").read_text()
    assert pub.claims_suites(repo / "README.md", "b", "claims") == ["b", "a"]


def test_a_budget_sweep_publishes_its_table_figure_and_a_report_per_budget(tmp_path: Path, monkeypatch) -> None:
    pub = _load()
    repo = tmp_path / "repo"
    monkeypatch.setattr(pub, "ROOT", repo)
    spec = _tiny_suite(tmp_path / "runs", ["seq_lora"], name="b", budgets=[8, 16])
    spec["base"]["data"].pop("tasks")
    spec["base"]["data"].pop("train_per_task")
    for run in load_suite(spec).runs():
        run.run_dir.mkdir(parents=True)
        res = fake_results(run.method, {"aa": 30.0 + run.budget, "bwt": -1.0}, config=run.resolved)
        res["budgets"] = {"train_per_task": run.budget, "test_per_task": 4}
        (run.run_dir / "results.json").write_text(json.dumps(res), encoding="utf-8")
    suite_file = repo / "configs" / "b.yaml"
    suite_file.parent.mkdir(parents=True)
    suite_file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    (repo / "README.md").write_text("<!-- results:b -->\n<!-- /results:b -->\n", encoding="utf-8")

    dest = pub.publish(suite_file, [], readme=repo / "README.md")

    assert (dest / "budget_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "| seq_lora | 38.0 (1) | 46.0 (1) |" in (repo / "README.md").read_text()
    report = (dest / "report" / "report.md").read_text()
    # one summary table per budget, not a refusal to pool runs that differ in train_per_task
    assert "· train 8 test 4" in report and "· train 16 test 4" in report
