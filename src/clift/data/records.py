"""Reading labelled records from JSON, JSONL and CSV files, with file-and-line error messages.

Every reader returns :class:`Record` objects that remember where they came from (file, 1-based line
and record number), so a validation problem can always be reported as ``file:line``. The readers
collect problems rather than stopping at the first one: :class:`RecordProblems` gathers them and
raises a single :class:`~clift.errors.DataError` listing all of them (up to a limit).

Used by the upstream ``CL_Benchmark`` loader, the pack builder and user streams.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clift.data.task import Example
from clift.errors import DataError

FORMATS = ("json", "jsonl", "csv")
CSV_FIELD_LIMIT = 2**31 - 1  # as long as a C long allows everywhere

# A message listing thousands of bad records helps nobody; the first ones show the pattern.
MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class Record:
    """One raw record and where it came from.

    Attributes:
        text: the input text (``None`` when the field is missing).
        label: the label as read (any JSON scalar; ``None`` when missing).
        path: the file it was read from.
        line: 1-based line of the record's start in the file.
        index: 1-based record number (header rows and blank lines not counted).
        fields: the field names the record has (for "missing field" messages).
    """

    text: Any
    label: Any
    path: str
    line: int
    index: int
    fields: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        """``file:line (record n)``, the prefix of every message about this record."""
        return f"{self.path}:{self.line} (record {self.index})"


class RecordProblems:
    """Collects validation problems and raises them together as one :class:`DataError`.

    Args:
        context: a short description of what was being read ("user stream 'my.yaml'").
    """

    def __init__(self, context: str) -> None:
        self.context = context
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        """Raise one :class:`DataError` listing the problems (the first :data:`MAX_LISTED_PROBLEMS`).

        Raises:
            DataError: when at least one problem was added.
        """
        if not self.items:
            return
        shown = self.items[:MAX_LISTED_PROBLEMS]
        more = len(self.items) - len(shown)
        if len(self.items) == 1:  # each problem names its file and line already
            raise DataError(self.items[0])
        lines = "\n".join(f"  - {p}" for p in shown)
        tail = f"\n  … and {more} more" if more else ""
        raise DataError(f"{self.context}: {len(self.items)} problems:\n{lines}{tail}")


def normalize_text(text: str) -> str:
    """The key used for duplicate and overlap checks: NFKC, lower case, whitespace collapsed.

    Stricter than byte equality (a re-cased or re-spaced copy of a test sentence is still a leak)
    but keeps punctuation, so genuinely different sentences are not merged.
    """
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (streamed, so large files do not load twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    """The file format: ``fmt`` if given, else from the extension (``.json``, ``.jsonl``, ``.csv``).

    Raises:
        DataError: for an unknown format or extension.
    """
    if fmt is not None:
        if not isinstance(fmt, str):
            raise DataError(f"{path}: 'format' must be one of {', '.join(FORMATS)}, got {str(fmt)[:40]!r}.")
        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise DataError(f"{path}: unknown format {fmt!r}; allowed: {', '.join(FORMATS)}.")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix == "ndjson":
        return "jsonl"
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: cannot tell the format from the extension {Path(path).suffix!r}; use .json (a list of "
            "objects), .jsonl (one object per line) or .csv (header row), or set 'format:' for this file."
        )
    return suffix


def _decode(raw: bytes, path: str) -> str:
    """UTF-8 text of ``raw`` (a leading BOM is dropped); non-UTF-8 bytes are reported with their line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        bad = raw[err.start : err.start + 4]
        raise DataError(
            f"{path}:{line}: byte {bad[:1]!r} at column {col} is not valid UTF-8 ({err.reason}); "
            "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None


def _line_of(text: str, pos: int, cache: list[int]) -> int:
    """1-based line of character offset ``pos``, counting incrementally from the last call.

    ``cache`` holds ``[last_pos, last_line]`` so a scan over a whole file stays linear.
    """
    last_pos, last_line = cache
    if pos < last_pos:  # never happens in a forward scan; recount from the start to stay correct
        last_pos, last_line = 0, 1
    line = last_line + text.count("\n", last_pos, pos)
    cache[0], cache[1] = pos, line
    return line


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _json_error(path: str, err: json.JSONDecodeError) -> DataError:
    return DataError(f"{path}:{err.lineno}: malformed JSON at column {err.colno}: {err.msg}; fix the file.")


def _iter_json_list(text: str, path: str) -> Iterable[tuple[int, Any]]:
    """Yield ``(line, object)`` for each element of a top-level JSON list, with its start line.

    ``json.load`` gives no positions, so the list is walked element by element with
    ``raw_decode``; each element is still parsed by the C decoder.
    """
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        found = text[pos : pos + 1] or "an empty file"
        raise DataError(
            f"{path}:1: a .json data file must hold a JSON list of objects ([{{...}}, ...]), "
            f"found {found!r}; for one object per line use the .jsonl extension."
        )
    pos = _skip_ws(text, pos + 1)
    cache = [0, 1]
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        line = _line_of(text, pos, cache)
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise _json_error(path, err) from None
        yield line, obj
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            rest = _skip_ws(text, pos + 1)
            if rest < len(text):
                line = _line_of(text, rest, cache)
                raise DataError(f"{path}:{line}: unexpected text after the closing ']' of the list.")
            return
        line = _line_of(text, min(pos, len(text)), cache)
        raise DataError(f"{path}:{line}: malformed JSON: expected ',' or ']' after record; fix the file.")


def _iter_jsonl(text: str, path: str) -> Iterable[tuple[int, Any]]:
    # split on "\n" only: str.splitlines would also break inside strings holding U+2028 and friends
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{n}: malformed JSON line at column {err.colno}: {err.msg}; fix the line."
            ) from None


def read_records(
    path: str | Path,
    text_field: str = "sentence",
    label_field: str = "label",
    fmt: str | None = None,
    problems: RecordProblems | None = None,
) -> list[Record]:
    """Read every record of a data file.

    Structural problems (bad encoding, malformed JSON or CSV, a CSV header without the fields) raise
    at once, since nothing after them can be trusted. Per-record problems (a record that is not an
    object, a missing field) are added to ``problems`` when given, else raised together at the end.

    Args:
        path: the file (``.json`` list, ``.jsonl`` or ``.csv`` with a header row).
        text_field: the field holding the input text. Default ``sentence`` (upstream layout).
        label_field: the field holding the label. Default ``label``.
        fmt: force a format instead of using the extension.
        problems: a collector shared across files, so one error lists every problem of a stream.

    Returns:
        The records in file order; records with problems are left out.

    Raises:
        DataError: naming the file and line of the (first) problem.
    """
    path_s = str(path)
    p = Path(path)
    if p.is_dir():
        raise DataError(f"data file {path_s!r} is a directory, not a file; give the file itself.")
    if not p.is_file():
        raise DataError(f"data file {path_s!r} does not exist; check the path.")
    kind = detect_format(p, fmt)
    text = _decode(p.read_bytes(), path_s)
    own = problems is None
    collector = problems if problems is not None else RecordProblems(f"reading {path_s}")
    out: list[Record] = []
    if kind == "csv":
        out = _read_csv(text, path_s, text_field, label_field, collector)
    else:
        rows = _iter_json_list(text, path_s) if kind == "json" else _iter_jsonl(text, path_s)
        for index, (line, obj) in enumerate(rows, start=1):
            where = f"{path_s}:{line} (record {index})"
            if not isinstance(obj, dict):
                collector.add(
                    f"{where}: expected an object with fields {text_field!r} and {label_field!r}, "
                    f"got {type(obj).__name__}."
                )
                continue
            rec = _make_record(obj, path_s, line, index, text_field, label_field, collector)
            if rec is not None:
                out.append(rec)
    if own:
        collector.raise_if_any()
    return out


def _make_record(
    obj: dict[str, Any],
    path: str,
    line: int,
    index: int,
    text_field: str,
    label_field: str,
    problems: RecordProblems,
) -> Record | None:
    missing = [f for f in (text_field, label_field) if f not in obj]
    if missing:
        names = " and ".join(repr(m) for m in missing)
        problems.add(
            f"{path}:{line} (record {index}): missing field {names} (fields present: "
            f"{', '.join(map(str, obj)) or 'none'}); fix the record or set text_field/label_field."
        )
        return None
    return Record(obj[text_field], obj[label_field], path, line, index, tuple(map(str, obj)))


def _read_csv(text: str, path: str, text_field: str, label_field: str, problems: RecordProblems) -> list[Record]:
    # newline="" semantics: hand the csv module the raw text so quoted newlines stay inside fields
    csv.field_size_limit(CSV_FIELD_LIMIT)  # the default 131,072 characters would refuse long texts JSONL takes
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV header: {err}; fix the file.") from None
    if header is None:
        raise DataError(f"{path}:1: empty CSV file; a header row naming {text_field!r} and {label_field!r} is needed.")
    header = [h.strip() for h in header]
    missing = [f for f in (text_field, label_field) if f not in header]
    if missing:
        raise DataError(
            f"{path}:1: the CSV header has no column {' or '.join(repr(m) for m in missing)} (columns: "
            f"{', '.join(header)}); rename the column or set text_field/label_field."
        )
    ti, li = header.index(text_field), header.index(label_field)
    out: list[Record] = []
    index = 0
    prev_end = reader.line_num
    while True:
        start = prev_end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError(f"{path}:{start}: malformed CSV row: {err}; fix the quoting of this row.") from None
        prev_end = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue  # blank lines are not records
        index += 1
        if len(row) != len(header):
            problems.add(
                f"{path}:{start} (record {index}): malformed CSV row with {len(row)} fields, the header has "
                f"{len(header)}; quote fields that contain commas."
            )
            continue
        out.append(Record(row[ti], row[li], path, start, index, tuple(header)))
    return out


def label_string(value: Any) -> str | None:
    """The label as a string, or ``None`` if it is not a usable scalar (null, float, list, object).

    Integers and booleans are accepted (``1`` → ``"1"``, ``true`` → ``"True"``) since CSV and JSON
    exports often store class ids that way; floats are refused because ``1.0`` vs ``1`` is ambiguous.
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return None


def records_to_examples(
    records: Sequence[Record],
    labels: Sequence[str] | None,
    problems: RecordProblems,
    id_prefix: str,
    skip_unknown_labels: bool = False,
) -> tuple[list[Example], dict[str, int]]:
    """Validate records and turn them into :class:`Example` objects.

    Args:
        records: as read by :func:`read_records`.
        labels: the allowed label strings; ``None`` accepts any non-empty label.
        problems: where problems go (empty text, unusable label, label outside ``labels``).
        id_prefix: prefix of each example's id (``"train.json"`` gives ids ``train.json#17``).
        skip_unknown_labels: drop records whose label is outside ``labels`` and count them instead of
            reporting a problem (upstream MNLI's test file has 131 ``"-"`` labels, which are not errors
            of the user's making).

    Returns:
        ``(examples, dropped)`` where ``dropped`` counts records left out by reason.
    """
    allowed = set(labels) if labels is not None else None
    dropped = {"label_outside_set": 0}
    out: list[Example] = []
    for rec in records:
        text = rec.text
        if not isinstance(text, str):
            problems.add(f"{rec.where}: text must be a string, got {type(text).__name__} ({text!r}).")
            continue
        if not text.strip():
            problems.add(f"{rec.where}: empty text; remove the record or fill in its text.")
            continue
        label = label_string(rec.label)
        if label is None or label == "":
            problems.add(f"{rec.where}: label must be a non-empty string or integer, got {rec.label!r}.")
            continue
        if allowed is not None and label not in allowed:
            if skip_unknown_labels:
                dropped["label_outside_set"] += 1
                continue
            problems.add(
                f"{rec.where}: label {label!r} is not in the label set [{', '.join(labels or ())}]; "
                "fix the record or add the label to 'labels:'."
            )
            continue
        out.append(Example(sentence=text, label=label, id=f"{id_prefix}#{rec.index}"))
    return out, dropped


def dedupe(examples: Sequence[Example]) -> tuple[list[Example], int]:
    """Drop later copies of the same (normalised) text, keeping the first; returns ``(kept, n_dropped)``."""
    seen: set[str] = set()
    out: list[Example] = []
    for ex in examples:
        key = normalize_text(ex.sentence)
        if key in seen:
            continue
        seen.add(key)
        out.append(ex)
    return out, len(examples) - len(out)
