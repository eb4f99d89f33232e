"""scripts/publish_results.py: the per-order README table is read from the runs' results.json."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from clift.suite import SuiteRun

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "publish_results.py"


def _load():
    spec = importlib.util.spec_from_file_location("publish_results", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp: Path, label: str, order: str, results: dict | None) -> SuiteRun:
    run_dir = tmp / label / f"o{order}-s1"
    if results is not None:
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")
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


def test_replace_block_only_touches_the_marked_block() -> None:
    pub = _load()
    text = "a\n<!-- results:x:orders -->\nold\n<!-- /results:x:orders -->\nb\n"
    assert pub._replace_block(text, "results:x:orders", "new\n") == (
        "a\n<!-- results:x:orders -->\nnew\n<!-- /results:x:orders -->\nb\n"
    )
    assert pub._replace_block(text, "results:y", "new\n") is None
