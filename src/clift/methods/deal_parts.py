"""Pieces shared by ``deal`` (the paper's method) and ``deal_code`` (the released code).

* :data:`DEAL_PRESETS`: the papers' LoRA settings.
* :func:`method_generator` and :func:`isolated_rng`: a method's own random stream, so that initialising
  DEAL's modules never draws from the global generator (which drives dropout): a DEAL run and a
  ``seq_lora`` run with the same seed then see the same batches and dropout masks.
* :func:`stats_state` / :func:`stats_from_state`: the per-stage statistics and running penalty sums as a
  nested method state (the checkpoint stores lists, numbers and strings as they are), reading the flat
  ``history.<i>.<key>`` tensor layout that checkpoints written before nesting was allowed used.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import torch

from clift.methods import legacy_state
from clift.methods.base import Kind, Stage, check_state

#: the papers' LoRA settings (DEAL Table 4 and released scripts); the lr 1e-5 belongs to ``train.lr``
DEAL_PRESETS: dict[str, dict[str, Any]] = {
    "t5-large": {"r": 16, "alpha": 32.0, "dropout": 0.1, "target_modules": ["q", "v"]},
    "llama-3.1-8b": {"r": 32, "alpha": 32.0, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
}


def method_seed(seed: int, name: str) -> int:
    """A 63-bit seed derived from the run seed and the method name (stable across Python processes)."""
    digest = hashlib.sha256(f"clift.method:{name}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def method_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded from the run seed and the method name (module initialisation draws here)."""
    return torch.Generator().manual_seed(method_seed(seed, name))


@contextlib.contextmanager
def isolated_rng(gen: torch.Generator, device: torch.device | None = None) -> Iterator[None]:
    """Run code that draws from the global generators (PEFT's adapter init) without touching them.

    The global CPU generator (and ``device``'s CUDA generator) are seeded from ``gen`` inside the block
    and restored after it, so the run's dropout masks do not depend on what was initialised here.
    """
    devices = [device] if device is not None and device.type == "cuda" else []
    seed = int(torch.randint(0, 2**62, (1,), generator=gen).item())
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def stats_state(history: list[dict[str, Any]], **running: Any) -> dict[str, Any]:
    """The method's resumable numbers as a nested state: per-stage rows plus running sums."""
    out: dict[str, Any] = {"history": [dict(row) for row in history]}
    for key, value in running.items():
        out[key] = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in value.items()}
    return out


def stats_from_state(
    method: str, state: dict[str, Any], stages: list[Stage], optional: dict[str, Kind]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Inverse of :func:`stats_state`; also reads the flat tensor layout of older checkpoints.

    Args:
        method: the method's name, for error messages.
        state: the loaded state.
        stages: the run's stages (the flat layout stores stage indices).
        optional: the method's keys besides ``history`` (running sums, generator, ...) and their kinds.

    Returns:
        ``(history, running)`` where ``running`` maps each running-sum name to its dict.

    Raises:
        MethodStateError: when the nested state has a missing, unknown or wrongly typed key.
    """
    if legacy_state.is_flat(state):
        return _legacy_history(state, stages), _legacy_running(state)
    check_state(method, state, {"history": list}, optional)
    running = {k: v for k, v in state.items() if k != "history" and isinstance(v, dict)}
    return [dict(row) for row in state["history"]], running


#: statistics that are counts (restored as int so results.json is identical after a resume)
_INT_STATS = {"stage_index", "wrapped_factors", "retention_params", "update_params", "wrapped_modules"}
_BOOL_STATS = {"regularizer_applied"}


def _legacy_history(state: dict[str, Any], stages: list[Stage]) -> list[dict[str, Any]]:
    """Per-stage rows from ``history.<i>.<key>`` float64 scalars (checkpoints of the flat layout)."""
    rows: dict[int, dict[str, Any]] = {}
    for key, value in state.items():
        if key.startswith("history."):
            _, i, field_name = key.split(".", 2)
            rows.setdefault(int(i), {})[field_name] = value.item()
    history = []
    for i in sorted(rows):
        row = rows[i]
        entry: dict[str, Any] = {"stage": stages[int(row["stage_index"])].name}
        for key, value in row.items():
            entry[key] = int(value) if key in _INT_STATS else bool(value) if key in _BOOL_STATS else value
        history.append(entry)
    return history


def _legacy_running(state: dict[str, Any]) -> dict[str, Any]:
    """``<name>.<key>`` scalar tensors of the flat layout, grouped by name (``pen``, ``last``)."""
    running: dict[str, Any] = {}
    for key, value in state.items():
        prefix, _, name = key.partition(".")
        if prefix != "history" and name:
            running.setdefault(prefix, {})[name] = value.clone()
    return running
