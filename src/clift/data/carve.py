"""The split rules: how clift turns upstream files into disjoint train / dev / test splits.

Upstream ``CL_Benchmark`` has no honest validation split (its ``dev.json`` is a copy of ``test.json``)
and some datasets lack a train or a test file (protocol.md §2). The same rules serve the pack builder
(``scripts/build_pack.py``, with size caps) and the ``data_dir`` loader (no caps), so a split carved
at load time is the one the pack would have carved:

1. Read each file; drop records whose label is outside the task's label set (counted); drop later
   copies of the same normalised text within a file, then train copies of any test text (counted).
2. A missing test split is carved from the train pool; a missing train split is carved from the
   test file's pool (the carved side takes ``carve_fraction`` of the pool, at most the test cap).
3. The dev split is carved from the train pool: ``min(dev_size, floor(dev_fraction * n))``.
4. Train and test are capped (pack only). Carves are stratified (:func:`stratified_take`: both sides
   keep the pool's label shares); caps are label-balanced (:func:`~clift.data.task.subsample`). All
   selections use a fixed seed, so the splits never depend on the run seed.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from clift.data.records import normalize_text
from clift.data.task import Example, subsample
from clift.errors import DataError


@dataclass(frozen=True)
class CarveRules:
    """Parameters of the split rules (module docstring).

    Attributes:
        seed: seed of every carve and cap selection; fixed so splits do not move with the run seed.
        dev_size: dev examples carved from train, at most. Default 200.
        dev_fraction: the dev split never takes more than this share of the train pool (so CB's 250
            train examples keep 200 for training). Default 0.2.
        carve_fraction: the share of a pool given to a missing train or test split. Default 0.25 (a
            2000-example train file gives 500 test, 200 dev and 1300 train).
        train_cap / test_cap: at most this many train / test examples (``None``: no cap).
    """

    seed: int = 0
    dev_size: int = 200
    dev_fraction: float = 0.2
    carve_fraction: float = 0.25
    train_cap: int | None = None
    test_cap: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the rules the ``data_dir`` loader applies: carve dev and missing splits, keep everything else
LOAD_RULES = CarveRules()
#: the rules the embedded pack is built with
PACK_RULES = CarveRules(train_cap=1000, test_cap=500)

RULE_TEXT = (
    "records whose label is outside labels.json are dropped (counted)",
    "within a file, later copies of the same normalised text (NFKC, lower case, collapsed whitespace) "
    "are dropped; train records whose text also occurs in test are dropped (counted)",
    "upstream dev.json (a copy of test.json) is never used",
    "a missing test split is carved from train: min(test_cap, floor(carve_fraction * n)) examples",
    "a missing train split is carved from test: the test split takes "
    "min(test_cap, floor(carve_fraction * n)) examples and the rest becomes the train pool",
    "dev is carved from the train pool: min(dev_size, floor(dev_fraction * n)) examples",
    "train and test are then capped at train_cap / test_cap",
    "carves (dev, a missing test or train) are stratified: each label keeps its share of the pool on both "
    "sides, so a rare class is never drained from train",
    "caps are label-balanced (round-robin over labels, as far as the source allows)",
    "every selection is seeded with rules.seed (never the run seed)",
)


@dataclass
class CarveResult:
    """The three splits of one task and how they were made.

    Attributes:
        train / dev / test: the examples.
        origin: per split, where it came from ("train.json", "carved from test.json").
        dropped: counts of removed records by reason.
    """

    train: list[Example]
    dev: list[Example]
    test: list[Example]
    origin: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> list[Example]:
        return getattr(self, name)


def stratified_take(
    pool: Sequence[Example], n: int, seed: int, key: str, stratify: bool = True
) -> tuple[list[Example], list[Example]]:
    """Carve ``n`` examples out of ``pool``, keeping each label's share on both sides.

    A carve keeps its remainder (unlike a cap, which discards it), so it must not drain a rare
    class: a label-balanced dev split of 50 from CB's train pool (119/115/16) would take all 16
    "neutral" examples and leave training without any. Quotas are ``n * count / len(pool)``, rounded
    by largest remainder (ties broken by first appearance); within a label the draw is seeded by
    ``(seed, key)``. ``stratify=False`` (free-form targets) treats the pool as one stratum.

    Returns:
        ``(carved, rest)``: the carved examples (shuffled) and the rest in pool order.
    """
    rng = random.Random(f"clift:{seed}:{key}")
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(pool):
        by_label[ex.label if stratify else ""].append(i)
    total = len(pool)
    n = max(0, min(n, total))
    exact = {lab: n * len(idx) / total for lab, idx in by_label.items()} if total else {}
    quota = {lab: int(q) for lab, q in exact.items()}
    order = list(by_label)  # first-appearance order, deterministic
    short = n - sum(quota.values())
    for lab in sorted(order, key=lambda lab: (-(exact[lab] - quota[lab]), order.index(lab)))[:short]:
        quota[lab] += 1
    chosen: list[int] = []
    for lab in order:
        idx = list(by_label[lab])
        rng.shuffle(idx)
        chosen.extend(idx[: quota[lab]])
    taken = set(chosen)
    carved = [pool[i] for i in chosen]
    rng.shuffle(carved)
    return carved, [ex for i, ex in enumerate(pool) if i not in taken]


def carve_splits(
    task: str,
    train_pool: Sequence[Example] | None,
    test_pool: Sequence[Example] | None,
    rules: CarveRules = LOAD_RULES,
    train_name: str = "train.json",
    test_name: str = "test.json",
    dev_pool: Sequence[Example] | None = None,
    dev_name: str = "dev",
    stratify: bool = True,
) -> CarveResult:
    """Apply the split rules to one task's validated pools.

    The result is disjoint by normalised text whatever the pools hold: train examples repeating a
    test or dev text, and dev examples repeating a test text, are dropped and counted.

    Args:
        task: the task name (part of every selection's key, so tasks draw independently).
        train_pool / test_pool: examples of the train and test files, or ``None`` when a file is absent.
        rules: sizes and seed.
        train_name / test_name: file names used in ``origin``.
        dev_pool: a dev split supplied by the user (then no dev is carved); upstream ``dev.json`` is
            never passed here, since it is a copy of the test file.
        dev_name: its file name, for ``origin``.
        stratify: keep label shares in carves and balance caps over labels; False for free-form targets.

    Returns:
        The disjoint splits.

    Raises:
        DataError: when both pools are missing, or too small to carve a non-empty split.
    """
    origin: dict[str, str] = {}
    dropped: dict[str, int] = {}
    if train_pool is not None and test_pool is not None:
        # drop train copies of test texts before the dev carve, so dev is not drawn from leaked examples
        test_keys = {normalize_text(ex.sentence) for ex in test_pool}
        kept = [ex for ex in train_pool if normalize_text(ex.sentence) not in test_keys]
        dropped["train_duplicates_of_test"] = len(train_pool) - len(kept)
        train_pool, test_pool = kept, list(test_pool)
        origin["train"], origin["test"] = train_name, test_name
    elif train_pool is not None:  # no test file
        n = _carve_count(len(train_pool), rules)
        _check_size(task, "test", n, len(train_pool), train_name)
        test_pool, train_pool = stratified_take(train_pool, n, rules.seed, f"{task}/carve-test", stratify)
        origin["train"], origin["test"] = train_name, f"carved from {train_name}"
    elif test_pool is not None:  # no train file
        n = _carve_count(len(test_pool), rules)
        _check_size(task, "test", n, len(test_pool), test_name)
        test_pool, train_pool = stratified_take(test_pool, n, rules.seed, f"{task}/carve-test", stratify)
        origin["train"], origin["test"] = f"carved from {test_name}", test_name
    else:
        raise DataError(f"task {task!r}: neither a train nor a test file; nothing to carve splits from.")
    if dev_pool is None:
        n_dev = min(rules.dev_size, int(rules.dev_fraction * len(train_pool)))
        _check_size(task, "dev", n_dev, len(train_pool), origin["train"])
        dev, train_pool = stratified_take(train_pool, n_dev, rules.seed, f"{task}/carve-dev", stratify)
        origin["dev"] = f"carved from {origin['train'].removeprefix('carved from ')}"
    else:
        dev = list(dev_pool)
        origin["dev"] = dev_name
    # a pool may repeat a text (user files are not de-duplicated), and a carve can then put the copies
    # on both sides; this last pass makes the splits disjoint however the pools looked
    test_keys = {normalize_text(ex.sentence) for ex in test_pool}
    n_dev_before = len(dev)
    dev = [ex for ex in dev if normalize_text(ex.sentence) not in test_keys]
    held_out = test_keys | {normalize_text(ex.sentence) for ex in dev}
    n_train_before = len(train_pool)
    train_pool = [ex for ex in train_pool if normalize_text(ex.sentence) not in held_out]
    dropped["dev_duplicates_of_test"] = n_dev_before - len(dev)
    dropped["train_duplicates_of_dev_or_test"] = n_train_before - len(train_pool)
    train = subsample(train_pool, rules.train_cap, rules.seed, f"{task}/cap-train", stratify)
    test = subsample(test_pool, rules.test_cap, rules.seed, f"{task}/cap-test", stratify)
    return CarveResult(train=train, dev=dev, test=test, origin=origin, dropped=dropped)


def _carve_count(n: int, rules: CarveRules) -> int:
    k = int(rules.carve_fraction * n)
    return k if rules.test_cap is None else min(rules.test_cap, k)


def _check_size(task: str, split: str, n: int, pool: int, source: str) -> None:
    if n < 1 or pool - n < 1:
        raise DataError(
            f"task {task!r}: {source} has {pool} usable examples, too few to carve a {split} split from; "
            f"supply a {split} file or more examples."
        )


def label_counts(examples: Sequence[Example]) -> dict[str, int]:
    """``{label: count}`` sorted by label, for manifests and provenance."""
    return dict(sorted(Counter(ex.label for ex in examples).items()))
