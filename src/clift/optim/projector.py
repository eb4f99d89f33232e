"""Gradient projections for GaLore and GORP: low-rank projectors and shared-space (GPM) bases.

Everything here is a pure function of tensors, so an optimizer can keep its whole state as tensors
(projection matrices included) and ``state_dict()`` round-trips without pickling any object.

Two kinds of projection:

* **GaLore low-rank projection** of a gradient ``G`` (m, n) onto the top-``k`` singular subspace of
  ``G`` itself, on the side chosen by ``proj_type``:

  ==========  ==========================  ===============  ====================
  side        projection matrices         ``project(G)``   ``project_back(N)``
  ==========  ==========================  ===============  ====================
  ``right``   ``V_k`` (n, k)              ``G V_k`` (m, k) ``N V_kᵀ`` (m, n)
  ``left``    ``U_k`` (m, k)              ``U_kᵀ G`` (k, n) ``U_k N`` (m, n)
  ``full``    ``U_k`` (m, k), ``V_k``     ``U_kᵀ G V_k``   ``U_k N V_kᵀ``
  ==========  ==========================  ===============  ====================

  ``std`` resolves to ``right`` when m ≥ n and to ``left`` otherwise, so the low-rank matrix keeps the
  larger dimension (GaLore's default and GORP's released setting).

* **Shared-space projection** ``R ← R − S (Sᵀ R)`` (side ``left``, S has as many rows as R) or
  ``R ← R − (R S) Sᵀ`` (side ``right``, S has as many rows as R has columns), with S an orthonormal
  basis of the directions earlier tasks used. ``S Sᵀ`` is never formed: for LLaMA-7B's gate_proj it
  would be a dense 11008 × 11008 matrix per layer.

Bases grow after each task with the GPM energy rule (:func:`extend_basis`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

ProjType = Literal["std", "left", "right", "full"]
Side = Literal["left", "right", "full"]
SharedSide = Literal["left", "right"]
SvdMethod = Literal["exact", "randomized"]

PROJ_TYPES: tuple[str, ...] = ("std", "left", "right", "full")
SHARED_SIDES: tuple[str, ...] = ("left", "right")
SVD_METHODS: tuple[str, ...] = ("exact", "randomized")

#: extra random directions of the randomized range finder (Halko et al. 2011, §4): k + 8 columns
#: capture the top-k subspace of a gradient well with two power iterations
RANDOMIZED_OVERSAMPLE = 8
RANDOMIZED_POWER_ITERS = 2


def projection_side(shape: tuple[int, ...] | torch.Size, proj_type: str) -> Side:
    """The side a ``proj_type`` projects a matrix of ``shape`` on.

    Args:
        shape: (m, n), the gradient's shape.
        proj_type: ``std`` (right when m ≥ n, else left), ``left``, ``right`` or ``full``.

    Returns:
        ``left``, ``right`` or ``full``.

    Raises:
        ValueError: for any other ``proj_type``.
    """
    if proj_type == "std":
        return "right" if shape[0] >= shape[1] else "left"
    if proj_type in ("left", "right", "full"):
        return proj_type  # type: ignore[return-value]
    else:
        raise ValueError(
            f"Invalid proj_type: {proj_type!r} - should be one of {', '.join(PROJ_TYPES)} "
            "(std picks right for tall or square gradients, left for wide ones)"
        )


def effective_rank(shape: tuple[int, ...] | torch.Size, rank: int) -> int:
    """The rank actually used: ``rank`` capped at ``min(m, n)`` (a larger rank is a full-rank basis)."""
    return max(1, min(int(rank), int(shape[0]), int(shape[1])))


def low_rank_shape(shape: tuple[int, ...] | torch.Size, rank: int, proj_type: str) -> tuple[int, int]:
    """Shape of the projected gradient (and of Adam's moments) for a gradient of ``shape``.

    Returns:
        (m, k) for ``right``, (k, n) for ``left``, (k, k) for ``full``, with k = :func:`effective_rank`.
    """
    m, n = int(shape[0]), int(shape[1])
    k = effective_rank(shape, rank)
    side = projection_side(shape, proj_type)
    if side == "right":
        return (m, k)
    if side == "left":
        return (k, n)
    return (k, k)


def _work_dtype(t: Tensor) -> torch.dtype:
    # LAPACK has no half-precision SVD; float64 inputs keep float64 (tests compare in float64)
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _randomized_left_vectors(a: Tensor, k: int, seed: int) -> Tensor:
    """Top-``k`` left singular vectors of ``a`` (p, q) by a randomized range finder.

    A private generator seeded with ``seed`` draws the test matrix, so the result is reproducible and the
    global RNG (dropout, data order) is untouched.

    Returns:
        (p, k) matrix with orthonormal columns.
    """
    p, q = a.shape
    width = min(k + RANDOMIZED_OVERSAMPLE, p, q)
    gen = torch.Generator(device=a.device).manual_seed(int(seed))
    omega = torch.randn(q, width, generator=gen, device=a.device, dtype=a.dtype)  # (q, width)
    y = a @ omega  # (p, width)
    basis, _ = torch.linalg.qr(y)
    # power iterations sharpen the spectrum so the leading k directions separate from the tail;
    # re-orthonormalising between products keeps the small singular values from being lost to rounding
    for _ in range(RANDOMIZED_POWER_ITERS):
        z, _ = torch.linalg.qr(a.T @ basis)  # (q, width)
        basis, _ = torch.linalg.qr(a @ z)  # (p, width)
    small = basis.T @ a  # (width, q)
    u_small, _, _ = torch.linalg.svd(small, full_matrices=False)
    return basis @ u_small[:, :k]  # (p, k)


def align_signs(new: Tensor, previous: Tensor | None) -> Tensor:
    """Flip columns of ``new`` so that each points the same way as the previous projector's column.

    A singular vector is defined up to its sign, and the randomized range finder's sign depends on its
    seed (the step number). Adam's moments are kept in the projector's coordinates and are not rotated
    at a refresh, so a flipped column would flip the sign of that part of the first moment. Column i of
    ``new`` is negated where ``previous[:, i]ᵀ new[:, i] < 0``.

    Args:
        new: (p, k) orthonormal columns.
        previous: (p, k') the projector before the refresh, or None (nothing to align with).

    Returns:
        (p, k) ``new`` with some columns negated.
    """
    if previous is None or previous.shape[0] != new.shape[0]:
        return new
    k = min(new.shape[1], previous.shape[1])
    dots = (previous[:, :k].to(new.dtype) * new[:, :k]).sum(dim=0)  # (k,)
    signs = torch.where(dots < 0, -1.0, 1.0).to(new.dtype)
    if k == new.shape[1]:
        return new * signs
    return torch.cat([new[:, :k] * signs, new[:, k:]], dim=1)


def compute_projection(
    grad: Tensor,
    rank: int,
    proj_type: str,
    svd: str = "exact",
    seed: int = 0,
    previous: tuple[Tensor | None, Tensor | None] = (None, None),
) -> tuple[Tensor | None, Tensor | None]:
    """Orthonormal GaLore projection matrices from the singular vectors of ``grad``.

    Args:
        grad: (m, n) gradient.
        rank: k, capped at ``min(m, n)``.
        proj_type: ``std``, ``left``, ``right`` or ``full``.
        svd: ``exact`` (``torch.linalg.svd``, as GaLore) or ``randomized`` (a randomized range finder
            with 8 extra columns and 2 power iterations: much faster on large matrices, and the same
            subspace up to the gradient's spectral gap at k).
        seed: seed of the randomized method's test matrix.
        previous: the projection before this refresh, ``(left, right)``. The ``randomized`` method aligns
            each new column's sign with it (:func:`align_signs`), so Adam's unrotated moments keep their
            sign across refreshes; ``exact`` keeps LAPACK's signs (bit-identical to GaLore).

    Returns:
        ``(left, right)``: ``U_k`` (m, k) or None, ``V_k`` (n, k) or None, in ``grad``'s dtype; ``V_k`` is
        column-major (:func:`column_major`).

    Raises:
        ValueError: for a ``proj_type`` or ``svd`` outside the allowed values, or a non-2-D ``grad``.
    """
    if grad.ndim != 2:
        raise ValueError(f"GaLore projection needs a 2-D gradient, got shape {tuple(grad.shape)}.")
    side = projection_side(grad.shape, proj_type)
    k = effective_rank(grad.shape, rank)
    g = grad.detach().to(_work_dtype(grad))
    left: Tensor | None = None
    right: Tensor | None = None
    if svd == "exact":
        u, _, vh = torch.linalg.svd(g, full_matrices=False)
        if side in ("left", "full"):
            left = u[:, :k]
        if side in ("right", "full"):
            right = vh[:k].T
    elif svd == "randomized":
        if side in ("left", "full"):
            left = align_signs(_randomized_left_vectors(g, k, seed), previous[0])
        if side in ("right", "full"):
            right = align_signs(_randomized_left_vectors(g.T, k, seed), previous[1])
    else:
        raise ValueError(f"Invalid svd: {svd!r} - should be one of {', '.join(SVD_METHODS)}")
    if left is not None:
        left = left.to(grad.dtype).contiguous()
    if right is not None:
        right = column_major(right.to(grad.dtype))
    return left, right


def column_major(right: Tensor) -> Tensor:
    """``right`` (n, k) laid out as the transpose of a contiguous (k, n) tensor (same values).

    ``G V_k`` (m, n) @ (n, k) and the project-back ``addmm_(N, V_kᵀ)`` then read V_k with unit stride along
    n; with a row-major (n, k) V_k the projection is 2–3× slower on CPU (``benchmarks/galore_adamw_speed.py``).
    """
    return right.T.contiguous().T


def project(grad: Tensor, left: Tensor | None, right: Tensor | None) -> Tensor:
    """Project ``grad`` (m, n) to low rank: ``U_kᵀ G``, ``G V_k`` or ``U_kᵀ G V_k`` (see the module table).

    Raises:
        ValueError: when neither projection matrix is given.
    """
    if left is not None and right is not None:
        return left.T @ grad @ right  # (k, k)
    if right is not None:
        return grad @ right  # (m, k)
    if left is not None:
        return left.T @ grad  # (k, n)
    else:
        raise ValueError("project() needs a left or a right projection matrix; both are None.")


def project_back(low: Tensor, left: Tensor | None, right: Tensor | None, scale: float = 1.0) -> Tensor:
    """Map a low-rank update back to the full (m, n) shape and multiply by ``scale`` (GaLore's α).

    Raises:
        ValueError: when neither projection matrix is given.
    """
    if left is not None and right is not None:
        full = left @ low @ right.T
    elif right is not None:
        full = low @ right.T
    elif left is not None:
        full = left @ low
    else:
        raise ValueError("project_back() needs a left or a right projection matrix; both are None.")
    return full * scale if scale != 1.0 else full


def remove_shared(grad: Tensor, basis: Tensor, side: str = "left") -> Tensor:
    """Remove the component of ``grad`` that lies in the span of ``basis``.

    Args:
        grad: (p, q) matrix.
        basis: orthonormal columns, (p, c) for ``side="left"``, (q, c) for ``side="right"``; c may be 0.
        side: ``left``: ``G − S (Sᵀ G)`` (row space); ``right``: ``G − (G S) Sᵀ`` (column space).

    Returns:
        The projected (p, q) matrix; ``S S ᵀ`` is never formed, so the cost is O(p q c).

    Raises:
        ValueError: for another ``side`` or a basis whose row count does not match ``grad``.
    """
    if side == "left":
        if basis.shape[0] != grad.shape[0]:
            raise ValueError(
                f"shared basis has {basis.shape[0]} rows but the gradient has {grad.shape[0]} rows "
                f"(side=left needs a ({grad.shape[0]}, c) basis)."
            )
        if basis.shape[1] == 0:
            return grad
        return grad - basis @ (basis.T @ grad)
    if side == "right":
        if basis.shape[0] != grad.shape[1]:
            raise ValueError(
                f"shared basis has {basis.shape[0]} rows but the gradient has {grad.shape[1]} columns "
                f"(side=right needs a ({grad.shape[1]}, c) basis)."
            )
        if basis.shape[1] == 0:
            return grad
        return grad - (grad @ basis) @ basis.T
    else:
        raise ValueError(f"Invalid shared side: {side!r} - should be one of {', '.join(SHARED_SIDES)}")


#: how an empty basis is started: ``strict`` (GPM's code) or ``inclusive`` (the later-task rule)
FIRST_TASK_RULES = ("strict", "inclusive")


def _count_first_task(energy: Tensor, threshold: float, rule: str) -> int:
    # strict (GPM's code): the leading directions whose cumulative energy stays strictly below the
    # threshold, so it can be 0 and never reaches the threshold itself. inclusive: the smallest count
    # whose cumulative energy reaches it (GPM's criterion ‖M_k‖² ≥ ε‖M‖², and what the later-task rule
    # does), i.e. one more, never more than the directions that carry energy
    below = int((torch.cumsum(energy, 0) < threshold).sum().item())
    if rule == "strict":
        return below
    return min(below + 1, int((energy > 0).sum().item()))


#: a direction of the residual M̂ = M − S Sᵀ M is appended only if its singular value exceeds this many
#: machine epsilons times ‖M‖_F: below that it is rounding left over from S's span, whose singular vector
#: is arbitrary and not orthogonal to S
RESIDUAL_CUTOFF_EPS = 100.0


def _orthonormalize_against(old: Tensor, new: Tensor) -> Tensor:
    """Columns spanning ``new``'s directions orthogonal to ``old``, orthonormal, as (p, c) or fewer.

    Two rounds of Gram-Schmidt against ``old`` ("twice is enough", Parlett) and a QR of the result keep
    ``[old, out]`` orthonormal to rounding even when ``new`` is nearly inside ``old``'s span; a column that
    has (numerically) nothing left outside the span is dropped.
    """
    if new.shape[1] == 0:
        return new
    kept = torch.ones(new.shape[1], dtype=new.dtype, device=new.device)  # (c,) share of each unit column left
    for _ in range(2):
        if old.shape[1]:
            new = new - old @ (old.T @ new)
        new, r = torch.linalg.qr(new)  # (p, c), (c, c)
        signs = torch.where(r.diagonal() < 0, -1.0, 1.0).to(new.dtype)
        new = new * signs  # QR's sign convention is arbitrary: keep each column pointing the way it did
        kept = kept * r.diagonal().abs()
    return new[:, kept > 0.5]


def _extension_count(residual: Tensor, total: float, threshold: float) -> tuple[Tensor, int]:
    """Left singular vectors of the residual and how many the GPM extension rule appends."""
    u, sigma, _ = torch.linalg.svd(residual, full_matrices=False)
    energy = sigma**2 / total
    acc = (total - float((residual * residual).sum())) / total
    cutoff = RESIDUAL_CUTOFF_EPS * torch.finfo(residual.dtype).eps * total**0.5
    usable = int((sigma > cutoff).sum().item())
    count = 0
    for i in range(usable):
        if acc >= threshold:
            break
        acc += float(energy[i])
        count += 1
    return u, count


def extend_basis(
    basis: Tensor | None, moment: Tensor, threshold: float = 0.9, side: str = "left", first_task: str = "strict"
) -> Tensor:
    """Grow an orthonormal basis from a task's first moment by the GPM cumulative-energy rule.

    With ``side="left"`` the basis spans row-space directions of ``moment`` (p, q) (left singular
    vectors); with ``side="right"`` it spans column-space directions (the rule applied to ``momentᵀ``).
    Writing M for the oriented (p, q) matrix and ``tot = ‖M‖_F²``:

    * no basis yet (``basis`` None: the first task): ``M = U Σ Vᵀ``; keep
      ``c = #{i : Σ_{j≤i} σ_j²/tot < threshold}`` columns of U (``first_task="strict"``, GPM's code: c can
      be 0), or that count + 1, the smallest c whose cumulative energy reaches the threshold
      (``"inclusive"``, as the rule below);
    * otherwise, including a stored basis with 0 columns (a later task, as the released trainer):
      ``M̂ = M − S Sᵀ M = Û Σ̂ V̂ᵀ``; start at ``acc = (tot − ‖M̂‖_F²)/tot`` (energy S already covers) and
      append columns of Û while ``acc < threshold``, adding ``σ̂_i²/tot`` each time. Only directions
      with ``σ̂_i > 100 ε_mach ‖M‖_F`` count (the rest is rounding inside S's span), and the appended
      columns are orthogonalised against S twice, so ``‖SᵀS − I‖`` stays at rounding level.

    The result is capped at p columns. A zero moment adds nothing.

    Args:
        basis: (p, c) orthonormal columns, or None before the first task.
        moment: the task's first moment (Adam's ``exp_avg``), (p, q) before orientation.
        threshold: ε in (0, 1]. Default 0.9 (GPM, GORP). 1 keeps every direction with energy.
        side: ``left`` or ``right``.
        first_task: rule for ``basis=None``, ``strict`` (default) or ``inclusive``.

    Returns:
        (p, c') orthonormal columns, c ≤ c' ≤ p, in ``moment``'s dtype.

    Raises:
        ValueError: for a bad ``side`` or ``first_task``, a non-2-D moment, a threshold outside (0, 1] or
            a basis of the wrong height.
    """
    if side not in SHARED_SIDES:
        raise ValueError(f"Invalid shared side: {side!r} - should be one of {', '.join(SHARED_SIDES)}")
    if first_task not in FIRST_TASK_RULES:
        raise ValueError(f"Invalid first-task rule: {first_task!r} - should be one of {', '.join(FIRST_TASK_RULES)}")
    if moment.ndim != 2:
        raise ValueError(f"extend_basis needs a 2-D moment, got shape {tuple(moment.shape)}.")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"Invalid threshold: {threshold} - should be in (0, 1] (GPM and GORP use 0.9)")
    m = moment.detach().to(_work_dtype(moment))
    m = m if side == "left" else m.T  # (p, q)
    p = m.shape[0]
    if basis is not None and basis.shape[0] != p:
        raise ValueError(f"basis has {basis.shape[0]} rows, the oriented moment has {p} (side={side}).")
    old = m.new_zeros((p, 0)) if basis is None else basis.detach().to(device=m.device, dtype=m.dtype)
    total = float((m * m).sum())
    if total == 0.0 or not math.isfinite(total) or old.shape[1] >= p:
        return old[:, :p].to(moment.dtype)
    if basis is None:
        u, sigma, _ = torch.linalg.svd(m, full_matrices=False)
        new = u[:, : _count_first_task(sigma**2 / total, threshold, first_task)]
    else:
        residual = m
        for _ in range(2):  # twice: one pass leaves ~ε‖M‖ of S's span, which can dominate a tiny residual
            residual = residual - old @ (old.T @ residual)
        u, count = _extension_count(residual, total, threshold)
        new = _orthonormalize_against(old, u[:, :count])
    grown = torch.cat([old, new], dim=1)
    return grown[:, :p].to(moment.dtype).contiguous()
