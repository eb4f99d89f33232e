"""Streams built in Python (``clift.run(config, stream=Stream(...))``) go through the YAML path's checks.

A :class:`~clift.data.task.Stream` handed to the runner is validated (label strings, labels inside the
label set, non-empty texts, ids), checked for test examples that repeat a train or dev text (above
:data:`~clift.data.user_stream.DEFAULT_OVERLAP_THRESHOLD` of the test split: an error), carved by the
same rules (a missing test or dev split is carved from train; splits made disjoint) and cut to the
run's budgets (``data.train_per_task`` …). Provenance records a SHA-256 of each task's content.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clift.data.carve import LOAD_RULES, carve_splits, label_counts
from clift.data.records import normalize_text
from clift.data.specs import TaskSpec, apply_budgets
from clift.data.task import SPLITS, Example, Stream, Task
from clift.data.user_stream import DEFAULT_OVERLAP_THRESHOLD
from clift.errors import DataError

if TYPE_CHECKING:
    from clift.config import DataConfig

#: how many problems one error lists
_MAX_LISTED = 20


def _check_examples(task: Task, split: str, exs: Sequence[Example], problems: list[str]) -> list[Example]:
    """The examples with ids filled in (``<split>#n`` when none has one); problems are appended."""
    where = f"task {task.name!r} {split}"
    if not all(ex.id == "" for ex in exs):
        seen: set[str] = set()
        for i, ex in enumerate(exs, start=1):
            if not isinstance(ex.id, str) or not ex.id.strip():
                problems.append(f"{where} example {i}: empty id; give every example an id, or none (then numbered).")
            elif ex.id in seen:
                problems.append(f"{where} example {i}: id {ex.id!r} repeats; ids must be unique within a split.")
            seen.add(ex.id)
    else:
        exs = [Example(ex.sentence, ex.label, f"{split}#{i}") for i, ex in enumerate(exs, start=1)]
    allowed = set(task.labels)
    for i, ex in enumerate(exs, start=1):
        if not isinstance(ex.sentence, str) or not ex.sentence.strip():
            problems.append(f"{where} example {i} ({ex.id}): empty text; remove it or fill it in.")
        if not isinstance(ex.label, str) or not ex.label.strip():
            problems.append(
                f"{where} example {i} ({ex.id}): the label/target must be a non-empty string, got {ex.label!r}."
            )
        elif allowed and ex.label not in allowed:
            problems.append(
                f"{where} example {i} ({ex.id}): label {ex.label!r} is not in the label set "
                f"[{', '.join(task.labels)}]; fix the example or add the label to Task.labels."
            )
    return list(exs)


def _check_task(task: Task, problems: list[str]) -> None:
    bad = [lab for lab in task.labels if not isinstance(lab, str) or not lab]
    if bad:
        problems.append(
            f"task {task.name!r}: labels must be non-empty strings, got {bad}; write them as strings "
            "(e.g. ('yes', 'no'), not (True, False))."
        )
    if task.metric is not None:
        from clift.errors import ConfigError
        from clift.text_metrics import check_metric

        try:
            check_metric(task.metric, task.free_form, f"task {task.name!r}")
        except ConfigError as err:
            problems.append(str(err))


def content_sha256(exs: Sequence[Example]) -> str:
    """SHA-256 of a split's content (ids, texts and labels in order), for provenance."""
    h = hashlib.sha256()
    for ex in exs:
        h.update(json.dumps([ex.id, ex.sentence, ex.label], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _overlap(task: Task, pools: dict[str, list[Example]], problems: list[str]) -> int:
    seen = {normalize_text(ex.sentence) for ex in (*pools["train"], *pools["dev"])}
    repeated = [ex for ex in pools["test"] if normalize_text(ex.sentence) in seen]
    if repeated:
        share = len(repeated) / len(pools["test"])
        msg = (
            f"task {task.name!r}: {len(repeated)} of {len(pools['test'])} test examples ({share:.1%}) repeat a "
            f"train/dev text (first: {repeated[0].id!r})"
        )
        if share > DEFAULT_OVERLAP_THRESHOLD:
            problems.append(f"{msg}; above {DEFAULT_OVERLAP_THRESHOLD:g} of the test split. Remove the copies.")
        else:
            warnings.warn(f"{msg}; the copies are dropped from train.", stacklevel=4)
    return len(repeated)


def prepare_stream(stream: Stream, data: DataConfig, seed: int) -> tuple[Stream, dict[str, Any]]:
    """Validate, carve and budget a Python stream; returns it and its provenance.

    Raises:
        DataError: listing every problem found (at most 20 shown).
    """
    problems: list[str] = []
    pools: list[dict[str, list[Example]]] = []
    for task in stream:
        _check_task(task, problems)
        pools.append({s: _check_examples(task, s, task.split(s), problems) for s in SPLITS})
    if problems:
        more = f"\n  … and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        listed = "\n".join(f"  - {p}" for p in problems[:_MAX_LISTED])
        raise DataError(f"stream {stream.name!r}: {len(problems)} problem(s):\n{listed}{more}")
    tasks, prov = [], {"source": "python", "stream": stream.name, "tasks": stream.task_names}
    content, origin, overlap = {}, {}, {}
    for task, pool in zip(stream, pools, strict=True):
        content[task.name] = {s: content_sha256(pool[s]) for s in SPLITS if pool[s]}
        overlap[task.name] = _overlap(task, pool, problems)
        result = carve_splits(
            task.name,
            pool["train"] or None,
            pool["test"] or None,
            LOAD_RULES,
            train_name="train",
            test_name="test",
            dev_pool=pool["dev"] or None,
            dev_name="dev",
            stratify=bool(task.labels),
        )
        origin[task.name] = dict(result.origin)
        spec = TaskSpec(task.name, task.family, task.instruction, task.labels, task.show_options, metric=task.metric)
        tasks.append(apply_budgets(spec, {s: result.split(s) for s in SPLITS}, data, seed))
    if problems:
        raise DataError(f"stream {stream.name!r}: " + "\n".join(problems))
    out = Stream(stream.name, tasks)
    prov.update(
        content_sha256=content,
        origin=origin,
        overlap=overlap,
        labels={t.name: list(t.labels) for t in stream},
        rules=LOAD_RULES.to_dict(),
        budgets={k: getattr(data, k) for k in ("train_per_task", "dev_per_task", "test_per_task")},
        seed=seed,
        splits={t.name: {s: {"n": len(t.split(s)), "labels": label_counts(t.split(s))} for s in SPLITS} for t in out},
    )
    return out, prov
