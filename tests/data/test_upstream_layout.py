"""The upstream ``CL_Benchmark`` layout through ``data_dir``: carve rules, missing files, validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clift.config import DataConfig
from clift.data.benchmarks import DATA_PACKAGE_DIR, list_benchmarks, load_stream, task_catalog
from clift.data.records import normalize_text
from clift.errors import DataError

FIXTURE = DATA_PACKAGE_DIR / "fixtures" / "cl_fixture"


def _rows(task: str, n: int, tag: str) -> list[dict[str, str]]:
    labels = task_catalog().tasks[task].labels
    return [{"sentence": f"{task} {tag} sentence number {i}", "label": labels[i % len(labels)]} for i in range(n)]


def _write(folder: Path, name: str, rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(rows, indent=1))


def make_upstream(root: Path) -> Path:
    """A small CL_Benchmark: the standard-proxy tasks with the real gaps, plus yahoo with labels only."""
    cat = task_catalog().tasks
    for task in ("amazon", "agnews", "MNLI"):
        d = root / cat[task].folder
        _write(d, "train.json", _rows(task, 60, "train"))
        _write(d, "test.json", _rows(task, 30, "test"))
        (d / "dev.json").write_text((d / "test.json").read_text())  # upstream dev is a copy of test
        (d / "labels.json").write_text(json.dumps(list(cat[task].labels)))
    mnli = root / cat["MNLI"].folder
    _write(mnli, "test.json", [*_rows("MNLI", 30, "test"), {"sentence": "no gold label", "label": "-"}])
    _write(root / cat["dbpedia"].folder, "test.json", _rows("dbpedia", 140, "test"))  # no train file
    yahoo = root / cat["yahoo"].folder
    yahoo.mkdir(parents=True)
    (yahoo / "labels.json").write_text(json.dumps(list(cat["yahoo"].labels)))
    return root


@pytest.fixture
def upstream(tmp_path) -> Path:
    return make_upstream(tmp_path / "CL_Benchmark")


def test_upstream_folder_loads_through_data_dir_with_carve_rules(upstream):
    stream = load_stream(DataConfig(benchmark="standard-proxy", order=3, data_dir=str(upstream)), seed=0)
    assert stream.name == "standard-proxy/o3"
    sizes = {t.name: (len(t.train), len(t.dev), len(t.test)) for t in stream}
    # dev = min(200, 20 % of train); dbpedia: test keeps 25 % of its file, the rest is the train pool
    assert sizes == {
        "MNLI": (48, 12, 30),
        "amazon": (48, 12, 30),
        "agnews": (48, 12, 30),
        "dbpedia": (84, 21, 35),
    }
    for task in stream:
        texts = {s: {normalize_text(ex.sentence) for ex in task.split(s)} for s in ("train", "dev", "test")}
        assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
        assert not texts["dev"] & texts["test"]  # upstream dev.json (= test) is never used as dev
        assert all(" train " in ex.sentence for ex in task.dev) or task.name == "dbpedia"
    assert "-" not in {ex.label for ex in stream[0].test}  # MNLI's unlabeled row is dropped


def test_data_dir_carving_is_deterministic_and_independent_of_the_run_seed(upstream):
    a = load_stream(DataConfig(benchmark="standard-proxy", data_dir=str(upstream)), seed=1)
    b = load_stream(DataConfig(benchmark="standard-proxy", data_dir=str(upstream)), seed=2)
    for ta, tb in zip(a, b, strict=True):
        for s in ("train", "dev", "test"):
            assert {ex.id for ex in ta.split(s)} == {ex.id for ex in tb.split(s)}


def test_missing_yahoo_gives_one_error_naming_the_file_and_the_fix(upstream):
    with pytest.raises(DataError) as err:
        load_stream(DataConfig(benchmark="standard", data_dir=str(upstream)), seed=0)
    msg = str(err.value)
    assert f"{upstream / 'TC' / 'yahoo' / 'train.json'}" in msg and "found: labels.json" in msg
    assert "data.data_dir" in msg and "standard-proxy" in msg
    assert msg.count("  - ") == 1  # one line per missing task: only yahoo


def test_missing_task_folders_are_listed_together(upstream):
    shutil.rmtree(upstream / "TC" / "agnews")
    with pytest.raises(DataError) as err:
        load_stream(DataConfig(benchmark="tc", data_dir=str(upstream)), seed=0)
    msg = str(err.value)
    assert "needs 2 task(s)" in msg
    assert f"folder {upstream / 'TC' / 'agnews'} does not exist" in msg and "yahoo" in msg


def test_data_dir_may_be_the_folder_that_holds_cl_benchmark(upstream):
    stream = load_stream(DataConfig(benchmark="standard-proxy", data_dir=str(upstream.parent)), seed=0)
    assert len(stream) == 4


def test_data_dir_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match=r"data.data_dir .*nowhere.* is not a folder"):
        load_stream(DataConfig(benchmark="standard-proxy", data_dir=str(tmp_path / "nowhere")), seed=0)


def test_a_labels_file_that_disagrees_with_the_catalog_is_refused(upstream):
    (upstream / "SC" / "amazon" / "labels.json").write_text('["bad", "good"]')
    with pytest.raises(DataError, match=r"amazon/labels.json: labels \['bad', 'good'\] differ"):
        load_stream(DataConfig(benchmark="standard-proxy", data_dir=str(upstream)), seed=0)


def test_a_malformed_upstream_record_is_reported_with_file_and_line(upstream):
    path = upstream / "TC" / "agnews" / "train.json"
    rows = _rows("agnews", 10, "train")
    rows[3] = {"text": "wrong field", "label": "World"}
    _write(path.parent, "train.json", rows)
    with pytest.raises(DataError, match=r"agnews/train.json:14 \(record 4\): missing field 'sentence'"):
        load_stream(DataConfig(benchmark="standard-proxy", data_dir=str(upstream)), seed=0)


def test_fixture_in_a_temporary_folder_loads_like_the_shipped_one(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "fx")
    ours = load_stream(DataConfig(benchmark="fixture", data_dir=str(tmp_path / "fx"), train_per_task=16), seed=4)
    shipped = load_stream(DataConfig(benchmark="fixture", train_per_task=16), seed=4)
    for a, b in zip(ours, shipped, strict=True):
        for s in ("train", "dev", "test"):
            assert [ex.sentence for ex in a.split(s)] == [ex.sentence for ex in b.split(s)]


def test_list_benchmarks_against_a_data_dir(upstream):
    infos = {i.name: i for i in list_benchmarks(data_dir=upstream)}
    assert infos["standard-proxy"].available and infos["standard-proxy"].source == "upstream"
    assert set(infos["standard"].missing) == {"yahoo"}
    assert not infos["long"].available and "CB" in infos["long"].missing
