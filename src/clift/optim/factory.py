"""The one place an AdamW is built from a run's train settings (lr, betas, eps, weight decay).

Every method's optimizer goes through :func:`make_adamw`: the default (torch's ``AdamW``) and the
projected one of GaLore and GORP (:class:`~clift.optim.adamw.ProjectedAdamW`), so a new train setting
is wired once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from clift.optim.adamw import ProjectedAdamW


class AdamSettings(Protocol):
    """What the factory reads from a train config (``clift``'s ``TrainConfig`` has these fields)."""

    lr: float
    adam_betas: Sequence[float]
    adam_eps: float
    weight_decay: float


def adam_kwargs(train: AdamSettings) -> dict[str, Any]:
    """The AdamW keyword arguments of ``train``: ``lr``, ``betas``, ``eps``, ``weight_decay``."""
    return {
        "lr": train.lr,
        "betas": tuple(train.adam_betas),
        "eps": train.adam_eps,
        "weight_decay": train.weight_decay,
    }


def make_adamw(
    groups: list[dict[str, Any]],
    train: AdamSettings,
    *,
    projected: bool = False,
    shared_bases: Mapping[torch.Tensor, torch.Tensor] | None = None,
) -> torch.optim.Optimizer:
    """An AdamW over ``groups`` with the hyper-parameters of ``train``.

    Args:
        groups: optimizer parameter groups (a group's own keys, e.g. ``lr``, override the defaults).
        train: the run's train settings.
        projected: build a :class:`ProjectedAdamW`, which reads GaLore keys (``rank``, ``proj_type``, …) and
            ``shared_side`` from the groups; otherwise torch's ``AdamW``.
        shared_bases: ``{parameter: orthonormal basis}`` of GORP's shared space (implies ``projected``).

    Returns:
        The optimizer.
    """
    if projected or shared_bases is not None:
        return ProjectedAdamW(groups, **adam_kwargs(train), shared_bases=shared_bases)
    return torch.optim.AdamW(groups, **adam_kwargs(train))
