"""Checkpoints as units: the nested-state split, save/load of a Checkpoint, errors, and every method's state."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

from clift.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    find_checkpoint,
    join_state,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    split_state,
)
from clift.config import RunConfig
from clift.errors import ResumeError
from clift.methods import METHODS
from clift.runner import Runner

from .conftest import fixture_stream, tiny_config


def assert_same(a: Any, b: Any, path: str = "<root>") -> None:
    """Deep equality of nested states: same container types, keys, order, values; tensors bit for bit."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}.{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def through_json(obj: Any) -> Any:
    """``obj`` after split_state → JSON text → join_state, as a checkpoint stores it."""
    skeleton, tensors = split_state(obj)
    return join_state(json.loads(json.dumps(skeleton)), tensors)


NESTED = {
    "bases": {"lora_A": {"model.layers.0.q_proj": torch.eye(3)[:, :2]}, "full_rank": {}},
    "sizes": [[1, 2], [], [3]],
    "norms": [0.1 + 0.2, None, float("nan"), float("inf"), -0.0, 1e-310],
    "memory": {0: [4, 1], 2: [7]},  # integer keys stay integers
    "betas": (0.9, 0.999),  # tuples stay tuples
    "open": None,
    "flag": True,
    "name": "toysent",
    "count": torch.tensor(3, dtype=torch.int64),
    "half": torch.ones(2, dtype=torch.bfloat16),
}


def test_split_join_round_trip_keeps_nested_values_exactly():
    back = through_json(NESTED)
    assert_same(back, NESTED)
    assert back["norms"][0] == 0.1 + 0.2 and back["norms"][5] == 1e-310  # floats travel exactly
    skeleton, tensors = split_state(NESTED)
    assert set(tensors) == {"bases.lora_A.model.layers.0.q_proj", "count", "half"}
    assert "__tensor__" in json.dumps(skeleton)


def test_split_copies_tensors_and_keeps_keys_that_would_collide_apart():
    t = torch.zeros(2)
    skeleton, tensors = split_state({"a.b": t, "a": {"b": torch.ones(2)}})
    t.add_(5)  # the split holds copies, not views of live parameters
    back = join_state(skeleton, tensors)
    assert torch.equal(back["a.b"], torch.zeros(2)) and torch.equal(back["a"]["b"], torch.ones(2))
    assert len(tensors) == 2


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"x": object()}, "never pickles"),
        ({"x": {1.5: 2}}, "not a string or integer"),
        ({True: 1}, "not a string or integer"),
        ({("a", 1): 1}, "not a string or integer"),
    ],
)
def test_split_refuses_what_json_and_safetensors_cannot_hold(bad, match):
    with pytest.raises(TypeError, match=match):
        split_state(bad)


def test_join_refuses_a_skeleton_split_state_cannot_have_written():
    with pytest.raises(ValueError, match="'missing'"):
        join_state({"s:x": {"__tensor__": "missing"}}, {})
    with pytest.raises(ValueError, match="'x' lacks its type tag"):
        join_state({"x": 1}, {})
    with pytest.raises(ValueError, match="'i:one'"):
        join_state({"i:one": 1}, {})


def _checkpoint() -> Checkpoint:
    opt = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 2)}}, "param_groups": [{"lr": 1e-3}]}
    json_part, tensors = rng_state()
    return Checkpoint(
        stage=1,
        step=2,
        model={"layer.weight": torch.arange(6.0).reshape(2, 3)},
        method=NESTED,
        optimizer=opt,
        scheduler={"last_epoch": 2, "_step_count": 3},
        losses=[1.5, 1.25],
        extra_losses=[0.0, 0.1],
        skipped=1,
        rng=(json_part, tensors),
        rng_ranks=[(json_part, tensors), (json_part, tensors)],
        tracked=["layer.weight"],
        results={"matrix": [[50.0, 25.0]], "zero_shot": [10.0, None]},
    )


def test_save_and_load_a_checkpoint(tmp_path):
    ckpt = _checkpoint()
    folder = save_checkpoint(tmp_path, ckpt)
    assert folder == tmp_path / CHECKPOINT_DIR
    assert sorted(p.name for p in folder.iterdir()) == [
        "method.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    back = load_checkpoint(folder)
    for name in ("stage", "step", "losses", "extra_losses", "skipped", "tracked", "results", "scheduler"):
        assert getattr(back, name) == getattr(ckpt, name), name
    assert_same(back.model, ckpt.model)
    assert_same(back.method, ckpt.method)
    assert_same(back.optimizer, ckpt.optimizer)
    assert back.rng is not None and torch.equal(back.rng[1]["torch"], ckpt.rng[1]["torch"])
    assert back.rng_ranks is not None and len(back.rng_ranks) == 2
    assert torch.equal(back.rng_for(1)[1]["torch"], ckpt.rng[1]["torch"])
    # a stage boundary: no optimizer file, and the new checkpoint replaces the old one whole
    save_checkpoint(tmp_path, Checkpoint(stage=2, step=0, model=ckpt.model, method={}))
    again = load_checkpoint(folder)
    assert (again.stage, again.optimizer, again.method) == (2, None, {})
    assert not (folder / "optimizer.safetensors").exists()


def test_find_checkpoint_recovers_from_a_crash_between_the_renames(tmp_path):
    assert find_checkpoint(tmp_path) is None
    folder = save_checkpoint(tmp_path, _checkpoint())
    folder.rename(tmp_path / (CHECKPOINT_DIR + ".old"))
    assert find_checkpoint(tmp_path) == folder and load_checkpoint(folder).stage == 1


@pytest.mark.parametrize("damage", ["state.json", "method.safetensors", "rng.safetensors", "corrupt"])
def test_a_missing_or_damaged_file_is_a_resume_error(tmp_path, damage):
    folder = save_checkpoint(tmp_path, _checkpoint())
    if damage == "corrupt":
        (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    else:
        (folder / damage).unlink()
    # state.json is read first; the tensor files are checked against the hashes it records (clift.integrity)
    expected = r"unreadable.*--force" if damage == "state.json" else r"(is missing|was modified or damaged).*--force"
    with pytest.raises(ResumeError, match=expected):
        load_checkpoint(folder)


def test_a_missing_folder_is_a_resume_error(tmp_path):
    with pytest.raises(ResumeError, match="unreadable"):
        load_checkpoint(tmp_path / "nowhere")


# a method not listed runs with its defaults: a newly registered method is covered without editing this list
FAST_SETTINGS: dict[str, dict[str, Any]] = {
    "ewc": {"fisher_samples": 4},
    "replay": {"memory_per_task": 4},
    "galore": {"galore_rank": 4, "update_proj_gap": 2, "modules": ["mlp.gate_proj"]},
}


def _methods() -> list[Any]:
    # TODO(integrator): drop the marks once issue 18's branch (DEAL's state through check_state) is merged
    pending = pytest.mark.xfail(reason="DEAL's state checks are converted on the issue-18 branch", strict=False)
    return [pytest.param(n, marks=pending) if n.startswith("deal") else n for n in METHODS.names()]


@pytest.mark.parametrize("name", _methods())
def test_every_methods_state_round_trips_through_a_checkpoint(tmp_path, name):
    cfg = tiny_config(
        tmp_path,
        method={"name": name, **FAST_SETTINGS.get(name, {})},
        train={"max_steps": 2},
        eval={"mode": "rank", "batch_size": 16},
        save_adapters=False,
    )
    runner = Runner(RunConfig.from_dict(cfg), stream=fixture_stream(train=8, test=4, names=["toysent", "toytopic"]))
    runner.run()
    method = runner.method
    state = method.state_dict()
    stats = json.dumps(method.stats(), sort_keys=True)
    folder = save_checkpoint(tmp_path / "ckpt", Checkpoint(stage=2, step=0, model={}, method=state))
    loaded = load_checkpoint(folder).method
    assert_same(loaded, state)
    method.load_state_dict(loaded)
    assert_same(method.state_dict(), state)
    assert json.dumps(method.stats(), sort_keys=True) == stats  # a resumed run reports the same
    # a key the method does not write is one ResumeError naming it (only a method without state ignores it)
    if state:
        with pytest.raises(ResumeError, match="not_a_key"):
            method.load_state_dict({**state, "not_a_key": {"x": torch.zeros(1)}})
