"""The split rules on hand-made pools: stratified carves, caps, and disjointness whatever the input."""

from __future__ import annotations

from collections import Counter

import pytest

from clift.data.carve import CarveRules, carve_splits, stratified_take
from clift.data.records import normalize_text
from clift.data.task import Example
from clift.errors import DataError


def pool(counts: dict[str, int], tag: str = "x") -> list[Example]:
    return [Example(f"{tag} {lab} {i}", lab, f"{tag}#{lab}{i}") for lab, n in counts.items() for i in range(n)]


def test_a_carve_keeps_each_labels_share_so_rare_classes_stay_in_train():
    examples = pool({"entailment": 119, "contradiction": 115, "neutral": 16})  # CB's train file
    carved, rest = stratified_take(examples, 50, seed=0, key="CB/carve-dev")
    assert Counter(ex.label for ex in carved) == {"entailment": 24, "contradiction": 23, "neutral": 3}
    assert Counter(ex.label for ex in rest)["neutral"] == 13
    assert len(carved) + len(rest) == len(examples) and not {e.id for e in carved} & {e.id for e in rest}


def test_carves_are_deterministic_per_key():
    examples = pool({"a": 30, "b": 30})
    assert stratified_take(examples, 10, 0, "k")[0] == stratified_take(examples, 10, 0, "k")[0]
    assert stratified_take(examples, 10, 0, "k")[0] != stratified_take(examples, 10, 0, "other")[0]


def test_caps_and_missing_splits():
    rules = CarveRules(train_cap=20, test_cap=8)
    res = carve_splits("t", pool({"a": 50, "b": 50}), None, rules)  # no test file
    assert (len(res.train), len(res.dev), len(res.test)) == (20, 18, 8)  # dev: 20 % of the 92 left
    assert res.origin == {
        "train": "train.json",
        "test": "carved from train.json",
        "dev": "carved from train.json",
    }
    assert Counter(ex.label for ex in res.train) == {"a": 10, "b": 10}  # caps are balanced


def test_splits_are_disjoint_even_when_the_pools_repeat_texts():
    train = pool({"a": 40, "b": 40})
    train += [Example(ex.sentence.upper(), ex.label, ex.id + "-copy") for ex in train[:30]]  # normalised copies
    test = [Example(train[5].sentence, "a", "t#1"), *pool({"a": 5, "b": 5}, "test")]
    for res in (carve_splits("t", train, None), carve_splits("t", train, test)):
        keys = {s: {normalize_text(ex.sentence) for ex in res.split(s)} for s in ("train", "dev", "test")}
        assert not keys["train"] & keys["dev"] and not keys["train"] & keys["test"] and not keys["dev"] & keys["test"]


def test_too_small_or_absent_pools_are_errors():
    with pytest.raises(DataError, match="neither a train nor a test file"):
        carve_splits("t", None, None)
    with pytest.raises(DataError, match=r"task 't': train.json has 3 usable examples, too few to carve a test split"):
        carve_splits("t", pool({"a": 3}), None)
