"""Replay: memory size per task, its examples in later batches, seeded selection, state round trip."""

from __future__ import annotations

import pytest
import torch

from clift.data.collate import TrainCollator
from clift.errors import ConfigError, MethodStateError
from clift.methods import build_method, build_method_config
from clift.methods.replay import Replay, select_memory

from ..conftest import fixture_stream, tiny_config
from ..conftest import run_method as _run


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory):
    """A 3-task replay run (memory 3, 8 examples per task, one epoch) with a spy on training batches."""
    seen: list[tuple[int, list[str]]] = []  # (stage index, example ids of one training batch)
    stage = {"index": -1}
    collate, before = TrainCollator.__call__, Replay.before_task

    def spy_collate(self, items):
        if items and len(items[0]) == 2:  # training batches are (task, example) pairs; rank eval adds answers
            seen.append((stage["index"], [ex.id for _, ex in items]))
        return collate(self, items)

    def spy_before(self, model, st):
        stage["index"] = st.index
        return before(self, model, st)

    mp = pytest.MonkeyPatch()
    mp.setattr(TrainCollator, "__call__", spy_collate)
    mp.setattr(Replay, "before_task", spy_before)
    try:
        cfg = tiny_config(
            tmp_path_factory.mktemp("replay"),
            method={"name": "replay", "memory_per_task": 3},
            train={"max_steps": None, "epochs": 1, "batch_size": 4},
        )
        res, m = _run(cfg, fixture_stream(train=8))
    finally:
        mp.undo()
    return res, m, seen


def test_memory_has_the_configured_size_per_task(replay_run):
    res, m, _ = replay_run
    assert sorted(m.memory) == [0, 1, 2] and all(len(v) == 3 for v in m.memory.values())
    assert res.results["method_stats"]["memory"] == {"toysent": 3, "toytopic": 3, "toynli": 3}
    assert [(s["own"], s["memory"]) for s in res.results["method_stats"]["stage_examples"]] == [(8, 0), (8, 3), (8, 6)]
    assert [t["examples"] for t in res.results["training"]] == [8, 11, 14]


def test_memory_examples_appear_in_later_batches(replay_run):
    _, m, seen = replay_run
    tasks = m.ctx.stream.tasks
    memory_ids = {j: {tasks[j].train[i].id for i in idx} for j, idx in m.memory.items()}
    by_stage: dict[int, set[str]] = {}
    for stage, ids in seen:
        by_stage.setdefault(stage, set()).update(ids)
    assert not any(i.startswith("toytopic/") for i in by_stage[0])  # nothing replayed before it is learnt
    # stage 1 trains toytopic plus exactly task 0's memory; stage 2 adds task 1's memory
    assert {i for i in by_stage[1] if i.startswith("toysent/")} == memory_ids[0]
    assert {i for i in by_stage[2] if i.startswith("toysent/")} == memory_ids[0]
    assert {i for i in by_stage[2] if i.startswith("toytopic/")} == memory_ids[1]
    # memory and new examples share batches (one shuffled loader), not separate phases
    assert any(
        any(i.startswith("toysent/") for i in ids) and any(i.startswith("toytopic/") for i in ids)
        for s, ids in seen
        if s == 1
    )


def test_selection_is_seeded_sorted_and_capped():
    a = select_memory(100, 5, seed=1, task_index=0)
    assert a == select_memory(100, 5, seed=1, task_index=0) and a == sorted(a) and len(set(a)) == 5
    assert a != select_memory(100, 5, seed=2, task_index=0)
    assert a != select_memory(100, 5, seed=1, task_index=1)
    assert select_memory(4, 10, seed=0, task_index=0) == [0, 1, 2, 3]
    assert select_memory(4, 0, seed=0, task_index=0) == []


def test_state_dict_round_trips_and_old_flat_states_load(replay_run):
    _, m, _ = replay_run
    state = m.state_dict()
    assert set(state) == {"memory", "memory_crc"} and state["memory"] == m.memory
    assert all(len(state["memory_crc"][j]) == len(idx) for j, idx in state["memory"].items())
    fresh = build_method(m.config)
    fresh.setup(m.ctx)
    fresh.load_state_dict(state)
    assert fresh.memory == m.memory
    assert [ex.id for _, ex in fresh.memory_examples()] == [ex.id for _, ex in m.memory_examples()]
    bad = {"memory": state["memory"], "memory_crc": {**state["memory_crc"], 0: [c + 1 for c in state["memory_crc"][0]]}}
    fresh.load_state_dict(bad)
    with pytest.raises(MethodStateError, match=r"'memory_crc\.0'.*checksums"):
        fresh.memory_examples()
    with pytest.raises(MethodStateError, match="'buffer'"):
        fresh.load_state_dict({**state, "buffer": {}})
    with pytest.raises(MethodStateError, match=r"'memory_crc\.0'"):
        fresh.load_state_dict({"memory": {0: [1, 2]}, "memory_crc": {}})
    # the flat format of earlier versions (int64 tensors per task)
    flat = {f"{kind}.{j}": torch.tensor(v, dtype=torch.int64) for kind in state for j, v in state[kind].items()}
    fresh.load_state_dict(flat)
    assert fresh.memory == m.memory and fresh._crcs == m._crcs
    with pytest.raises(MethodStateError, match=r"'buffer\.0'"):
        fresh.load_state_dict({"buffer.0": torch.zeros(1)})
    with pytest.raises(MethodStateError, match=r"'memory_crc\.0'"):
        fresh.load_state_dict({"memory.0": torch.zeros(2, dtype=torch.int64)})


def test_config_errors():
    with pytest.raises(ConfigError, match=r"memory_per_task must be >= 0, got -1"):
        build_method_config({"name": "replay", "memory_per_task": -1})
