"""Benchmark and task definitions (the schema of the benchmark YAML files), and the budget cut.

:class:`TaskSpec` is a task without its examples; :class:`BenchmarkSpec` a benchmark with its tasks and
named orders; :func:`parse_task_spec` reads one task definition, collecting problems. Reading the files
themselves is :mod:`clift.data.catalog`'s job.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clift.data.task import SPLITS, Example, Task, subsample
from clift.errors import ConfigError

if TYPE_CHECKING:
    from clift.config import DataConfig


FAMILY_KEYS = ("instruction", "show_options", "description")
TASK_KEYS = ("family", "folder", "instruction", "labels", "show_options", "description")
_ORDER_RE = re.compile(r"(?:o|order)?[_\-\s]?(\d+)")


@dataclass(frozen=True)
class TaskSpec:
    """A task's definition, without its examples.

    Attributes:
        name: the dataset name shown in the prompt ("agnews").
        family: the task family shown in the prompt ("TC").
        instruction: the instruction, ending with a newline ("" for none).
        labels: the label options in prompt order.
        show_options: whether the prompt lists the options (False for COPA).
        folder: the task's folder inside an upstream ``CL_Benchmark`` ("TC/agnews").
        description: free text for listings.
    """

    name: str
    family: str
    instruction: str
    labels: tuple[str, ...]
    show_options: bool = True
    folder: str = ""
    description: str = ""

    def build(self, train: list[Example], dev: list[Example], test: list[Example]) -> Task:
        """A :class:`Task` with these examples."""
        return Task(
            name=self.name,
            family=self.family,
            instruction=self.instruction,
            labels=self.labels,
            show_options=self.show_options,
            train=train,
            dev=dev,
            test=test,
        )


@dataclass(frozen=True)
class Catalog:
    """Task definitions and per-family defaults read from one or more ``task-catalog`` files."""

    families: Mapping[str, Mapping[str, Any]]
    tasks: Mapping[str, TaskSpec]


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark read from its YAML file.

    Attributes:
        name: registry name ("standard-proxy").
        description: one line for listings.
        version: the file's ``version``; bump it when tasks or orders change.
        path: the YAML file.
        tasks: the benchmark's tasks (in declaration order).
        task_specs: their definitions.
        orders: canonical order name ("o1") → task names in training order.
        source_folder: an upstream-layout folder shipped with the benchmark (the fixture), or
            ``None`` to read the embedded pack.
    """

    name: str
    description: str
    version: int
    path: Path
    tasks: tuple[str, ...]
    task_specs: Mapping[str, TaskSpec]
    orders: Mapping[str, tuple[str, ...]]
    source_folder: Path | None = None

    def order(self, order: str | int) -> tuple[str, tuple[str, ...]]:
        """``(canonical name, task names)`` of a named order (``1``, ``"o1"`` and ``"order1"`` are the same).

        Raises:
            ConfigError: naming the unknown order, near matches and the available orders.
        """
        key = canonical_order(order)
        if key in self.orders:
            return key, self.orders[key]
        names = list(self.orders)
        # "o1" vs "o4" is no typo: only suggest for named (non-numbered) orders
        close = [] if _ORDER_RE.fullmatch(key) else difflib.get_close_matches(key, names, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"data.order: unknown order {order!r} for benchmark {self.name!r}.{hint} Available orders: "
            f"{', '.join(names)} (write e.g. {names[0][1:]}, {names[0]} or order{names[0][1:]})."
        )

    def select(self, order: str | int, tasks: Sequence[str] | None = None) -> tuple[str, tuple[str, ...]]:
        """The stream's label and task names: an explicit ``tasks`` list, or the named ``order``.

        Raises:
            ConfigError: for an unknown order or a task the benchmark does not have.
        """
        if not tasks:
            return self.order(order)
        problems = []
        for name in tasks:
            if name not in self.task_specs:
                problems.append(_unknown_task_message(name, self.name, self.tasks))
        dup = sorted({t for t in tasks if list(tasks).count(t) > 1})
        if dup:
            problems.append(f"data.tasks lists {dup} more than once; each task may appear once.")
        if problems:
            raise ConfigError(problems)
        return "tasks=" + ",".join(tasks), tuple(tasks)


def _unknown_task_message(name: str, bench: str, known: Sequence[str]) -> str:
    lower = {k.lower(): k for k in known}
    close = [lower[name.lower()]] if name.lower() in lower else difflib.get_close_matches(name, known, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"data.tasks: unknown task {name!r} in benchmark {bench!r}.{hint} Its tasks: {', '.join(known)}."


def canonical_order(order: str | int) -> str:
    """The canonical order name: ``1``, ``"1"``, ``"o1"``, ``"O1"``, ``"order1"``, ``"order_1"`` → ``"o1"``.

    Names that are not numbered are lower-cased and kept.
    """
    text = str(order).strip().lower()
    m = _ORDER_RE.fullmatch(text)
    return f"o{int(m.group(1))}" if m else text


def check_keys(where: str, data: Mapping[str, Any], allowed: Sequence[str], problems: list[str]) -> None:
    """Record one problem per key of ``data`` not in ``allowed`` (with the closest match and the allowed keys)."""
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            problems.append(f"{where}: unknown key {key!r}.{hint} Allowed keys: {', '.join(allowed)}.")


def _instruction(text: Any, where: str, problems: list[str]) -> str:
    if not isinstance(text, str):
        problems.append(f"{where}.instruction: expected a string, got {text!r}.")
        return ""
    # the prompt puts the option line right after the instruction, so it must end the line
    return text if not text or text.endswith("\n") else text + "\n"


def _labels(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        problems.append(f"{where}.labels: expected a non-empty list of label strings, got {value!r}.")
        return ()
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).strip():
            problems.append(f"{where}.labels: {v!r} is not a label string.")
            continue
        out.append(str(v).strip())
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        problems.append(f"{where}.labels: {dup} listed more than once.")
    return tuple(out)


def parse_task_spec(
    name: str, raw: Any, families: Mapping[str, Mapping[str, Any]], where: str, problems: list[str]
) -> TaskSpec | None:
    """A :class:`TaskSpec` from its YAML mapping, using the family's defaults; problems are collected."""
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping with family, folder and labels, got {raw!r}.")
        return None
    n = len(problems)
    check_keys(where, raw, TASK_KEYS, problems)
    family = str(raw.get("family", "")).strip()
    if not family:
        problems.append(f"{where}: 'family' is required (e.g. SC, TC, NLI).")
    defaults = families.get(family, {})
    if "instruction" in raw:
        instruction = _instruction(raw["instruction"], where, problems)
    elif "instruction" in defaults:
        instruction = _instruction(defaults["instruction"], where, problems)
    else:
        problems.append(
            f"{where}: no instruction, and family {family!r} has none (families with one: "
            f"{', '.join(families) or 'none'}); add 'instruction:'."
        )
        instruction = ""
    labels = _labels(raw.get("labels"), where, problems)
    show = raw.get("show_options", defaults.get("show_options", True))
    if not isinstance(show, bool):
        problems.append(f"{where}.show_options: expected true or false, got {show!r}.")
    folder = raw.get("folder", "")
    if not isinstance(folder, str):
        problems.append(f"{where}.folder: expected a relative path like 'TC/agnews', got {folder!r}.")
    if len(problems) > n:
        return None
    return TaskSpec(
        name=name,
        family=family,
        instruction=instruction,
        labels=labels,
        show_options=bool(show),
        folder=folder or name,
        description=str(raw.get("description", "")),
    )


def apply_budgets(spec: TaskSpec, splits: Mapping[str, Sequence[Example]], data: DataConfig, seed: int) -> Task:
    """The task with each split cut to its budget: ``subsample(examples, n, seed, key=f"{task}/{split}")``."""
    budget = {"train": data.train_per_task, "dev": data.dev_per_task, "test": data.test_per_task}
    chosen = {s: subsample(splits[s], budget[s], seed, key=f"{spec.name}/{s}") for s in SPLITS}
    return spec.build(chosen["train"], chosen["dev"], chosen["test"])
