"""Divergence detection during training: a run whose weights blow up is stopped (or flagged), not kept.

A non-finite loss is caught where it is computed (``train.nan_policy``). Training can also diverge with a
finite loss — a learning rate far too high with clipping off drives the trainable weights to huge
values while the loss sits at its random-guess level. :class:`DivergenceGuard` watches two signals
after every optimizer step:

* the root-mean-square of the trainable weights exceeds ``max(WEIGHT_RMS_FLOOR, WEIGHT_RMS_GROWTH × its
  value at the start of the stage)`` (LoRA weights are ~0.1 and full weights ~0.02–1 in RMS, so this
  bound, 10 or 100×, is far above any healthy run);
* after warm-up plus ``LOSS_WINDOW`` steps, the mean task loss of the last ``LOSS_WINDOW`` steps exceeds
  ``LOSS_RISE ×`` the mean of the first ``LOSS_WINDOW`` steps and is at least ``LOSS_MARGIN`` nats above it.

``train.nan_policy`` decides what happens: ``stop`` raises :class:`~clift.errors.TrainingError` naming the
task, the step and the likely cause; ``skip`` logs one warning per stage and training continues.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from clift.errors import TrainingError

log = logging.getLogger("clift")

WEIGHT_RMS_FLOOR = 10.0
WEIGHT_RMS_GROWTH = 100.0
LOSS_WINDOW = 10
LOSS_RISE = 3.0
LOSS_MARGIN = 2.0


class DivergenceGuard:
    """Watches one stage's training for divergence (see the module docstring for the bounds).

    Args:
        params: the stage's trainable parameters.
        train: the run's ``train`` config (``lr``, ``max_grad_norm``, ``warmup_steps``, ``nan_policy``).
        stage: the stage being trained (``index``, ``name``).
        checkpoint: the run's checkpoint folder (named in the message: the last good state).
    """

    def __init__(self, params: list[torch.Tensor], train: Any, stage: Any, checkpoint: Path) -> None:
        self.params, self.train, self.stage, self.checkpoint = params, train, stage, checkpoint
        start = self.weight_rms()
        self.bound = max(WEIGHT_RMS_FLOOR, WEIGHT_RMS_GROWTH * start) if math.isfinite(start) else math.inf
        self.losses: list[float] = []
        self.warned = False

    @torch.no_grad()
    def weight_rms(self) -> float:
        """Root-mean-square of all trainable weights (one number for the whole stage)."""
        n = sum(p.numel() for p in self.params)
        if n == 0:
            return 0.0
        # one device sync per step, not one per tensor
        norms = torch._foreach_norm([p.detach() for p in self.params])
        total = float(torch.stack([x.float().to(norms[0].device) for x in norms]).pow(2).sum())
        return math.sqrt(total / n)

    def reason(self, step: int, loss: float) -> str | None:
        """Why training looks diverged after optimizer step ``step`` (0-based), or None."""
        self.losses.append(loss)
        rms = self.weight_rms()
        if not math.isfinite(rms) or rms > self.bound:
            return f"the trainable weights' RMS reached {rms:.3g} (bound {self.bound:.3g})"
        w = LOSS_WINDOW
        if len(self.losses) >= 2 * w and step + 1 >= self.train.warmup_steps + w:
            first = sum(self.losses[:w]) / w
            last = sum(self.losses[-w:]) / w
            if last > LOSS_RISE * first and last - first > LOSS_MARGIN:
                return f"the loss rose from {first:.3g} (first {w} steps) to {last:.3g} (last {w} steps)"
        return None

    def check(self, step: int, loss: float) -> None:
        """Apply ``train.nan_policy`` when :meth:`reason` finds divergence.

        Raises:
            TrainingError: with ``nan_policy=stop``, naming the task, the step and the likely cause.
        """
        why = self.reason(step, loss)
        if why is None:
            return
        t = self.train
        cause = f"the learning rate is too high (train.lr={t.lr:g})"
        if t.max_grad_norm is None:
            cause += " with gradient clipping off (train.max_grad_norm=null)"
        where = f"stage {self.stage.index + 1} ({self.stage.name!r}) at optimizer step {step + 1}"
        if t.nan_policy == "stop":
            raise TrainingError(
                f"training diverged in {where}: {why}; likely {cause}. The last good checkpoint is kept in "
                f"{str(self.checkpoint)!r}. Lower train.lr or set train.max_grad_norm (e.g. 1.0), then rerun with "
                "--force."
            )
        if not self.warned:
            self.warned = True
            log.warning(
                "training looks diverged in %s: %s; likely %s (train.nan_policy=skip: continuing)", where, why, cause
            )
