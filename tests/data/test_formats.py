"""Data formats and paths: Parquet, datasets, lists of dicts, the id column, label quoting, Python validation."""

from __future__ import annotations

import pytest

import clift
from clift.config import DataConfig
from clift.data.benchmarks import data_provenance, load_stream
from clift.data.formats import make_task
from clift.data.python_stream import prepare_stream
from clift.data.task import Example, Stream, Task
from clift.errors import DataError
from tests.conftest import fixture_stream, tiny_config
from tests.data.test_user_stream import review_rows, write_rows


def _with_ids(rows: list[dict], prefix: str) -> list[dict]:
    return [{"id": f"{prefix}-{i}", **r} for i, r in enumerate(rows)]


def test_parquet_stream_keeps_ids(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    for split, n in (("train", 40), ("test", 12)):
        pq.write_table(pa.Table.from_pylist(_with_ids(review_rows(n, split), split)), tmp_path / f"{split}.parquet")
    (tmp_path / "s.yaml").write_text(
        "name: pq\ntasks:\n  - name: reviews\n    train: train.parquet\n    test: test.parquet\n    text_field: text\n"
    )
    stream = load_stream(DataConfig(stream=str(tmp_path / "s.yaml")), seed=0)
    task = stream[0]
    assert task.labels == ("negative", "positive") and len(task.test) == 12
    assert all(ex.id.startswith("test-") for ex in task.test)  # the user's id column, not file#n
    prov = data_provenance(DataConfig(stream=str(tmp_path / "s.yaml")), 0)
    assert len(prov["files"]["reviews"]["train"]["sha256"]) == 64


def test_csv_id_column_and_duplicate_ids(tmp_path) -> None:
    write_rows(tmp_path / "train.csv", _with_ids(review_rows(20, "train"), "r"))
    rows = _with_ids(review_rows(6, "test"), "t")
    rows[3]["id"] = "t-0"
    write_rows(tmp_path / "test.csv", rows)
    (tmp_path / "s.yaml").write_text(
        "tasks:\n  - name: reviews\n    train: train.csv\n    test: test.csv\n    text_field: text\n"
    )
    with pytest.raises(DataError, match=r"test.csv:5 \(record 4\): id 't-0' is already used"):
        load_stream(DataConfig(stream=str(tmp_path / "s.yaml")), seed=0)


def test_unquoted_yaml_booleans_in_labels_give_one_error(tmp_path) -> None:
    rows = [{"text": f"is item {i} ok", "label": "yes" if i % 2 else "no"} for i in range(40)]
    write_rows(tmp_path / "train.csv", rows)
    (tmp_path / "s.yaml").write_text(
        "tasks:\n  - name: q\n    labels: [yes, no]\n    train: train.csv\n    text_field: text\n"
    )
    with pytest.raises(DataError) as err:
        load_stream(DataConfig(stream=str(tmp_path / "s.yaml")), seed=0)
    msg = str(err.value)
    assert "s.yaml" in msg and "'labels'" in msg and 'labels: ["yes", "no"]' in msg
    assert msg.count("\n") == 0  # one error, not one per record
    (tmp_path / "s.yaml").write_text(
        "tasks:\n  - name: q\n    labels: ['yes', 'no']\n    train: train.csv\n    text_field: text\n"
    )
    assert load_stream(DataConfig(stream=str(tmp_path / "s.yaml")), seed=0)[0].labels == ("yes", "no")


def test_free_form_yaml_task(tmp_path) -> None:
    rows = [{"text": f"Text: story number {i} about cats", "title": f"Cats {i}"} for i in range(40)]
    write_rows(tmp_path / "train.jsonl", rows)
    (tmp_path / "s.yaml").write_text(
        "tasks:\n  - name: titles\n    metric: rougeL\n    train: train.jsonl\n    text_field: text\n"
        "    label_field: title\n"
    )
    task = load_stream(DataConfig(stream=str(tmp_path / "s.yaml"), train_per_task=5), seed=0)[0]
    assert task.free_form and task.score_metric == "rougeL" and len(task.train) == 5
    assert "Option" not in task.prompt("x") and "Choose one" not in task.prompt("x")
    assert len(task.test) == 10  # carved from train: 25 %


def test_show_options_false_drops_choose_one(tmp_path) -> None:
    write_rows(tmp_path / "train.csv", review_rows(40, "train"))
    (tmp_path / "s.yaml").write_text(
        "tasks:\n  - name: r\n    show_options: false\n    train: train.csv\n    text_field: text\n"
    )
    task = load_stream(DataConfig(stream=str(tmp_path / "s.yaml")), seed=0)[0]
    assert "Choose one from the option" not in task.prompt("x") and "Option:" not in task.prompt("x")


def test_list_of_dicts_and_datasets_make_the_same_task() -> None:
    datasets = pytest.importorskip("datasets")
    train, test = _with_ids(review_rows(30, "train"), "a"), _with_ids(review_rows(8, "test"), "b")
    from_list = make_task("reviews", train=train, test=test, text_field="text")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(train), "test": datasets.Dataset.from_list(test)})
    from_ds = make_task("reviews", data=dd, text_field="text")
    assert from_list == from_ds
    assert from_list.labels == ("negative", "positive") and from_list.train[0].id == "a-0"
    with pytest.raises(DataError, match=r"reviews/train:3 \(record 3\): label 'meh' is not in the label set"):
        make_task(
            "reviews",
            train=[*train[:2], {"text": "x", "label": "meh"}],
            labels=["positive", "negative"],
            text_field="text",
        )


def test_python_stream_applies_budgets_and_checks() -> None:
    stream = fixture_stream(train=32, test=12)
    out, prov = prepare_stream(stream, DataConfig(train_per_task=10, test_per_task=5), seed=0)
    assert [len(t.train) for t in out] == [10, 10, 10] and [len(t.test) for t in out] == [5, 5, 5]
    assert prov["source"] == "python" and len(prov["content_sha256"]["toysent"]["train"]) == 64
    bad_label = Task(
        "t",
        "SC",
        "",
        ("a", "b"),
        True,
        [Example("x y", "c", "1"), Example("y z", "a", "2")],
        [],
        [Example("q", "a", "3")],
    )
    with pytest.raises(DataError, match="label 'c' is not in the label set"):
        prepare_stream(Stream("s", [bad_label]), DataConfig(), 0)
    same = [Example(f"text {i}", "a", f"i{i}") for i in range(20)]
    leak = Task("t", "SC", "", ("a",), True, same, [], list(same[:5]))
    with pytest.raises(DataError, match="repeat a train/dev text"):
        prepare_stream(Stream("s", [leak]), DataConfig(), 0)
    empty_id = Task("t", "SC", "", ("a",), True, [Example("x", "a", "1"), Example("y", "a", "")], [], same[:2])
    with pytest.raises(DataError, match="empty id"):
        prepare_stream(Stream("s", [empty_id]), DataConfig(), 0)


@pytest.mark.slow
def test_run_with_python_stream_applies_budgets(tmp_path) -> None:
    cfg = tiny_config(tmp_path, data={"train_per_task": 6, "test_per_task": 4})
    res = clift.run(cfg, stream=fixture_stream(train=32, test=12, names=["toysent", "toytopic"]))
    r = res.results
    assert r["counts"]["toysent"]["train"] == 6 and r["counts"]["toysent"]["test"] == 4
    assert r["training"][0]["examples"] == 6
    assert r["data"]["source"] == "python" and r["data"]["budgets"]["train_per_task"] == 6
