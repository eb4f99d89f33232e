"""Read method states written before states could nest (flat ``{key: tensor}`` dicts, clift ≤ 2026-11).

Earlier versions required ``state_dict()`` to hold tensors only, so methods packed report numbers into
0-d tensors and structure into key names (``terms.0.sum.penalty``, ``basis/lora_A/<module>``,
``fisher_log.1.examples``). Checkpoints in that format still resume: a method's ``load_state_dict``
passes a flat state (:func:`is_flat`) through its converter here, which returns the nested state its
current ``state_dict()`` writes. Nothing here writes the old format, except that GORP's
``gorp_bases.safetensors`` still uses its ``basis/<kind>/<module>`` keys.
"""

from __future__ import annotations

from typing import Any

import torch

from clift.errors import MethodStateError

GORP_KINDS = ("lora_A", "full_rank")


def is_flat(state: dict[str, Any]) -> bool:
    """Whether ``state`` is in the old format: every value a tensor (an empty state counts too; every
    current format has at least one non-tensor value at the top level)."""
    return all(isinstance(v, torch.Tensor) for v in state.values())


def norms_from_tensor(tensor: torch.Tensor) -> list[float | None]:
    """Per-task norms stored as a float64 tensor with NaN for unknown → a list with None."""
    return [None if v != v else float(v) for v in tensor.tolist()]


def _name(names: list[str], i: int) -> str:
    return names[i] if i < len(names) else str(i)


def loss_terms(state: dict[str, torch.Tensor], names: list[str], prefix: str = "terms.") -> dict[str, Any]:
    """``<prefix><i|open>.calls`` / ``<prefix><i|open>.sum.<term>`` → :meth:`LossTerms.state_dict`'s format.

    Args:
        state: the flat state (keys without ``prefix`` are ignored).
        names: the run's stage names in order (finished stage i is ``names[i]``; an open stage is the next).
    """
    calls: dict[str, int] = {}
    sums: dict[str, dict[str, float]] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        tag, _, rest = key[len(prefix) :].partition(".")
        if rest == "calls":
            calls[tag] = int(value)
        elif rest.startswith("sum."):
            sums.setdefault(tag, {})[rest[4:]] = float(value)
    done = sorted(int(t) for t in calls if t.isdigit())

    def entry(tag: str, i: int) -> dict[str, Any]:
        return {"stage": _name(names, i), "calls": calls[tag], "sums": sums.get(tag, {})}

    return {
        "done": [entry(str(i), i) for i in done],
        "open": entry("open", len(done)) if "open" in calls else None,
    }


def gorp(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``basis/<kind>/<module>``, ``sizes/<kind>/<module>``, ``delta_norm_start|end``, ``task_start/<weight>``
    (also a ``gorp_bases.safetensors`` file: bases alone) → GORP's nested state.

    Raises:
        MethodStateError: for a key of neither form.
    """
    out: dict[str, Any] = {"bases": {}, "task_start": {}}
    sizes: dict[str, dict[str, list[int]]] = {}
    for key, tensor in state.items():
        if key.startswith("task_start/"):
            out["task_start"][key.removeprefix("task_start/")] = tensor
            continue
        if key in ("delta_norm_start", "delta_norm_end"):
            out[key] = norms_from_tensor(tensor)
            continue
        prefix, _, rest = key.partition("/")
        kind, _, module = rest.partition("/")
        if prefix not in ("basis", "sizes") or kind not in GORP_KINDS or not module:
            raise MethodStateError(
                "gorp",
                key,
                "basis/<kind>/<module>, sizes/<kind>/<module>, task_start/<weight>, delta_norm_start or "
                "delta_norm_end (kind lora_A or full_rank) in a flat state",
            )
        if prefix == "basis":
            out["bases"].setdefault(kind, {})[module] = tensor
        else:
            sizes.setdefault(kind, {})[module] = [int(v) for v in tensor.tolist()]
    if sizes:  # a bases file has none: the history then stays as it is
        out["basis_sizes"] = sizes
    return out


def ewc(state: dict[str, torch.Tensor], names: list[str]) -> dict[str, Any]:
    """``tasks_seen``, ``fisher.<param>``, ``anchor.<param>``, ``fisher_log.<i>.<field>``, ``terms.*`` → EWC's
    nested state.

    Raises:
        MethodStateError: without ``tasks_seen``.
    """
    if "tasks_seen" not in state:
        raise MethodStateError("ewc", "tasks_seen", "the number of finished tasks; the state was not written by EWC")
    log: dict[int, dict[str, Any]] = {}
    for key, value in state.items():
        if key.startswith("fisher_log."):
            _, i, field_name = key.split(".", 2)
            log.setdefault(int(i), {})[field_name] = value.item()
    return {
        "tasks_seen": int(state["tasks_seen"]),
        "fisher": {k[len("fisher.") :]: v for k, v in state.items() if k.startswith("fisher.")},
        "anchor": {k[len("anchor.") :]: v for k, v in state.items() if k.startswith("anchor.")},
        "fisher_log": [
            {"stage": _name(names, i), **{k: log[i][k] for k in ("examples", "fisher_mean", "fisher_max")}}
            for i in sorted(log)
        ],
        "terms": loss_terms(state, names),
    }


def lwf(state: dict[str, torch.Tensor], names: list[str]) -> dict[str, Any]:
    """``teacher.<param>`` and ``terms.*`` → LwF's nested state.

    Raises:
        MethodStateError: for any other key.
    """
    for key in state:
        if not key.startswith(("teacher.", "terms.")):
            raise MethodStateError("lwf", key, "'teacher.<trainable parameter>' or 'terms.*' keys in a flat state")
    teacher = {k[len("teacher.") :]: v for k, v in state.items() if k.startswith("teacher.")}
    return {"teacher": teacher or None, "terms": loss_terms(state, names)}


def olora(state: dict[str, torch.Tensor], names: list[str]) -> dict[str, Any]:
    """``terms.*`` → O-LoRA's nested state (other keys were ignored, and still are)."""
    return {"terms": loss_terms(state, names)}


def replay(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``memory.<i>`` and ``memory_crc.<i>`` (int64 tensors) → Replay's nested state.

    Raises:
        MethodStateError: for any other key.
    """
    out: dict[str, Any] = {"memory": {}, "memory_crc": {}}
    for key, value in state.items():
        kind, _, j = key.partition(".")
        if kind not in ("memory", "memory_crc") or not j.isdigit():
            raise MethodStateError("replay", key, "'memory.<i>' and 'memory_crc.<i>' keys in a flat state")
        out[kind][int(j)] = [int(v) for v in value.tolist()]
    return out


def galore(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``delta_norms`` (float64, NaN where unknown) → GaLore's nested state; an empty state stays empty.

    Raises:
        MethodStateError: for any other key.
    """
    for key in state:
        if key != "delta_norms":
            raise MethodStateError("galore", key, "only 'delta_norms' in a flat state")
    return {"delta_norms": norms_from_tensor(state["delta_norms"])} if "delta_norms" in state else {}
