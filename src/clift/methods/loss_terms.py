"""Per-stage magnitudes of loss terms, so results.json shows how large each penalty is next to the task loss.

Shared by the regularised methods (``olora``, ``ewc``, ``lwf``).
"""

from __future__ import annotations

from typing import Any

import torch

from clift.methods.base import check_state


class LossTerms:
    """Per-stage means of named loss terms, for a method's ``stats()``, resumable through its state.

    A method calls :meth:`start` in ``before_task``, :meth:`add` once per ``loss`` call (one
    micro-batch), :meth:`finish` in ``after_task`` and :meth:`discard` in ``restore_task`` (on resume
    the runner replays ``before_task`` for finished stages; their rows come from the checkpoint). By
    convention ``task_loss`` is the LM loss and ``penalty`` the weighted sum of every extra term, so each
    row also reports ``penalty_to_task`` = mean penalty / mean task loss: the ratio users need to
    choose λ.
    """

    def __init__(self) -> None:
        # finished stages and the open one: (stage name, calls, {term: sum over calls})
        self._done: list[tuple[str, int, dict[str, float]]] = []
        self._open: tuple[str, int, dict[str, float]] | None = None

    def start(self, stage: str) -> None:
        """Begin stage ``stage`` (an unfinished previous stage is closed first)."""
        if self._open is not None:
            self.finish()
        self._open = (stage, 0, {})

    def add(self, **values: float | torch.Tensor | None) -> None:
        """Record one call's values (tensors are detached; ``None`` values are skipped)."""
        if self._open is None:
            return
        name, calls, sums = self._open
        for key, value in values.items():
            if value is not None:
                v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                sums[key] = sums.get(key, 0.0) + v
        self._open = (name, calls + 1, sums)

    def finish(self) -> dict[str, Any] | None:
        """Close the open stage and return its row (``None`` when no stage is open)."""
        if self._open is None:
            return None
        self._done.append(self._open)
        self._open = None
        return self._row(*self._done[-1])

    def discard(self) -> None:
        """Drop the open stage without a row."""
        self._open = None

    @staticmethod
    def _row(stage: str, calls: int, sums: dict[str, float]) -> dict[str, Any]:
        n = max(calls, 1)
        row: dict[str, Any] = {"stage": stage, "calls": calls, **{k: v / n for k, v in sums.items()}}
        task, penalty = row.get("task_loss"), row.get("penalty")
        if task is not None and penalty is not None:
            row["penalty_to_task"] = penalty / task if task > 0 else None
        return row

    def summary(self) -> list[dict[str, Any]]:
        """Every finished stage's row, in order."""
        return [self._row(*done) for done in self._done]

    def state_dict(self) -> dict[str, Any]:
        """Finished stages and the open one as ``{"done": [entry, ...], "open": entry | None}``, where an
        entry is ``{"stage": name, "calls": int, "sums": {term: float}}`` (JSON numbers: exact)."""

        def entry(item: tuple[str, int, dict[str, float]]) -> dict[str, Any]:
            return {"stage": item[0], "calls": item[1], "sums": dict(item[2])}

        return {"done": [entry(d) for d in self._done], "open": None if self._open is None else entry(self._open)}

    def load_state_dict(self, state: Any, method: str) -> None:
        """Restore :meth:`state_dict`.

        Args:
            state: what :meth:`state_dict` returned.
            method: the owning method's name, for error messages.

        Raises:
            MethodStateError: for a state of another shape.
        """
        check_state(method, state, {"done": list, "open": (dict, type(None))}, where="terms")
        entries = [*state["done"], *([] if state["open"] is None else [state["open"]])]
        for i, entry in enumerate(entries):
            where = f"terms.done.{i}" if i < len(state["done"]) else "terms.open"
            check_state(method, entry, {"stage": str, "calls": int, "sums": dict}, where=where)
        rows = [(str(e["stage"]), int(e["calls"]), {k: float(v) for k, v in e["sums"].items()}) for e in entries]
        self._done = rows[: len(state["done"])]
        self._open = rows[-1] if state["open"] is not None else None


def task_loss_of(outputs: Any) -> torch.Tensor | None:
    """The task loss the runner computed (``outputs.loss`` of a Hugging Face model), if any."""
    loss = getattr(outputs, "loss", None)
    return loss if isinstance(loss, torch.Tensor) else None
