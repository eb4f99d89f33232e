"""Projector math: sides, projection round trips, shared-space removal, the GPM energy rule."""

from __future__ import annotations

import pytest
import torch

from clift.optim import (
    compute_projection,
    extend_basis,
    low_rank_shape,
    project,
    project_back,
    projection_side,
    remove_shared,
)


def _orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64))
    return q


def _with_spectrum(sigma: list[float], rows: int, cols: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """M = U diag(sigma) Vᵀ with known singular vectors U (returned) and values."""
    u = _orthonormal(rows, len(sigma), seed)
    v = _orthonormal(cols, len(sigma), seed + 1)
    return u @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ v.T, u


@pytest.mark.parametrize(
    ("shape", "proj_type", "side", "low"),
    [
        ((12, 7), "std", "right", (12, 3)),
        ((7, 7), "std", "right", (7, 3)),
        ((5, 11), "std", "left", (3, 11)),
        ((12, 7), "left", "left", (3, 7)),
        ((5, 11), "right", "right", (5, 3)),
        ((9, 6), "full", "full", (3, 3)),
    ],
)
def test_sides_and_low_rank_shapes(shape, proj_type, side, low):
    assert projection_side(shape, proj_type) == side
    assert low_rank_shape(shape, 3, proj_type) == low
    g = torch.randn(*shape, dtype=torch.float64)
    left, right = compute_projection(g, 3, proj_type)
    r = project(g, left, right)
    assert tuple(r.shape) == low
    assert tuple(project_back(r, left, right).shape) == shape


def test_rank_above_min_dimension_is_capped_and_lossless():
    g = torch.randn(4, 9, dtype=torch.float64)
    left, right = compute_projection(g, 50, "std")
    assert right is None and left.shape == (4, 4)
    assert torch.allclose(project_back(project(g, left, right), left, right), g, atol=1e-12)


def test_unknown_proj_type_is_a_value_error_not_unbound_local():
    with pytest.raises(ValueError, match=r"Invalid proj_type: 'diag' - should be one of std, left, right, full"):
        projection_side((4, 4), "diag")
    with pytest.raises(ValueError, match="Invalid svd: 'fast'"):
        compute_projection(torch.randn(4, 4), 2, "std", svd="fast")
    with pytest.raises(ValueError, match="needs a 2-D gradient"):
        compute_projection(torch.randn(4), 2, "std")


def test_randomized_projection_matches_exact_subspace_and_keeps_global_rng():
    # a gradient with a clear spectral gap after k = 4: the randomized range finder finds the same subspace
    g, _ = _with_spectrum([10, 8, 6, 5, 0.05, 0.04, 0.03, 0.02], 300, 120, seed=3)
    g = g.float()
    _, exact = compute_projection(g, 4, "std", svd="exact")
    state = torch.random.get_rng_state()
    _, fast = compute_projection(g, 4, "std", svd="randomized", seed=7)
    assert torch.equal(state, torch.random.get_rng_state())  # dropout / data order unaffected
    assert torch.allclose(exact @ exact.T, fast @ fast.T, atol=1e-4)
    _, again = compute_projection(g, 4, "std", svd="randomized", seed=7)
    assert torch.equal(fast, again)


@pytest.mark.parametrize("side", ["left", "right"])
def test_remove_shared_leaves_nothing_in_the_basis_span(side):
    g = torch.randn(10, 6, dtype=torch.float64)
    rows = 10 if side == "left" else 6
    s = _orthonormal(rows, 3, seed=5)
    out = remove_shared(g, s, side)
    overlap = s.T @ out if side == "left" else out @ s
    assert overlap.norm() <= 1e-6 * g.norm()
    # the orthogonal complement is untouched
    assert torch.allclose(remove_shared(out, s, side), out, atol=1e-12)
    assert torch.equal(remove_shared(g, s[:, :0], side), g)


def test_remove_shared_checks_shapes_and_side():
    with pytest.raises(ValueError, match=r"needs a \(10, c\) basis"):
        remove_shared(torch.randn(10, 6), torch.randn(6, 2), "left")
    with pytest.raises(ValueError, match="Invalid shared side: 'up'"):
        remove_shared(torch.randn(10, 6), torch.randn(10, 2), "up")


def test_energy_rule_first_task_counts_strictly_below_threshold():
    # energies 0.45, 0.30, 0.12, 0.08, 0.05 → cumulative 0.45, 0.75, 0.87, 0.95, 1.0: three stay below 0.9
    energies = [0.45, 0.30, 0.12, 0.08, 0.05]
    m, u = _with_spectrum([e**0.5 for e in energies], 12, 9, seed=11)
    s = extend_basis(None, m, 0.9)
    assert s.shape == (12, 3)
    assert torch.allclose(s @ s.T, u[:, :3] @ u[:, :3].T, atol=1e-10)  # spans the top-3 directions
    # the strict rule keeps nothing when the first direction alone already reaches the threshold
    m1, _ = _with_spectrum([0.95**0.5, 0.05**0.5], 6, 5, seed=2)
    assert extend_basis(None, m1, 0.9).shape == (6, 0)


def test_inclusive_first_task_rule_keeps_the_direction_that_reaches_the_threshold():
    energies = [0.45, 0.30, 0.12, 0.08, 0.05]  # cumulative 0.45, 0.75, 0.87, 0.95: the 4th reaches 0.9
    m, u = _with_spectrum([e**0.5 for e in energies], 12, 9, seed=11)
    s = extend_basis(None, m, 0.9, first_task="inclusive")
    assert s.shape == (12, 4) and torch.allclose(s @ s.T, u[:, :4] @ u[:, :4].T, atol=1e-10)
    m1, u1 = _with_spectrum([0.95**0.5, 0.05**0.5], 6, 5, seed=2)
    assert extend_basis(None, m1, 0.9, first_task="inclusive").shape == (6, 1)  # strict keeps 0
    # never more than the directions that carry energy: rank-1 moment at threshold 1
    rank1 = u1[:, :1] @ torch.ones(1, 5, dtype=torch.float64)
    assert extend_basis(None, rank1, 1.0, first_task="inclusive").shape == (6, 1)
    with pytest.raises(ValueError, match="Invalid first-task rule: 'loose'"):
        extend_basis(None, m, 0.9, first_task="loose")


def test_energy_rule_extension_starts_from_the_energy_already_covered():
    # S = u1 covers 0.45; then 0.30 → 0.75, 0.12 → 0.87 (< 0.9, continue), 0.08 → 0.95: three appended
    energies = [0.45, 0.30, 0.12, 0.08, 0.05]
    m, u = _with_spectrum([e**0.5 for e in energies], 12, 9, seed=11)
    s = extend_basis(u[:, :1], m, 0.9)
    assert s.shape == (12, 4)
    assert torch.equal(s[:, :1], u[:, :1])  # old directions kept first, unchanged
    assert torch.allclose(s @ s.T, u[:, :4] @ u[:, :4].T, atol=1e-10)
    assert torch.allclose(s.T @ s, torch.eye(4, dtype=torch.float64), atol=1e-10)


def test_energy_rule_right_side_uses_column_space():
    m, u = _with_spectrum([3.0, 1.0, 0.1], 9, 12, seed=4)
    s = extend_basis(None, m.T, 0.9, side="right")  # the moment's columns are the rows of m
    assert s.shape == (9, 1) and torch.allclose(s @ s.T, u[:, :1] @ u[:, :1].T, atol=1e-10)


def test_bases_never_exceed_the_dimension_and_only_grow():
    s = None
    sizes = []
    for t in range(6):
        m = torch.randn(6, 20, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        s = extend_basis(s, m, 0.99)
        sizes.append(s.shape[1])
        assert torch.allclose(s.T @ s, torch.eye(s.shape[1], dtype=torch.float64), atol=1e-8)
    assert sizes == sorted(sizes) and sizes[-1] == 6 and max(sizes) <= 6
    assert torch.equal(extend_basis(s, torch.zeros(6, 20, dtype=torch.float64)), s)


def test_extend_basis_validates_input():
    with pytest.raises(ValueError, match=r"Invalid threshold: 1.5 - should be in \(0, 1\]"):
        extend_basis(None, torch.randn(4, 4), 1.5)
    with pytest.raises(ValueError, match="basis has 3 rows"):
        extend_basis(torch.zeros(3, 1), torch.randn(4, 4))


def _moment(kind: str, basis: torch.Tensor, cols: int, g: torch.Generator) -> torch.Tensor:
    """A float32 first moment inside S's span, 1e-4 off it, or random."""
    rows = basis.shape[0]
    noise = torch.randn(rows, cols, generator=g)
    if kind == "random" or basis.shape[1] == 0:
        return noise
    inside = basis @ torch.randn(basis.shape[1], cols, generator=g)
    return inside if kind == "in_span" else inside + 1e-4 * noise


@pytest.mark.parametrize("threshold", [0.9, 1.0])
@pytest.mark.parametrize("kind", ["in_span", "near_span", "random"])
def test_bases_stay_orthonormal_over_sixty_tasks(kind, threshold):
    # float32, as the optimizer's moments: each task's moment is drawn relative to the basis so far
    g = torch.Generator().manual_seed(3)
    basis = extend_basis(None, torch.randn(48, 6, generator=g), threshold)
    for _ in range(60):
        basis = extend_basis(basis, _moment(kind, basis, 6, g), threshold)
        gap = (basis.T @ basis - torch.eye(basis.shape[1])).abs().max()
        assert gap <= 1e-5, (kind, threshold, basis.shape, float(gap))
    if kind == "in_span":
        assert basis.shape[1] <= 6  # nothing outside the first span was ever added


def test_a_stored_empty_basis_grows_by_the_extension_rule():
    # one direction holds 95 % of the energy: the strict first-task rule keeps none of it; at a later task
    # a stored (p, 0) basis follows the extension rule, as the released trainer: the smallest count reaching ε
    m, u = _with_spectrum([0.95**0.5, 0.05**0.5], 6, 4)
    assert extend_basis(None, m, 0.9).shape[1] == 0
    later = extend_basis(torch.zeros(6, 0, dtype=torch.float64), m, 0.9)
    assert later.shape[1] == 1
    assert torch.allclose((later.T @ u[:, :1]).abs(), torch.ones(1, 1, dtype=torch.float64), atol=1e-10)


def test_randomized_refresh_keeps_the_previous_projectors_signs():
    g, _ = _with_spectrum([5.0, 3.0, 2.0, 1e-3], 20, 9, seed=4)
    previous, _ = compute_projection(g, 3, "left", "randomized", seed=0)
    for seed in range(1, 6):
        left, _ = compute_projection(g, 3, "left", "randomized", seed=seed, previous=(previous, None))
        assert (left * previous).sum(0).min() > 0.99  # same columns, same signs


@pytest.mark.parametrize("svd", ["exact", "randomized"])
def test_right_projector_is_column_major_and_stays_so_after_a_checkpoint(svd):
    from clift.checkpoint import join_state, split_state
    from clift.optim import ProjectedAdamW

    g = torch.randn(40, 24, generator=torch.Generator().manual_seed(0))
    _, right = compute_projection(g, 4, "std", svd=svd)
    assert right.shape == (24, 4) and right.T.is_contiguous() and not right.is_contiguous()
    p = torch.nn.Parameter(torch.randn(40, 24))
    opt = ProjectedAdamW([{"params": [p], "rank": 4, "update_proj_gap": 10, "svd": svd}], lr=1e-3)
    p.grad = g
    opt.step()
    # a checkpoint stores tensors contiguous (safetensors): the loaded V_k is row-major until re-laid out
    skeleton, tensors = split_state(opt.state_dict())
    assert tensors and all(t.is_contiguous() for t in tensors.values())
    fresh = ProjectedAdamW([{"params": [p], "rank": 4, "update_proj_gap": 10, "svd": svd}], lr=1e-3)
    fresh.load_state_dict(join_state(skeleton, tensors))
    loaded = fresh.state[p]["proj_right"]
    assert torch.equal(loaded, opt.state[p]["proj_right"]) and loaded.T.is_contiguous()
