"""Reading user data from Python: a list of dicts or a ``datasets.Dataset`` / ``DatasetDict``.

Files in JSON, JSONL, CSV and Parquet are read by :mod:`clift.data.records` (Parquet needs
``pyarrow``: ``pip install clift[parquet]``). In-memory data becomes the same
:class:`~clift.data.records.Record` objects, so every path — YAML or Python — goes through the same
validation (:func:`~clift.data.records.records_to_examples`), carving, budgets and provenance::

    from clift.data.formats import make_task
    task = make_task("reviews", train=[{"text": "great", "label": "positive"}, ...], text_field="text")
    clift.run(config, stream=Stream("mine", [task, ...]))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from clift.data.records import Record, RecordProblems, label_string, records_to_examples
from clift.data.task import SPLITS, Example, Task
from clift.errors import DataError

#: split names a ``DatasetDict`` may use for clift's train / dev / test
DATASET_SPLITS = {"train": ("train",), "dev": ("validation", "dev", "valid"), "test": ("test",)}
DEFAULT_INSTRUCTION = "What is the label of the following text? Choose one from the option.\n"
DEFAULT_FREE_FORM_INSTRUCTION = ""


def _rows_of(data: Any, where: str) -> list[Mapping[str, Any]]:
    """The rows of a list of dicts or a ``datasets.Dataset`` (anything iterable over mappings)."""
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise DataError(
            f"{where}: expected a list of dicts or a datasets.Dataset, got {type(data).__name__}; a DatasetDict "
            "goes in 'data=' (its train/validation/test splits are used)."
        )
    return list(data)


def records_from_rows(
    rows: Sequence[Any], source: str, text_field: str, label_field: str, id_field: str | None, problems: RecordProblems
) -> list[Record]:
    """:class:`Record` objects for in-memory rows (``source`` names them in messages, "row n" as line)."""
    out: list[Record] = []
    for index, obj in enumerate(rows, start=1):
        if not isinstance(obj, Mapping):
            problems.add(f"{source}:{index} (record {index}): expected a dict, got {type(obj).__name__}.")
            continue
        missing = [f for f in (text_field, label_field) if f not in obj]
        if missing:
            problems.add(
                f"{source}:{index} (record {index}): missing field {' and '.join(map(repr, missing))} (fields "
                f"present: {', '.join(map(str, obj)) or 'none'}); set text_field/label_field."
            )
            continue
        rid = obj.get(id_field) if id_field else None
        out.append(Record(obj[text_field], obj[label_field], source, index, index, tuple(map(str, obj)), rid))
    return out


def _dataset_splits(data: Any) -> dict[str, Any]:
    """``{train/dev/test: rows}`` of a ``DatasetDict`` (or any mapping of split name to rows)."""
    if not isinstance(data, Mapping):
        raise DataError(f"'data' must be a datasets.DatasetDict or a dict of splits, got {type(data).__name__}.")
    out = {}
    for split, names in DATASET_SPLITS.items():
        for n in names:
            if n in data:
                out[split] = data[n]
                break
    unknown = sorted(set(data) - {n for names in DATASET_SPLITS.values() for n in names})
    if unknown or ("train" not in out and "test" not in out):
        raise DataError(
            f"the DatasetDict has splits {sorted(data)}; clift reads train, validation (or dev) and test. "
            "Rename the splits, or pass train=/dev=/test= yourself."
        )
    return out


def make_task(
    name: str,
    train: Any = None,
    test: Any = None,
    dev: Any = None,
    *,
    data: Any = None,
    labels: Sequence[str] | None = None,
    metric: str | None = None,
    family: str = "custom",
    instruction: str | None = None,
    show_options: bool = True,
    text_field: str = "sentence",
    label_field: str = "label",
    id_field: str | None = "id",
) -> Task:
    """A task from in-memory rows, validated exactly like a user stream file.

    Args:
        name: the task name (shown in the prompt).
        train / test / dev: lists of dicts or ``datasets.Dataset`` objects (``None``: absent; a missing
            test or dev split is carved from train when the run loads the stream).
        data: a ``datasets.DatasetDict`` (splits train / validation / test) instead of the three above.
        labels: the label set; ``None`` infers the sorted train labels, unless ``metric`` makes the task
            free-form.
        metric: ``accuracy`` (label task) or ``exact_match`` / ``rouge1`` / ``rougeL`` (free-form: no
            label set, any target text).
        family / instruction / show_options: as in a user stream YAML.
        text_field / label_field / id_field: the columns holding the input, the target and the example
            id (the id column is optional: without it ids are ``<split>#<row>``).

    Raises:
        DataError: listing every problem (missing field, empty text, a label outside the label set).
    """
    from clift.text_metrics import check_metric

    given = {"train": train, "dev": dev, "test": test}
    if data is not None:
        if any(v is not None for v in given.values()):
            raise DataError(f"task {name!r}: give either data= (a DatasetDict) or train=/dev=/test=, not both.")
        given = {**dict.fromkeys(SPLITS), **_dataset_splits(data)}
    problems = RecordProblems(f"task {name!r}")
    records = {
        s: records_from_rows(_rows_of(v, f"{name}/{s}"), f"{name}/{s}", text_field, label_field, id_field, problems)
        for s, v in given.items()
        if v is not None
    }
    free_form = metric not in (None, "accuracy")
    if metric is not None:
        check_metric(metric, free_form, f"task {name!r}")
    if free_form:
        labels = ()
    elif labels is None:
        labels = tuple(sorted({s for r in records.get("train", []) if (s := label_string(r.label))}))
    bad = [v for v in labels if not isinstance(v, str) or not v]
    if bad:
        raise DataError(f"task {name!r}: labels must be non-empty strings, got {bad}; quote them, e.g. ['yes', 'no'].")
    splits: dict[str, list[Example]] = {}
    for s, recs in records.items():
        splits[s], _ = records_to_examples(recs, tuple(labels) or None, problems, s)
    problems.raise_if_any()
    if instruction is None:
        instruction = DEFAULT_FREE_FORM_INSTRUCTION if free_form or not show_options else DEFAULT_INSTRUCTION
    return Task(
        name=name,
        family=family,
        instruction=instruction if not instruction or instruction.endswith("\n") else instruction + "\n",
        labels=tuple(labels),
        show_options=show_options,
        train=splits.get("train", []),
        dev=splits.get("dev", []),
        test=splits.get("test", []),
        metric=metric,
    )
