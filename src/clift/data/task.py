"""Tasks, streams and the prompt format.

A :class:`Task` is one classification dataset cast as instruction following (O-LoRA / DEAL / GORP
format, protocol.md §1); a :class:`Stream` is the ordered list of tasks a continual run trains on.
"""

from __future__ import annotations

import random
import re
import string
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

SPLITS = ("train", "dev", "test")
#: the metric of a free-form task that names none (:mod:`clift.text_metrics`)
DEFAULT_FREE_FORM_METRIC = "rougeL"


@dataclass(frozen=True)
class Example:
    """One labelled instance.

    Attributes:
        sentence: the input text (already in the dataset's sentence format, e.g. "Title: …\\nText: …").
        label: the target label string (one of the task's label options).
        id: a stable identifier, unique within the task and split (used for overlap checks and logs).
    """

    sentence: str
    label: str
    id: str = ""


@dataclass
class Task:
    """One task of a continual stream.

    Attributes:
        name: dataset name as it appears in the prompt ("agnews").
        family: task family / type shown in the prompt ("TC", "SC", "NLI", …).
        instruction: instruction line(s), ending with a newline, or "" for none (COPA).
        labels: the label options, in the order shown in the prompt.
        show_options: whether the prompt lists the options (False for COPA).
        train / dev / test: the examples of each split.
        metric: how the task is scored (:data:`clift.text_metrics.METRICS`); ``None`` means ``accuracy``
            for a label task and ``rougeL`` for a free-form task (empty ``labels``: any target text).
    """

    name: str
    family: str
    instruction: str
    labels: tuple[str, ...]
    show_options: bool = True
    train: list[Example] = field(default_factory=list)
    dev: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    metric: str | None = None

    @property
    def free_form(self) -> bool:
        """True when the task has no label set: targets are free text, scored by generation."""
        return not self.labels

    @property
    def score_metric(self) -> str:
        """The metric this task is scored by (``metric``, or the default for its kind)."""
        if self.metric:
            return self.metric
        return DEFAULT_FREE_FORM_METRIC if self.free_form else "accuracy"

    def split(self, name: str) -> list[Example]:
        """Return the examples of split ``name`` ("train", "dev" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; allowed: {', '.join(SPLITS)}.")
        return getattr(self, name)

    def prompt(self, sentence: str) -> str:
        """The full O-LoRA prompt for one sentence (see :func:`format_prompt`)."""
        return format_prompt(self, sentence)


@dataclass
class Stream:
    """An ordered sequence of tasks.

    Attributes:
        name: a label for reports ("standard-proxy/o1", "fixture").
        tasks: the tasks in training order.
    """

    name: str
    tasks: list[Task]

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stream {self.name!r} lists task(s) {dup} more than once; each task may appear once.")
        if not self.tasks:
            raise ValueError(f"stream {self.name!r} has no tasks.")

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]


def prompt_parts(task: Task, sentence: str) -> tuple[str, str, str]:
    """Split the prompt into (head, sentence, tail) so that only the sentence is ever truncated.

    The full prompt is ``head + sentence + tail``:
    ``Task:{family}\\nDataset:{name}\\n{instruction}Option: {l1, l2, ...} \\n{sentence}\\nAnswer:``
    """
    head = f"Task:{task.family}\nDataset:{task.name}\n{task.instruction}"
    if task.show_options and task.labels:
        head += f"Option: {', '.join(task.labels)} \n"
    return head, sentence, "\nAnswer:"


def format_prompt(task: Task, sentence: str) -> str:
    """The O-LoRA prompt of protocol.md §1 (COPA-style tasks have no instruction and no option line)."""
    return "".join(prompt_parts(task, sentence))


_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation used by exact match: lower-case, drop punctuation, collapse whitespace.

    Articles are kept (as in the papers' evaluation code), so "A" stays a valid COPA answer.
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return re.sub(r"\s+", " ", text).strip()


def subsample(examples: Sequence[Example], n: int | None, seed: int, key: str, by_label: bool = True) -> list[Example]:
    """Deterministic, label-balanced subset of ``examples``.

    Examples are shuffled per label with a generator seeded by ``(seed, key)`` and taken round-robin
    over labels (in order of first appearance), so small budgets still cover every class; the result
    is shuffled once more with the same generator. The same inputs always give the same subset, and a
    larger budget is a superset of a smaller one only up to the final shuffle's order.

    Args:
        examples: the pool to draw from.
        n: how many to keep; ``None`` or ``n >= len(examples)`` keeps all (still shuffled).
        seed: the run's data seed.
        key: distinguishes draws ("agnews/train"), so two tasks with the same seed differ.
        by_label: balance over labels; False (free-form targets, each one unique) draws uniformly.

    Returns:
        A new list of at most ``n`` examples.
    """
    rng = random.Random(f"clift:{seed}:{key}")
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.label if by_label else ""].append(ex)
    pools = []
    for label in groups:  # dict keeps first-appearance order, which is deterministic
        pool = list(groups[label])
        rng.shuffle(pool)
        pools.append(pool)
    total = len(examples) if n is None else min(n, len(examples))
    out: list[Example] = []
    i = 0
    while len(out) < total:
        for pool in pools:
            if i < len(pool) and len(out) < total:
                out.append(pool[i])
        i += 1
    rng.shuffle(out)
    return out
