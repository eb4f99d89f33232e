"""User streams: the three file formats, defaults, and every validation error with file and line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from clift.config import DataConfig
from clift.data.benchmarks import data_provenance, load_stream
from clift.data.records import normalize_text
from clift.errors import DataError

from ..conftest import review_rows, write_rows, write_stream


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_each_format_loads_with_defaults(tmp_path, fmt):
    stream = load_stream(DataConfig(stream=str(write_stream(tmp_path, fmt))), seed=0)
    assert stream.name == f"my-{fmt}" and stream.task_names == ["reviews"]
    task = stream[0]
    assert task.family == "custom" and task.labels == ("negative", "positive")  # inferred, sorted
    assert task.instruction.endswith("Choose one from the option.\n")
    assert (len(task.train), len(task.dev), len(task.test)) == (32, 8, 12)  # dev: 20 % of train
    assert task.prompt("X").endswith("Option: negative, positive \nX\nAnswer:")
    train_texts = {normalize_text(ex.sentence) for ex in task.train}
    assert not train_texts & {normalize_text(ex.sentence) for ex in task.dev}


def test_declared_family_labels_and_budgets(tmp_path):
    path = write_stream(tmp_path, "jsonl", family="SC", labels=["positive", "negative"], label_field="label")
    stream = load_stream(DataConfig(stream=str(path), train_per_task=10, test_per_task=4), seed=3)
    task = stream[0]
    assert task.family == "SC" and task.labels == ("positive", "negative")
    assert task.instruction == "What is the sentiment of the following paragraph? Choose one from the option.\n"
    assert (len(task.train), len(task.test)) == (10, 4)


def test_instruction_gets_its_newline_and_show_options_is_honoured(tmp_path):
    path = write_stream(tmp_path, "json", instruction="Pick one.", show_options=False)
    task = load_stream(DataConfig(stream=str(path)), seed=0)[0]
    assert task.prompt("X") == "Task:custom\nDataset:reviews\nPick one.\nX\nAnswer:"


def test_missing_test_and_given_dev(tmp_path):
    write_rows(tmp_path / "a.csv", review_rows(40, "train"))
    write_rows(tmp_path / "b.jsonl", review_rows(6, "dev"))
    (tmp_path / "s.yaml").write_text(
        "tasks:\n  - name: only-train\n    train: a.csv\n    text_field: text\n"
        "  - name: with-dev\n    train: a.csv\n    dev: b.jsonl\n    text_field: text\n"
    )
    stream = load_stream(DataConfig(stream=str(tmp_path / "s.yaml")), seed=0)
    assert stream.name == "s"
    carved, given = stream
    assert (len(carved.train), len(carved.dev), len(carved.test)) == (
        24,
        6,
        10,
    )  # test 25 %, dev 20 % of rest
    assert len(given.dev) == 6 and all(" dev " in ex.sentence for ex in given.dev)


def test_user_stream_provenance(tmp_path):
    path = write_stream(tmp_path, "csv")
    prov = data_provenance(DataConfig(stream=str(path), train_per_task=8), seed=2)
    assert prov["source"] == "user" and prov["stream"] == "my-csv"
    assert prov["files"]["reviews"]["train"]["path"].endswith("train.csv")
    assert len(prov["stream_sha256"]) == 64 and prov["overlap"] == {"reviews": 0}
    assert prov["budgets"]["train_per_task"] == 8 and prov["seed"] == 2


# ---- validation: every error names the file and the line ------------------------------------------


def _load(path: Path):
    return load_stream(DataConfig(stream=str(path)), seed=0)


def test_missing_field_json_list_names_line_and_record(tmp_path):
    path = write_stream(tmp_path, "json")
    rows = review_rows(40, "train")
    rows[2] = {"txt": "oops", "label": "positive"}
    write_rows(tmp_path / "train.json", rows)
    # indent=1: "[" on line 1, then four lines per record, so record 3 starts on line 10
    with pytest.raises(DataError, match=r"train\.json:10 \(record 3\): missing field 'text' \(fields present: txt"):
        _load(path)


def test_empty_text_jsonl(tmp_path):
    path = write_stream(tmp_path, "jsonl")
    rows = review_rows(40, "train")
    rows[4]["text"] = "   "
    write_rows(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"train\.jsonl:5 \(record 5\): empty text"):
        _load(path)


def test_label_outside_the_label_set_csv(tmp_path):
    path = write_stream(tmp_path, "csv", labels=["positive", "negative"])
    rows = review_rows(12, "test")
    rows[6]["label"] = "neutral"
    write_rows(tmp_path / "test.csv", rows)
    # header on line 1: record 7 is on line 8
    with pytest.raises(DataError, match=r"test\.csv:8 \(record 7\): label 'neutral' is not in the label set"):
        _load(path)


def test_test_label_unseen_in_train_when_labels_are_inferred(tmp_path):
    path = write_stream(tmp_path, "jsonl")
    rows = review_rows(12, "test")
    rows[0]["label"] = "mixed"
    write_rows(tmp_path / "test.jsonl", rows)
    with pytest.raises(DataError, match=r"test\.jsonl:1 \(record 1\): label 'mixed' is not in the label set"):
        _load(path)


def test_non_utf8_bytes(tmp_path):
    path = write_stream(tmp_path, "csv")
    raw = (tmp_path / "train.csv").read_bytes().splitlines(keepends=True)
    raw[3] = raw[3].replace(b"item", b"it\xe9m")  # latin-1 é
    (tmp_path / "train.csv").write_bytes(b"".join(raw))
    with pytest.raises(DataError, match=r"train\.csv:4: byte b'\\xe9' at column \d+ is not valid UTF-8"):
        _load(path)


def test_malformed_jsonl_line(tmp_path):
    path = write_stream(tmp_path, "jsonl")
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    lines[6] = lines[6][:-1]  # drop the closing brace
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl:7: malformed JSON line"):
        _load(path)


def test_malformed_json_list(tmp_path):
    path = write_stream(tmp_path, "json")
    text = (tmp_path / "test.json").read_text()
    # drop the comma between records 3 and 4; record 4 starts on line 1 + 3 * 4 + 1
    broken = text.replace('},\n {\n  "text": "the test item 3', '}\n {\n  "text": "the test item 3')
    assert broken != text
    (tmp_path / "test.json").write_text(broken)
    with pytest.raises(DataError, match=r"test\.json:14: malformed JSON: expected ',' or '\]'"):
        _load(path)


def test_json_that_is_not_a_list(tmp_path):
    path = write_stream(tmp_path, "json")
    (tmp_path / "test.json").write_text('{"text": "a", "label": "positive"}')
    with pytest.raises(DataError, match=r"test\.json:1: a \.json data file must hold a JSON list"):
        _load(path)


def test_malformed_csv_row(tmp_path):
    path = write_stream(tmp_path, "csv")
    with (tmp_path / "train.csv").open("a", encoding="utf-8") as fh:
        fh.write("an unquoted, comma,positive\n")
    with pytest.raises(DataError, match=r"train\.csv:42 \(record 41\): malformed CSV row with 3 fields"):
        _load(path)


def test_csv_multiline_field_keeps_line_numbers(tmp_path):
    path = write_stream(tmp_path, "csv")
    rows = review_rows(40, "train")
    rows[0]["text"] = "first line\nsecond line"
    rows[2]["text"] = ""
    write_rows(tmp_path / "train.csv", rows)
    # record 1 spans lines 2-3, so record 3 starts on line 5
    with pytest.raises(DataError, match=r"train\.csv:5 \(record 3\): empty text"):
        _load(path)


def test_csv_header_without_the_text_column(tmp_path):
    path = write_stream(tmp_path, "csv", text_field="review")
    with pytest.raises(
        DataError, match=r"train\.csv:1: the CSV header has no column 'review' \(columns: text, label\)"
    ):
        _load(path)


def test_all_record_problems_are_reported_together(tmp_path):
    path = write_stream(tmp_path, "jsonl", labels=["positive", "negative"])
    rows = review_rows(40, "train")
    rows[1]["label"] = "meh"
    rows[3]["text"] = ""
    write_rows(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError) as err:
        _load(path)
    msg = str(err.value)
    assert "2 problems" in msg and "train.jsonl:2 (record 2)" in msg and "train.jsonl:4 (record 4)" in msg


def test_overlap_above_threshold_is_an_error_naming_test_lines(tmp_path):
    path = write_stream(tmp_path, "jsonl")
    test = review_rows(12, "test")
    train = review_rows(40, "train")
    test[2]["text"], test[5]["text"] = train[0]["text"].upper(), train[1]["text"]  # normalised match
    write_rows(tmp_path / "test.jsonl", test)
    with pytest.raises(DataError, match=r"test\.jsonl: 2 of 12 test examples \(16\.7%\).*test lines 3, 6.*0\.05"):
        _load(path)


def test_overlap_below_threshold_warns_and_drops_the_train_copies(tmp_path):
    path = write_stream(tmp_path, "csv", overlap_threshold=0.2)
    test = review_rows(12, "test")
    train = review_rows(40, "train")
    test[2]["text"] = train[0]["text"]
    write_rows(tmp_path / "test.csv", test)
    with pytest.warns(UserWarning, match=r"test\.csv: 1 of 12 test examples .*test lines 4\)"):
        stream = _load(path)
    task = stream[0]
    assert len(task.train) + len(task.dev) == 39
    assert train[0]["text"] not in {ex.sentence for ex in [*task.train, *task.dev]}


def test_threshold_zero_refuses_any_overlap(tmp_path):
    (tmp_path / "x").mkdir()
    path = write_stream(tmp_path / "x", "json")
    data = json.loads(path.read_text())
    data["overlap_threshold"] = 0
    path.write_text(json.dumps(data))
    test = review_rows(12, "test")
    test[0]["text"] = review_rows(1, "train")[0]["text"]
    write_rows(tmp_path / "x" / "test.json", test)
    with pytest.raises(DataError, match="above overlap_threshold=0"):
        _load(path)


def test_unknown_keys_list_the_allowed_keys(tmp_path):
    path = write_stream(tmp_path, "jsonl", lables=["a"])
    with pytest.raises(DataError, match=r"stream\.yaml:\d+ \(task 1\): unknown key 'lables'\. Did you mean 'labels'\?"):
        _load(path)
    data = json.loads(path.read_text())
    data["tasks"][0].pop("lables")
    data["tsks"] = []
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"unknown key 'tsks'.*Allowed keys: name, description, tasks"):
        _load(path)


def test_yaml_task_line_numbers_and_missing_files(tmp_path):
    write_rows(tmp_path / "t.jsonl", review_rows(10, "train"))
    (tmp_path / "s.yaml").write_text(
        "name: s\ntasks:\n  - name: ok\n    train: t.jsonl\n    text_field: text\n  - name: bad\n    train: nope.csv\n"
    )
    with pytest.raises(DataError, match=r"s\.yaml:6 \(task 2\): train file .*nope\.csv' does not exist"):
        _load(tmp_path / "s.yaml")


def test_unknown_extension_and_missing_train(tmp_path):
    write_rows(tmp_path / "t.txt", review_rows(10, "train"), fmt="jsonl")
    (tmp_path / "s.yaml").write_text("tasks:\n  - name: a\n    train: t.txt\n  - name: b\n    test: t.txt\n")
    with pytest.raises(DataError) as err:
        _load(tmp_path / "s.yaml")
    msg = str(err.value)
    assert "cannot tell the format from the extension '.txt'" in msg
    assert "s.yaml:4 (task 2): 'train' is required" in msg


def test_format_key_overrides_the_extension(tmp_path):
    write_rows(tmp_path / "t.txt", review_rows(20, "train"), fmt="jsonl")
    (tmp_path / "s.yaml").write_text("tasks:\n  - {name: a, train: t.txt, format: jsonl, text_field: text}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(_load(tmp_path / "s.yaml")[0].test) == 5


def test_stream_file_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match=r"user stream file .*missing\.yaml' does not exist"):
        _load(tmp_path / "missing.yaml")
