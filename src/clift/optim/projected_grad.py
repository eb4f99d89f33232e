"""Projected weight gradients inside autograd: GaLore's low-rank gradient without the full dYᵀX product.

A Linear layer y = x Wᵀ (W: m × n, x: tokens × n) has the weight gradient G = dYᵀ X, an m × n product over
all tokens: for SmolLM2's gate_proj at 8 × 128 tokens it is the largest extra matmul GORP adds. Between
two refreshes GaLore only ever uses ``G V_k`` (right projection) or ``U_kᵀ G`` (left), which autograd can
compute through the thin side first:

    G V_k = dYᵀ (X V_k)          (tokens·n·k + m·tokens·k FLOPs instead of m·tokens·n)
    U_kᵀ G = (dY U_k)ᵀ X

:class:`ProjectedWeightGrad` installs, on chosen Linear layers, a forward whose backward returns the
weight gradient **already projected onto the current projector's subspace**, ``G̃ = (G V_k) V_kᵀ`` (or
``U_k (U_kᵀ G)``): a rank-k m × n matrix, cheap to form. The optimizer's projection of G̃ gives exactly
``G V_k`` (V_k is orthonormal), so the update is the same as with the full gradient, while gradient
clipping sees ``‖G̃‖ = ‖G V_k‖`` (the projected gradient's norm, ≤ ‖G‖) for these weights instead of
‖G‖. On refresh steps (the optimizer's step count a multiple of T, or no projector yet) the layer runs
its ordinary forward, so the SVD sees the full gradient. Option ``galore_grad: projected`` of ``gorp``;
off by default.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ProjectedLinear(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` whose weight gradient is projected onto ``left`` / ``right``."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, left: Tensor | None, right: Tensor | None
    ) -> Tensor:
        ctx.save_for_backward(x, weight, left, right)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, left, right = ctx.saved_tensors
        grad_x = dy @ weight.to(dy.dtype) if ctx.needs_input_grad[0] else None  # (..., n)
        dy2 = dy.reshape(-1, dy.shape[-1])  # (tokens, m)
        x2 = x.reshape(-1, x.shape[-1]).to(dy.dtype)  # (tokens, n)
        grad_w = None
        if ctx.needs_input_grad[1]:
            if right is not None:
                r = right.to(dy.dtype)  # (n, k)
                grad_w = (dy2.T @ (x2 @ r)) @ r.T  # (m, k) @ (k, n)
            else:
                u = left.to(dy.dtype)  # (m, k)
                grad_w = u @ ((dy2 @ u).T @ x2)  # (m, k) @ (k, n)
            grad_w = grad_w.to(weight.dtype)
        grad_b = dy2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


def _projected_forward(module: nn.Linear, x: Tensor) -> Tensor:
    """The forward installed on a Linear layer by :class:`ProjectedWeightGrad` (bound to the layer)."""
    owner: ProjectedWeightGrad = module.__dict__["_projected_weight_grad"]
    proj = owner.projector(module.weight) if torch.is_grad_enabled() else None
    if proj is None:
        return F.linear(x, module.weight, module.bias)
    return _ProjectedLinear.apply(x, module.weight, module.bias, *proj)


class ProjectedWeightGrad:
    """Makes chosen Linear layers produce projected weight gradients on an optimizer's non-refresh steps.

    Args:
        modules: the Linear layers (their weights must be in a ``rank`` group of ``optimizer``).
        optimizer: a :class:`clift.optim.ProjectedAdamW`; its state says which projector is current
            and whether the next step refreshes it.
    """

    def __init__(self, modules: list[nn.Linear], optimizer: Any) -> None:
        self.modules = list(modules)
        self.optimizer = optimizer
        for module in self.modules:
            # instance attributes (not submodules): nn.Module.__call__ finds the instance's forward first
            module.__dict__["_projected_weight_grad"] = self
            module.__dict__["forward"] = types.MethodType(_projected_forward, module)

    def projector(self, weight: Tensor) -> tuple[Tensor | None, Tensor | None] | None:
        """``(left, right)`` to project onto in this step, or None when the step refreshes (full gradient)."""
        state = self.optimizer.state.get(weight, {})
        if "step" not in state or not ("proj_left" in state or "proj_right" in state):
            return None
        group = self.optimizer.group_of(weight)
        if state["step"] % group["update_proj_gap"] == 0:
            return None
        right = state.get("proj_right")
        # two-sided (full) projection: the right factor alone suffices, the optimizer applies the left one
        return (None, right) if right is not None else (state.get("proj_left"), None)

    def remove(self) -> None:
        """Give the layers their ordinary forward back."""
        for module in self.modules:
            module.__dict__.pop("forward", None)
            module.__dict__.pop("_projected_weight_grad", None)
        self.modules = []
