"""``ProjectedAdamW``: AdamW whose gradient projections are switched on per parameter group.

A group is plain AdamW unless it carries projection keys (GaLore's interface):

* ``rank`` (int ≥ 1) turns on the GaLore low-rank projector for every (2-D) parameter of the group,
  with ``update_proj_gap`` (T, default 200), ``scale`` (α, default 1.0), ``proj_type`` (``std`` |
  ``left`` | ``right`` | ``full``, default ``std``) and ``svd`` (``exact`` | ``randomized``, default
  ``exact``).
* a **shared-space basis** S per parameter (given with ``shared_bases=`` or
  :meth:`ProjectedAdamW.set_shared_basis`) removes S's span from the (projected) gradient before the
  moments: ``R ← R − S (Sᵀ R)``. The group key ``shared_side`` (``auto`` | ``left`` | ``right``, default
  ``auto``) says which axis S lives on; ``auto`` is ``right`` (the input axis) for a GaLore parameter
  projected on the left, where the rows are GaLore coordinates that change at every refresh, and
  ``left`` otherwise. The group key ``protect`` (``moments`` | ``update``, default ``moments``) says
  what S protects: ``moments`` (the released GORP) projects only the gradient fed to Adam, so the
  moments are orthogonal to S but the update ``M / (√V + eps)`` is not (the element-wise division puts
  S's directions back); ``update`` also removes S's span from that normalised update before it is
  applied, so ``Sᵀ ΔW = 0`` to rounding.
* a parameter whose basis is **full** (as many columns as rows) is frozen: it is skipped exactly (no
  moment update, no weight decay), instead of letting Adam amplify the rounding residual of
  ``G − S Sᵀ G``.

Per step and parameter, with G the (already clipped) gradient, t the parameter's step count and η the
group lr (the HF / GaLore AdamW form that GORP's code uses)::

    if rank and t % T == 0:  P ← top-k singular vectors of G          # refresh (t = 0, T, 2T, ...)
    R = project(G, P) if rank else G                                  # (m, k), (k, n) or (k, k)
    R ← R − S (Sᵀ R)                                                  # if a basis is set
    M ← β1 M + (1 − β1) R ;  V ← β2 V + (1 − β2) R²                   # moments in R's shape
    N = M / (√V + eps)                                                # eps on the uncorrected √V
    N ← N − S (Sᵀ N)                                                  # only with protect=update
    U = α · project_back(N, P) if rank else N                         # one addmm_ into p
    p ← p − η · √(1 − β2^t) / (1 − β1^t) · U                          # t counted after the update
    p ← p − η λ p                                                     # decoupled decay, after the update

Weight decay comes after the update, as in the HF / GaLore AdamW that GORP's release uses (torch's
AdamW decays first; the two differ by O(η² λ) per step). With ``svd=randomized`` each refreshed
projector column takes the sign of the previous projector's column
(:func:`clift.optim.projector.align_signs`), so the unrotated moments do not flip sign at a refresh.

The moments are not rotated when the projection is refreshed (as GaLore), and ``exp_avg`` after the last
step is the first moment GORP builds its bases from (:meth:`ProjectedAdamW.first_moment`). The state
holds tensors and numbers only (``step``, ``exp_avg``, ``exp_avg_sq``, ``proj_left`` / ``proj_right``,
``shared_basis``), so ``state_dict()`` splits into safetensors + JSON for checkpoints (clift.checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from clift.optim.projector import (
    PROJ_TYPES,
    SVD_METHODS,
    column_major,
    compute_projection,
    low_rank_shape,
    project,
    projection_side,
    remove_shared,
)

#: group keys that only make sense together with ``rank``, with their defaults
GALORE_DEFAULTS: dict[str, Any] = {"update_proj_gap": 200, "scale": 1.0, "proj_type": "std", "svd": "exact"}
SHARED_SIDE_CHOICES: tuple[str, ...] = ("auto", "left", "right")
#: what a shared basis protects: Adam's moments (the released GORP) or also the applied update
PROTECT_CHOICES: tuple[str, ...] = ("moments", "update")


def _check_common(group: Mapping[str, Any]) -> None:
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    if isinstance(lr, Tensor) or not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr} - should be a float >= 0.0")
    if not eps >= 0.0:
        raise ValueError(f"Invalid epsilon value: {eps} - should be >= 0.0")
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {beta1} - should be in [0.0, 1.0)")
    if not 0.0 <= beta2 < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {beta2} - should be in [0.0, 1.0)")
    if not wd >= 0.0:
        raise ValueError(f"Invalid weight_decay value: {wd} - should be >= 0.0")
    if group.get("shared_side", "auto") not in SHARED_SIDE_CHOICES:
        raise ValueError(
            f"Invalid shared_side: {group['shared_side']!r} - should be one of {', '.join(SHARED_SIDE_CHOICES)}"
        )
    if group.get("protect", "moments") not in PROTECT_CHOICES:
        raise ValueError(f"Invalid protect: {group['protect']!r} - should be one of {', '.join(PROTECT_CHOICES)}")


def _check_galore(group: Mapping[str, Any]) -> None:
    rank, gap, scale = group["rank"], group["update_proj_gap"], group["scale"]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"Invalid rank: {rank} - should be an int >= 1")
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 1:
        raise ValueError(f"Invalid update_proj_gap: {gap} - should be an int >= 1")
    if not (isinstance(scale, (int, float)) and scale > 0.0):
        raise ValueError(f"Invalid scale: {scale} - should be > 0.0")
    if group["proj_type"] not in PROJ_TYPES:
        raise ValueError(f"Invalid proj_type: {group['proj_type']!r} - should be one of {', '.join(PROJ_TYPES)}")
    if group["svd"] not in SVD_METHODS:
        raise ValueError(f"Invalid svd: {group['svd']!r} - should be one of {', '.join(SVD_METHODS)}")
    for p in group["params"]:
        if p.ndim != 2:
            raise ValueError(
                f"Invalid parameter for a group with rank: shape {tuple(p.shape)} - GaLore projects 2-D "
                "weight matrices only; put biases and norms in a group without `rank`"
            )


class ProjectedAdamW(torch.optim.Optimizer):
    """AdamW with per-group GaLore projection and per-parameter shared-space projection.

    Args:
        params: parameters or parameter groups. Groups may add ``rank``, ``update_proj_gap``,
            ``scale``, ``proj_type``, ``svd`` (GaLore), ``shared_side`` and ``protect`` (see the module
            docstring).
        lr: default learning rate. Default 1e-3.
        betas: (β1, β2). Default (0.9, 0.999).
        eps: added to √V (not bias-corrected). Default 1e-6 (GORP's setting).
        weight_decay: decoupled weight decay λ. Default 0.
        shared_bases: optional ``{parameter: S}``; S is (rows, c) orthonormal for the parameter's moment
            (see :meth:`basis_rows`).

    Raises:
        ValueError: for an invalid hyper-parameter (torch-style message naming the value), a 1-D
            parameter in a ``rank`` group, or a basis of the wrong shape.

    Example::

        opt = ProjectedAdamW(
            [{"params": lora_b},
             {"params": lora_a, "shared_side": "left"},
             {"params": weights, "rank": 8, "update_proj_gap": 10, "scale": 1.0, "lr": 1e-5}],
            lr=1e-3, shared_bases={a0: s_a0, w0: s_w0},
        )
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        shared_bases: Mapping[Tensor, Tensor] | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "shared_side": "auto",
            "protect": "moments",
        }
        _check_common(defaults)
        super().__init__(params, defaults)
        for param, basis in (shared_bases or {}).items():
            self.set_shared_basis(param, basis)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, filling GaLore defaults when it has ``rank`` and validating every key."""
        if "rank" in param_group:
            for key, value in GALORE_DEFAULTS.items():
                param_group.setdefault(key, value)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_common(group)
        if "rank" in group:
            _check_galore(group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as :class:`torch.optim.Optimizer` does, then lay each ``V_k`` out column-major again.

        A checkpoint stores tensors contiguous, which turns the column-major ``proj_right`` into a
        row-major one: same values, but every later projection would take the slow layout until the next
        refresh.
        """
        super().load_state_dict(state_dict)
        for state in self.state.values():
            if isinstance(state.get("proj_right"), Tensor):
                state["proj_right"] = column_major(state["proj_right"])

    # ---- lookup helpers --------------------------------------------------------------------------
    def group_of(self, param: Tensor) -> dict[str, Any]:
        """The param group holding ``param``.

        Raises:
            ValueError: for a parameter this optimizer does not manage.
        """
        for group in self.param_groups:
            if any(p is param for p in group["params"]):
                return group
        raise ValueError(
            f"parameter of shape {tuple(param.shape)} is not managed by this optimizer; give bases only "
            "for parameters that are in its param groups"
        )

    @staticmethod
    def moment_shape(param: Tensor, group: Mapping[str, Any]) -> tuple[int, ...]:
        """Shape of Adam's moments for ``param`` in ``group``: the low-rank shape for GaLore groups."""
        if "rank" in group:
            return low_rank_shape(param.shape, group["rank"], group["proj_type"])
        return tuple(param.shape)

    @staticmethod
    def resolved_shared_side(param: Tensor, group: Mapping[str, Any]) -> str:
        """``left`` or ``right``: the axis of the moment matrix a shared basis lives on."""
        side = group.get("shared_side", "auto")
        if side != "auto":
            return side
        if "rank" in group and projection_side(param.shape, group["proj_type"]) == "left":
            return "right"
        return "left"

    def basis_rows(self, param: Tensor) -> int:
        """How many rows a shared basis for ``param`` must have."""
        group = self.group_of(param)
        shape = self.moment_shape(param, group)
        if len(shape) != 2:
            raise ValueError(
                f"a shared basis needs a 2-D parameter, got shape {tuple(param.shape)}; give bases only "
                "for weight matrices"
            )
        return shape[0] if self.resolved_shared_side(param, group) == "left" else shape[1]

    def set_shared_basis(self, param: Tensor, basis: Tensor | None) -> None:
        """Set (or clear, with None) the shared-space basis S of ``param``.

        Args:
            param: a parameter of this optimizer.
            basis: (rows, c) with orthonormal columns, c ≤ rows, rows = :meth:`basis_rows` (the moment's
                row count for side ``left``, its column count for side ``right``).

        Raises:
            ValueError: for a parameter this optimizer does not manage or a basis of the wrong shape.
        """
        if basis is None:
            self.state[param].pop("shared_basis", None)
            return
        rows = self.basis_rows(param)
        if basis.ndim != 2 or basis.shape[0] != rows or basis.shape[1] > rows:
            raise ValueError(
                f"Invalid shared basis shape: {tuple(basis.shape)} - should be ({rows}, c) with c <= {rows} "
                f"for the parameter of shape {tuple(param.shape)}"
            )
        self.state[param]["shared_basis"] = basis.detach().to(device=param.device, dtype=param.dtype).clone()

    def shared_basis(self, param: Tensor) -> Tensor | None:
        """The shared basis of ``param``, or None."""
        return self.state[param].get("shared_basis") if param in self.state else None

    def first_moment(self, param: Tensor) -> Tensor | None:
        """Adam's ``exp_avg`` of ``param`` (low-rank shape for GaLore groups), or None before a step."""
        return self.state[param].get("exp_avg") if param in self.state else None

    # ---- the step --------------------------------------------------------------------------------
    def _frozen(self, p: Tensor, group: Mapping[str, Any]) -> bool:
        # a basis with as many columns as rows spans the whole space: the update is zero by definition,
        # but the rounding residual of G − S Sᵀ G (~1e-8) would be blown up by Adam's 1/√V to a full step
        basis = self.state[p].get("shared_basis") if p in self.state else None
        return basis is not None and basis.shape[1] > 0 and basis.shape[1] >= self.basis_rows(p)

    def _low_rank_grad(self, p: Tensor, group: Mapping[str, Any], state: dict[str, Any]) -> Tensor:
        """The gradient Adam sees: GaLore-projected (refreshing the projection every T steps), then off S."""
        grad = p.grad
        if "rank" in group:
            if state["step"] % group["update_proj_gap"] == 0 or not ("proj_left" in state or "proj_right" in state):
                left, right = compute_projection(
                    grad,
                    group["rank"],
                    group["proj_type"],
                    group["svd"],
                    seed=state["step"],
                    previous=(state.get("proj_left"), state.get("proj_right")),
                )
                for key, mat in (("proj_left", left), ("proj_right", right)):
                    if mat is None:
                        state.pop(key, None)
                    else:
                        state[key] = mat
            grad = project(grad, state.get("proj_left"), state.get("proj_right"))
        basis = state.get("shared_basis")
        if basis is not None and basis.shape[1] > 0:
            grad = remove_shared(grad, basis, self.resolved_shared_side(p, group))
        return grad

    def _apply(self, p: Tensor, group: Mapping[str, Any], state: dict[str, Any], update: Tensor) -> None:
        """``p ← p − step_size · α · project_back(update)``, then decoupled weight decay (the release's order).

        The projection back, the scale and the add are one ``addmm_`` (no m × n temporary).
        """
        beta1, beta2 = group["betas"]
        t = state["step"]
        step_size = group["lr"] * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        if "rank" in group:
            left, right = state.get("proj_left"), state.get("proj_right")
            alpha = -step_size * group["scale"]
            if left is not None and right is not None:
                p.addmm_(left @ update, right.T, alpha=alpha)
            elif right is not None:
                p.addmm_(update, right.T, alpha=alpha)  # (m, k) @ (k, n)
            else:
                p.addmm_(left, update, alpha=alpha)  # (m, k) @ (k, n)
        else:
            p.add_(update, alpha=-step_size)
        if group["weight_decay"] != 0.0:
            # after the update, as HF's / GaLore's AdamW in GORP's release (torch's AdamW decays before)
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One optimizer step (see the module docstring). Returns the closure's loss, if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None or self._frozen(p, group):
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ProjectedAdamW does not support sparse gradients")
                state = self.state[p]
                if "step" not in state:
                    shape = self.moment_shape(p, group)
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros(shape, dtype=p.dtype, device=p.device)
                    state["exp_avg_sq"] = torch.zeros(shape, dtype=p.dtype, device=p.device)
                grad = self._low_rank_grad(p, group, state)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                update = exp_avg / exp_avg_sq.sqrt().add_(group["eps"])
                basis = state.get("shared_basis")
                if group.get("protect", "moments") == "update" and basis is not None and basis.shape[1] > 0:
                    # Adam's element-wise 1/√V puts S's directions back into the update; remove them again
                    update = remove_shared(update, basis, self.resolved_shared_side(p, group))
                self._apply(p, group, state, update)
        return loss
