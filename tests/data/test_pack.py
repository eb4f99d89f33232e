"""The embedded pack: disjoint splits, sizes, manifest integrity, and byte-identical rebuilds."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from clift.data.benchmarks import task_catalog
from clift.data.pack import MANIFEST, PACK_DIR, read_manifest, read_pack_task
from clift.data.records import normalize_text
from clift.data.task import SPLITS

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO.parent / "shared" / "data" / "cl_benchmark"
MANIFEST_DATA = json.loads((PACK_DIR / MANIFEST).read_text())
AVAILABLE = sorted(t for t, e in MANIFEST_DATA["tasks"].items() if e["available"])


def test_manifest_lists_every_catalog_task_and_yahoo_as_unavailable():
    assert set(MANIFEST_DATA["tasks"]) == set(task_catalog().tasks)
    assert len(AVAILABLE) == 14
    yahoo = MANIFEST_DATA["tasks"]["yahoo"]
    assert yahoo["available"] is False and "TC/yahoo/train.json" in yahoo["reason"]
    assert MANIFEST_DATA["rules"]["params"] == {
        "seed": 0,
        "dev_size": 200,
        "dev_fraction": 0.2,
        "carve_fraction": 0.25,
        "train_cap": 1000,
        "test_cap": 500,
    }
    assert isinstance(MANIFEST_DATA["pack_version"], int)


def test_pack_is_small_and_files_match_the_manifest():
    files = sorted(PACK_DIR.iterdir())
    assert {f.name for f in files} == {MANIFEST, MANIFEST_DATA["licence_file"]} | {f"{t}.jsonl.gz" for t in AVAILABLE}
    assert "MIT License" in (PACK_DIR / MANIFEST_DATA["licence_file"]).read_text()
    total = sum(f.stat().st_size for f in files)
    assert total <= 15 * 1024 * 1024
    for task in AVAILABLE:
        raw = (PACK_DIR / f"{task}.jsonl.gz").read_bytes()
        assert hashlib.sha256(raw).hexdigest() == MANIFEST_DATA["tasks"][task]["file_sha256"], task


@pytest.mark.parametrize("task", AVAILABLE)
def test_pack_splits_are_pairwise_disjoint(task):
    splits = read_pack_task(task)
    entry = MANIFEST_DATA["tasks"][task]
    texts = {s: {normalize_text(ex.sentence) for ex in splits[s]} for s in SPLITS}
    ids = {s: {ex.id for ex in splits[s]} for s in SPLITS}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not texts[a] & texts[b], f"{task}: {a} and {b} share texts"
        assert not ids[a] & ids[b], f"{task}: {a} and {b} share source records"
    labels = set(task_catalog().tasks[task].labels)
    for s in SPLITS:
        assert len(texts[s]) == len(splits[s]) == entry["splits"][s]["n"]  # no duplicates inside a split
        counts = dict(sorted(Counter(ex.label for ex in splits[s]).items()))
        assert counts == entry["splits"][s]["labels"]
        assert set(counts) <= labels
    assert 0 < len(splits["train"]) <= 1000 and 0 < len(splits["dev"]) <= 200 and 0 < len(splits["test"]) <= 500
    # a carve never drains a class from train
    assert set(Counter(ex.label for ex in splits["train"])) == set(Counter(ex.label for ex in splits["dev"]))


def test_carve_rules_for_missing_splits_and_small_tasks():
    tasks = MANIFEST_DATA["tasks"]
    assert tasks["dbpedia"]["splits"]["train"]["origin"] == "carved from test.json"
    for t in ("yelp", "IMDB", "MultiRC"):
        assert tasks[t]["splits"]["test"]["origin"] == "carved from train.json"
        assert tasks[t]["splits"]["test"]["n"] >= 499
    for t in AVAILABLE:
        assert tasks[t]["splits"]["dev"]["origin"].startswith("carved from")
    assert [tasks["CB"]["splits"][s]["n"] for s in SPLITS] == [200, 50, 56]
    assert tasks["MNLI"]["dropped"]["test_label_outside_set"] == 131  # the "-" labels


def test_capped_train_splits_are_label_balanced():
    for task in AVAILABLE:
        counts = MANIFEST_DATA["tasks"][task]["splits"]["train"]["labels"]
        if MANIFEST_DATA["tasks"][task]["splits"]["train"]["n"] == 1000:
            assert max(counts.values()) - min(counts.values()) <= 1, (task, counts)


def test_manifest_hash_is_what_provenance_records():
    _, sha = read_manifest()
    assert sha == hashlib.sha256((PACK_DIR / MANIFEST).read_bytes()).hexdigest()


def _build_pack_module():
    spec = importlib.util.spec_from_file_location("build_pack", REPO / "scripts" / "build_pack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not SOURCE.is_dir(), reason="upstream files (../shared/data/cl_benchmark) not present")
def test_rebuild_is_byte_identical(tmp_path):
    # one task per rule: both files (CB), no train file (dbpedia), no test file (IMDB), unavailable (yahoo)
    build = _build_pack_module()
    manifest = build.build_pack(SOURCE, tmp_path, tasks=["CB", "dbpedia", "IMDB", "yahoo"])
    for task in ("CB", "dbpedia", "IMDB"):
        name = f"{task}.jsonl.gz"
        assert (tmp_path / name).read_bytes() == (PACK_DIR / name).read_bytes(), task
        assert manifest["tasks"][task] == MANIFEST_DATA["tasks"][task]
    assert manifest["tasks"]["yahoo"]["available"] is False
    assert not (tmp_path / "yahoo.jsonl.gz").exists()
