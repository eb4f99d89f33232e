"""Per-stage magnitudes of loss terms, so results.json shows how large each penalty is next to the task loss.

Shared by the regularised methods (``olora``, ``ewc``, ``lwf``).
"""

from __future__ import annotations

from typing import Any

import torch


class LossTerms:
    """Per-stage means of named loss terms, for a method's ``stats()``, resumable through tensors.

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

    def state_dict(self, prefix: str = "terms.") -> dict[str, torch.Tensor]:
        """The sums and call counts as 0-d tensors (float64, exact), keyed ``<prefix><i|open>.…``."""
        out: dict[str, torch.Tensor] = {}
        entries = [(str(i), d) for i, d in enumerate(self._done)]
        if self._open is not None:
            entries.append(("open", self._open))
        for tag, (_, calls, sums) in entries:
            out[f"{prefix}{tag}.calls"] = torch.tensor(calls, dtype=torch.int64)
            out.update({f"{prefix}{tag}.sum.{k}": torch.tensor(v, dtype=torch.float64) for k, v in sums.items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor], names: list[str], prefix: str = "terms.") -> None:
        """Restore :meth:`state_dict` (other keys of ``state`` are ignored).

        Args:
            state: the method's state.
            names: the run's stage names in order (finished stage i is ``names[i]``; an open stage is
                the next one).
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
        self._done = [(names[i] if i < len(names) else str(i), calls[str(i)], sums.get(str(i), {})) for i in done]
        self._open = None
        if "open" in calls:
            i = len(self._done)
            self._open = (names[i] if i < len(names) else str(i), calls["open"], sums.get("open", {}))


def task_loss_of(outputs: Any) -> torch.Tensor | None:
    """The task loss the runner computed (``outputs.loss`` of a Hugging Face model), if any."""
    loss = getattr(outputs, "loss", None)
    return loss if isinstance(loss, torch.Tensor) else None
