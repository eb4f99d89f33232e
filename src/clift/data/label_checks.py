"""Label sanity checks of a user stream: the same text with two labels, and a task with one class.

A text that appears twice in a split with different labels makes the split contradict itself (the
model is trained or scored against both answers), so it is an error naming every line. A task whose
examples all have one label trains and scores trivially, so it is a warning naming the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from clift.data.records import Record, RecordProblems, label_string, normalize_text

_QUOTED = 5  # lines quoted per conflict


def check_conflicting_labels(records: Sequence[Record], problems: RecordProblems) -> None:
    """Add a problem for every text that has more than one label within ``records`` (one split's file)."""
    seen: dict[str, list[Record]] = {}
    for rec in records:
        if isinstance(rec.text, str) and label_string(rec.label) is not None:
            seen.setdefault(normalize_text(rec.text), []).append(rec)
    for recs in seen.values():
        labels = sorted({label_string(r.label) or "" for r in recs})
        if len(labels) > 1:
            lines = ", ".join(str(r.line) for r in recs[:_QUOTED]) + (" …" if len(recs) > _QUOTED else "")
            text = recs[0].text if len(recs[0].text) <= 60 else recs[0].text[:59] + "…"
            problems.add(
                f"{recs[0].path}:{recs[0].line}: the text {text!r} has {len(labels)} different labels "
                f"({', '.join(repr(x) for x in labels)}) on lines {lines}; keep one label per text (fix or remove "
                "the conflicting rows)."
            )


def warn_single_class(task: str, labels: Sequence[str], train_file: Path | None, where: str) -> None:
    """Warn when a task has a single label (its accuracy says nothing about learning)."""
    if len(labels) == 1:
        source = f"{train_file}" if train_file is not None else where
        warnings.warn(
            f"{source}: task {task!r} has a single class ({labels[0]!r}) ({where}); every prediction of it is "
            "trivially right. Add examples of other labels, or declare 'labels:' for the task.",
            stacklevel=3,
        )
