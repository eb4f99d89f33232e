"""User streams: a YAML file that lists tasks with their own data files.

Example (paths are relative to the YAML file)::

    name: my-stream
    overlap_threshold: 0.05        # optional: error when > 5 % of a test split also occurs in train/dev
    tasks:
      - name: reviews
        family: SC                 # optional, default "custom"; a known family brings its instruction
        instruction: "What is the sentiment? Choose one from the option.\\n"   # optional
        labels: [positive, negative]                                         # optional: sorted train labels
        train: reviews_train.jsonl
        test: reviews_test.csv     # optional: carved from train (25 %) if absent
        dev: null                  # optional: carved from train (min(200, 20 %)) if absent
        text_field: text           # default "sentence" (also settable at the top level)
        label_field: label         # default "label"

Files are ``.json`` (a list of objects), ``.jsonl`` (one object per line) or ``.csv`` (header row);
``format:`` forces one. Every problem is reported with the file and the 1-based line (and record
number): missing field, empty text, a label outside the label set, non-UTF-8 bytes, malformed JSON or
CSV. Test examples whose normalised text also occurs in train or dev are counted: above
``overlap_threshold`` (a fraction of the test split) that is an error, below it a warning, and the
copies are dropped from train.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from clift.data.carve import LOAD_RULES, carve_splits, label_counts
from clift.data.catalog import task_catalog
from clift.data.label_checks import check_conflicting_labels, warn_single_class
from clift.data.records import (
    Record,
    RecordProblems,
    detect_format,
    label_string,
    normalize_text,
    read_records,
    records_to_examples,
    sha256_file,
)
from clift.data.specs import TaskSpec, apply_budgets, check_keys
from clift.data.task import SPLITS, Example, Stream
from clift.errors import ConfigError, DataError
from clift.io import read_yaml
from clift.safety import shorten
from clift.text_metrics import check_metric

if TYPE_CHECKING:
    from clift.config import DataConfig

STREAM_KEYS = ("name", "description", "tasks", "overlap_threshold", "text_field", "label_field")
TASK_KEYS = (
    "name",
    "family",
    "instruction",
    "labels",
    "show_options",
    "train",
    "dev",
    "test",
    "text_field",
    "label_field",
    "format",
    "overlap_threshold",
    "id_field",
    "metric",
)
DEFAULT_FAMILY = "custom"
DEFAULT_INSTRUCTION = "What is the label of the following text? Choose one from the option.\n"
DEFAULT_OVERLAP_THRESHOLD = 0.05
OPTION_TEXT = "Choose one from the option."
#: how many overlapping test lines an overlap message quotes
_QUOTED_LINES = 5


@dataclass
class UserStream:
    """A parsed and validated user stream (before budgets).

    Attributes:
        name: the stream's name.
        path: the YAML file.
        specs: per task, its definition.
        splits: per task, ``{split: examples}`` after carving.
        files: per task, ``{split: path}`` of the files read.
        overlap: per task, how many test examples repeat a train or dev text.
        origin: per task and split, where the split came from.
    """

    name: str
    path: Path
    specs: list[TaskSpec]
    splits: dict[str, dict[str, tuple[Example, ...]]]
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    overlap: dict[str, int] = field(default_factory=dict)
    origin: dict[str, dict[str, str]] = field(default_factory=dict)


def _yaml_task_lines(text: str) -> list[int]:
    """1-based line where each item of the top-level ``tasks:`` list starts (for messages)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if getattr(key, "value", None) == "tasks" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _threshold(value: Any, where: str, problems: list[str]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        problems.append(
            f"{where}: overlap_threshold must be a fraction of the test split between 0 and 1, got {shorten(value)}."
        )
        return DEFAULT_OVERLAP_THRESHOLD
    return float(value)


@dataclass
class _TaskEntry:
    """One task of the YAML, checked for shape but with files not yet read."""

    name: str
    line: int
    raw: Mapping[str, Any]
    files: dict[str, Path]
    text_field: str
    label_field: str
    threshold: float

    @property
    def id_field(self) -> str:
        """The column holding example ids (default ``id``; used when the records have it)."""
        return str(self.raw.get("id_field", "id"))


def _parse_yaml(path: Path) -> tuple[str, list[_TaskEntry]]:
    """Read and shape-check the stream YAML; returns its name and task entries.

    Raises:
        DataError: naming the YAML file (and the line of the task) for every problem found.
    """
    data = read_yaml(path, DataError, "user stream file", "check data.stream")
    text = path.read_text(encoding="utf-8-sig")  # decodes: read_yaml has checked it, for task line numbers
    if data is None:
        raise DataError(f"{path}: the stream file is empty; it needs 'tasks:' (see docs/data.md).")
    if not isinstance(data, Mapping):
        raise DataError(f"{path}: a user stream must be a mapping with 'name' and 'tasks', got {type(data).__name__}.")
    problems: list[str] = []
    check_keys(str(path), data, STREAM_KEYS, problems)
    name = str(data.get("name") or path.stem)
    # the stream-wide defaults each task may override
    top = {
        "text_field": str(data.get("text_field", "sentence")),
        "label_field": str(data.get("label_field", "label")),
        "overlap_threshold": _threshold(data.get("overlap_threshold", DEFAULT_OVERLAP_THRESHOLD), str(path), problems),
    }
    raw_tasks = data.get("tasks")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        problems.append(f"{path}: 'tasks' must be a non-empty list of tasks (each with 'name' and 'train').")
        raw_tasks = []
    lines = _yaml_task_lines(text)
    entries: list[_TaskEntry] = []
    seen: dict[str, int] = {}  # task name -> its 1-based position, for the duplicate message
    for i, raw in enumerate(raw_tasks):
        line = lines[i] if i < len(lines) else 0
        where = f"{path}:{line} (task {i + 1})" if line else f"{path} (task {i + 1})"
        entry = _task_entry(raw, line, where, path.parent, top, problems)
        if entry is None:
            continue
        if entry.name in seen:
            problems.append(
                f"{where}: task name {entry.name!r} is already used by task {seen[entry.name]}; names must be unique."
            )
        seen[entry.name] = i + 1
        entries.append(entry)
    if problems:
        if len(problems) == 1:  # the problem already names the file
            raise DataError(problems[0])
        raise DataError(f"user stream {path}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
    return name, entries


def _task_entry(
    raw: Any, line: int, where: str, folder: Path, top: Mapping[str, Any], problems: list[str]
) -> _TaskEntry | None:
    """One item of ``tasks:`` shape-checked (None when it has no usable name); problems appended.

    Args:
        raw: the item as YAML read it.
        line: its 1-based line in the stream file (0 when unknown).
        where: how messages name it (file, line, position).
        folder: the stream file's folder; data paths are relative to it.
        top: the stream-wide ``text_field``, ``label_field`` and ``overlap_threshold`` (checked), the
            defaults a task may override.
        problems: where every problem found is appended.
    """
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping with 'name' and 'train', got {shorten(raw)}.")
        return None
    check_keys(where, raw, TASK_KEYS, problems)
    tname = raw.get("name")
    if not isinstance(tname, str) or not tname.strip() or any(c in tname for c in "\n\r"):
        problems.append(f"{where}: 'name' is required, a one-line string (it appears in the prompt).")
        return None
    files = _task_files(raw, where, folder, problems)
    if "train" not in files and raw.get("train") is None:
        problems.append(f"{where}: 'train' is required (a .json, .jsonl, .csv or .parquet file).")
    return _TaskEntry(
        name=tname.strip(),
        line=line,
        raw=raw,
        files=files,
        text_field=str(raw.get("text_field", top["text_field"])),
        label_field=str(raw.get("label_field", top["label_field"])),
        threshold=_threshold(raw.get("overlap_threshold", top["overlap_threshold"]), where, problems),
    )


def _task_files(raw: Mapping[str, Any], where: str, folder: Path, problems: list[str]) -> dict[str, Path]:
    """The split files a task names that exist and have a readable format (``{split: path}``)."""
    files: dict[str, Path] = {}
    for split in SPLITS:
        value = raw.get(split)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}: '{split}' must be a file path, got {shorten(value)}.")
            continue
        fp = (folder / value).expanduser()
        if not fp.is_file():
            why = "is a directory, not a file" if fp.is_dir() else "does not exist"
            problems.append(f"{where}: {split} file {str(fp)!r} {why} (paths are relative to {folder}).")
            continue
        try:
            detect_format(fp, raw.get("format"))
        except DataError as err:
            problems.append(f"{where}: {err}")
            continue
        files[split] = fp
    return files


def _spec_for(entry: _TaskEntry, labels: tuple[str, ...], where: str, problems: list[str]) -> TaskSpec:
    raw = entry.raw
    family = str(raw.get("family") or DEFAULT_FAMILY).strip()
    defaults = task_catalog().families.get(family, {})
    instruction = raw.get("instruction", defaults.get("instruction", DEFAULT_INSTRUCTION))
    if instruction is None:
        instruction = ""
    if not isinstance(instruction, str):
        problems.append(f"{where}: 'instruction' must be a string, got {instruction!r}.")
        instruction = ""
    if instruction and not instruction.endswith("\n"):
        instruction += "\n"  # the option line (or the sentence) starts on the next line
    show = raw.get("show_options", defaults.get("show_options", True))
    if not isinstance(show, bool):
        problems.append(f"{where}: 'show_options' must be true or false, got {show!r}.")
        show = True
    if "instruction" not in raw and (not show or not labels):
        instruction = drop_option_text(instruction)  # no option line follows, so do not ask to choose one
        if not labels and instruction == drop_option_text(DEFAULT_INSTRUCTION):
            instruction = ""  # a free-form task has no label to ask for; the input speaks for itself
    metric = raw.get("metric")
    if metric is not None:
        try:
            check_metric(str(metric), not labels, where)
        except ConfigError as err:
            problems.append(str(err))
    return TaskSpec(
        name=entry.name, family=family, instruction=instruction, labels=labels, show_options=show, metric=metric
    )


def drop_option_text(instruction: str) -> str:
    """A default instruction without its "Choose one from the option." sentence (no options are shown)."""
    text = instruction.replace(" " + OPTION_TEXT, "").replace(OPTION_TEXT, "")
    return text if text.strip() else ""


def _declared_labels(entry: _TaskEntry, where: str, problems: list[str]) -> tuple[str, ...] | None:
    value = entry.raw.get("labels")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: 'labels' must be a non-empty list of label strings, got {shorten(value)}.")
        return None
    out = []
    unquoted = [v for v in value if isinstance(v, (bool, float))]
    if unquoted:
        # YAML reads yes/no/true/false/on/off as booleans and 1.0 as a float; their text is lost
        problems.append(
            f"{where}: 'labels' holds {unquoted}, which YAML read as {type(unquoted[0]).__name__} values, not "
            f'label strings; quote every label in the stream file, e.g. labels: ["yes", "no"].'
        )
        return None
    for v in value:
        s = label_string(v)
        if not s:
            problems.append(f"{where}: label {v!r} in 'labels' is not a non-empty string or integer.")
            continue
        out.append(s)
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        problems.append(f"{where}: 'labels' lists {dup} more than once.")
    return tuple(out)


def _file_keys(path: Path) -> tuple[Any, ...]:
    """Cache key for a stream: the YAML's and every data file's (path, mtime, size)."""
    _, entries = _parse_yaml(path)
    files = [path, *(fp for e in entries for fp in e.files.values())]
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)


def read_user_stream(path: str | Path) -> UserStream:
    """Parse, validate and split a user stream (cached per process while its files are unchanged).

    Args:
        path: the stream YAML.

    Returns:
        The stream before budgets.

    Raises:
        DataError: naming the file and line of every problem found.
    """
    p = Path(path).expanduser().resolve()
    return _read_user_stream(p, _file_keys(p))


@lru_cache(maxsize=16)
def _read_user_stream(path: Path, keys: tuple[Any, ...]) -> UserStream:
    name, entries = _parse_yaml(path)
    records_problems = RecordProblems(f"user stream {path}")
    shape_problems: list[str] = []
    read = [_read_task(entry, path, records_problems, shape_problems) for entry in entries]
    if shape_problems:
        raise DataError(f"user stream {path}: " + "; ".join(shape_problems))
    records_problems.raise_if_any()

    stream = UserStream(name=name, path=path, specs=[spec for spec, _, _ in read], splits={})
    overlap_problems = RecordProblems(f"user stream {path}")
    for entry, (spec, split_examples, split_lines) in zip(entries, read, strict=True):
        stream.files[spec.name] = {s: str(fp) for s, fp in entry.files.items()}
        train, dev, test = (split_examples.get(s) for s in SPLITS)
        if test is not None:
            _check_overlap(entry, train or [], dev or [], test, split_lines.get("test", {}), overlap_problems, stream)
        names = {s: entry.files[s].name if s in entry.files else s for s in SPLITS}
        result = carve_splits(
            spec.name,
            train,
            test,
            LOAD_RULES,
            train_name=names["train"],
            test_name=names["test"],
            dev_pool=dev,
            dev_name=names["dev"],
            stratify=bool(spec.labels),
        )
        stream.splits[spec.name] = {s: tuple(result.split(s)) for s in SPLITS}
        stream.origin[spec.name] = dict(result.origin)
    overlap_problems.raise_if_any()
    return stream


def _read_task(
    entry: _TaskEntry, path: Path, records_problems: RecordProblems, shape_problems: list[str]
) -> tuple[TaskSpec, dict[str, list[Example]], dict[str, dict[str, int]]]:
    """Read one task's files: its spec, its examples per split, and each example's file line.

    Every problem is recorded (record problems and shape problems apart), not raised, so that one run
    of the check reports all of them.

    Returns:
        ``(spec, {split: examples}, {split: {example id: line in its file}})``.
    """
    where = f"{path}:{entry.line} (task {entry.name!r})"
    records: dict[str, list[Record]] = {}
    for split, fp in entry.files.items():
        records[split] = read_records(
            fp,
            entry.text_field,
            entry.label_field,
            entry.raw.get("format"),
            problems=records_problems,
            id_field=entry.id_field,
        )
        check_conflicting_labels(records[split], records_problems)  # one text, two labels: an error
        if not records[split] and not any(str(fp) in msg for msg in records_problems.items):
            records_problems.add(f"{fp}:1: no records; a {split} file needs at least one.")
    labels = _declared_labels(entry, where, shape_problems)
    if entry.raw.get("metric") not in (None, "accuracy"):
        labels = ()  # a free-form task: any target text, scored by generation
    elif labels is None:  # inferred from train: the sorted set of its (usable) labels
        labels = tuple(sorted({s for r in records.get("train", []) if (s := label_string(r.label))}))
    warn_single_class(entry.name, labels, entry.files.get("train"), where)
    spec = _spec_for(entry, labels, where, shape_problems)
    split_examples: dict[str, list[Example]] = {}
    split_lines: dict[str, dict[str, int]] = {}
    for split, recs in records.items():
        prefix = entry.files[split].name
        split_examples[split], _ = records_to_examples(recs, labels or None, records_problems, prefix)
        split_lines[split] = {f"{prefix}#{r.index}": r.line for r in recs}
    return spec, split_examples, split_lines


def _check_overlap(
    entry: _TaskEntry,
    train: Sequence[Example],
    dev: Sequence[Example],
    test: Sequence[Example],
    test_lines: Mapping[str, int],
    problems: RecordProblems,
    stream: UserStream,
) -> None:
    """Count test examples whose normalised text occurs in train or dev; error above the threshold."""
    seen = {normalize_text(ex.sentence) for ex in (*train, *dev)}
    repeated = [ex for ex in test if normalize_text(ex.sentence) in seen]
    stream.overlap[entry.name] = len(repeated)
    if not repeated:
        return
    test_file = entry.files["test"]
    quoted = ", ".join(str(test_lines.get(ex.id, "?")) for ex in repeated[:_QUOTED_LINES])
    more = " …" if len(repeated) > _QUOTED_LINES else ""
    share = len(repeated) / len(test)
    msg = (
        f"{test_file}: {len(repeated)} of {len(test)} test examples ({share:.1%}) repeat a train/dev text "
        f"of task {entry.name!r} (test lines {quoted}{more})"
    )
    if share > entry.threshold:
        problems.add(
            f"{msg}; that is above overlap_threshold={entry.threshold:g}. Remove the copies from "
            f"{entry.files['train'].name} or the test file, or raise overlap_threshold in the stream YAML."
        )
    else:
        warnings.warn(
            f"{msg}; below overlap_threshold={entry.threshold:g}, so the copies are dropped from train.",
            stacklevel=3,
        )


def load_user_stream(path: str | Path, data: DataConfig, seed: int) -> Stream:
    """The user stream at ``path`` as a :class:`Stream`, with the budgets of ``data`` applied.

    Raises:
        DataError: naming the file and line of every problem found.
    """
    us = read_user_stream(path)
    tasks = [apply_budgets(spec, us.splits[spec.name], data, seed) for spec in us.specs]
    return Stream(name=us.name, tasks=tasks)


def user_stream_provenance(path: str | Path) -> dict[str, Any]:
    """Provenance of a user stream: the YAML and every data file with its SHA-256, overlaps, split origins."""
    us = read_user_stream(path)
    return {
        "stream": us.name,
        "stream_file": str(us.path),
        "stream_sha256": sha256_file(us.path),
        "tasks": [s.name for s in us.specs],
        "files": {
            task: {split: {"path": fp, "sha256": sha256_file(fp)} for split, fp in files.items()}
            for task, files in us.files.items()
        },
        "origin": us.origin,
        "overlap": us.overlap,
        "labels": {s.name: list(s.labels) for s in us.specs},
        "pool_labels": {t: {s: label_counts(ex) for s, ex in sp.items()} for t, sp in us.splits.items()},
        "rules": LOAD_RULES.to_dict(),
    }
