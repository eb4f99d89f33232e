"""ProjectedAdamW against an independent float64 GaLore-AdamW, shared-space projection, state round trip."""

from __future__ import annotations

import io
import math

import pytest
import torch

from clift.optim import ProjectedAdamW

BETAS = (0.9, 0.999)
EPS = 1e-6


def _grads(shape: tuple[int, int], n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(n)]


def reference_galore_adamw(
    w0: torch.Tensor,
    grads: list[torch.Tensor],
    rank: int,
    gap: int,
    scale: float,
    lr: float,
    side: str,
    basis: torch.Tensor | None = None,
) -> torch.Tensor:
    """GaLore-AdamW written out from the spec (gorp.md §1.2), step by step, in float64."""
    w = w0.clone()
    m = v = None
    u_k = v_k = None
    for t, g in enumerate(grads, start=1):
        if (t - 1) % gap == 0:  # refresh at steps 0, T, 2T, ... (0-based)
            u, _, vh = torch.linalg.svd(g, full_matrices=False)
            u_k, v_k = u[:, :rank], vh[:rank].T
        if side == "right":
            r = g @ v_k
        elif side == "left":
            r = u_k.T @ g
        else:
            r = u_k.T @ g @ v_k
        if basis is not None:
            r = r - basis @ (basis.T @ r)
        m = (1 - BETAS[0]) * r if m is None else BETAS[0] * m + (1 - BETAS[0]) * r
        v = (1 - BETAS[1]) * r * r if v is None else BETAS[1] * v + (1 - BETAS[1]) * r * r
        n = m / (v.sqrt() + EPS)
        if side == "right":
            delta = n @ v_k.T
        elif side == "left":
            delta = u_k @ n
        else:
            delta = u_k @ n @ v_k.T
        w = w - lr * math.sqrt(1 - BETAS[1] ** t) / (1 - BETAS[0] ** t) * scale * delta
    return w


def _run(w0, grads, group_extra, shared=None):
    w = torch.nn.Parameter(w0.clone())
    opt = ProjectedAdamW([{"params": [w], **group_extra}], lr=1e-2, betas=BETAS, eps=EPS)
    if shared is not None:
        opt.set_shared_basis(w, shared)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    return w.detach(), opt


@pytest.mark.parametrize(
    ("shape", "proj_type", "side"),
    [((12, 7), "std", "right"), ((5, 11), "std", "left"), ((9, 6), "full", "full"), ((12, 7), "left", "left")],
)
def test_projected_steps_equal_reference_galore_adamw_with_empty_shared_space(shape, proj_type, side):
    w0 = torch.randn(*shape, dtype=torch.float64)
    grads = _grads(shape, 5)
    extra = {"rank": 3, "update_proj_gap": 2, "scale": 0.5, "proj_type": proj_type}
    one, _ = _run(w0, grads[:1], extra)
    assert torch.allclose(one, reference_galore_adamw(w0, grads[:1], 3, 2, 0.5, 1e-2, side), atol=1e-6, rtol=0)
    # and through two refreshes (steps 0, 2, 4)
    five, _ = _run(w0, grads, extra)
    assert torch.allclose(five, reference_galore_adamw(w0, grads, 3, 2, 0.5, 1e-2, side), atol=1e-6, rtol=0)


def test_projected_steps_with_a_shared_basis_equal_the_reference():
    w0 = torch.randn(12, 7, dtype=torch.float64)
    grads = _grads((12, 7), 4, seed=1)
    s, _ = torch.linalg.qr(torch.randn(12, 2, dtype=torch.float64))
    got, _ = _run(w0, grads, {"rank": 3, "update_proj_gap": 3}, shared=s)
    want = reference_galore_adamw(w0, grads, 3, 3, 1.0, 1e-2, "right", basis=s)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_plain_group_is_hf_style_adamw():
    w0 = torch.randn(4, 3, dtype=torch.float64)
    grads = _grads((4, 3), 3, seed=2)
    got, _ = _run(w0, grads, {})
    w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    for t, g in enumerate(grads, start=1):
        m = BETAS[0] * m + (1 - BETAS[0]) * g
        v = BETAS[1] * v + (1 - BETAS[1]) * g * g
        w = w - 1e-2 * math.sqrt(1 - BETAS[1] ** t) / (1 - BETAS[0] ** t) * m / (v.sqrt() + EPS)
    assert torch.allclose(got, w, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("extra", "shape", "rows", "side"),
    [
        ({"rank": 4}, (20, 9), 20, "left"),  # GaLore right projection: S in the m-dim output space
        ({"rank": 4}, (9, 20), 20, "right"),  # left projection: auto puts S on the stable input axis
        ({"shared_side": "left"}, (8, 30), 8, "left"),  # LoRA A, rank axis (the paper)
        ({"shared_side": "right"}, (8, 30), 30, "right"),  # LoRA A, input axis
    ],
)
def test_projected_gradients_are_orthogonal_to_the_shared_space(extra, shape, rows, side):
    w = torch.nn.Parameter(torch.randn(*shape, dtype=torch.float64))
    opt = ProjectedAdamW([{"params": [w], **extra}], betas=BETAS, eps=EPS)
    assert opt.basis_rows(w) == rows
    s, _ = torch.linalg.qr(torch.randn(rows, 3, dtype=torch.float64))
    opt.set_shared_basis(w, s)
    w.grad = torch.randn(*shape, dtype=torch.float64)
    opt.step()
    # the first moment after one step is (1 − β1) × the projected gradient fed to Adam
    g = opt.first_moment(w) / (1 - BETAS[0])
    overlap = s.T @ g if side == "left" else g @ s
    assert overlap.norm() <= 1e-6 * g.norm()
    assert g.norm() > 0


def test_a_full_basis_freezes_the_matrix():
    w = torch.nn.Parameter(torch.randn(4, 10, dtype=torch.float64))
    before = w.detach().clone()
    opt = ProjectedAdamW([{"params": [w], "shared_side": "left"}])
    opt.set_shared_basis(w, torch.eye(4, dtype=torch.float64))
    w.grad = torch.randn(4, 10, dtype=torch.float64)
    opt.step()
    assert torch.equal(w.detach(), before)


def _only_tensors_and_numbers(obj) -> bool:
    if isinstance(obj, dict):
        return all(_only_tensors_and_numbers(v) for v in obj.values())
    return isinstance(obj, (torch.Tensor, int, float))


def test_state_dict_round_trip_continues_with_the_same_update():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(10, 6))
    a = torch.nn.Parameter(torch.randn(4, 6))
    b = torch.nn.Parameter(torch.randn(6, 4))
    s_w, _ = torch.linalg.qr(torch.randn(10, 2))
    s_a, _ = torch.linalg.qr(torch.randn(4, 1))

    def build(params):
        pw, pa, pb = params
        return ProjectedAdamW(
            [
                {"params": [pb]},
                {"params": [pa], "shared_side": "left"},
                {"params": [pw], "rank": 3, "update_proj_gap": 3, "scale": 0.25, "lr": 1e-3},
            ],
            lr=1e-2,
            shared_bases={pw: s_w, pa: s_a},
        )

    opt = build((w, a, b))
    grads = [(torch.randn(10, 6), torch.randn(4, 6), torch.randn(6, 4)) for _ in range(5)]
    for gw, ga, gb in grads[:4]:
        w.grad, a.grad, b.grad = gw, ga, gb
        opt.step()
    state = opt.state_dict()
    assert all(_only_tensors_and_numbers(s) for s in state["state"].values())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # no pickled classes: plain tensors and numbers

    copies = [torch.nn.Parameter(p.detach().clone()) for p in (w, a, b)]
    again = build(copies)
    again.load_state_dict(loaded)
    assert torch.equal(again.state[copies[0]]["proj_right"], opt.state[w]["proj_right"])
    # step 5 is not a refresh step (4 % 3 != 0): the restored projection matrix must be used
    for params, o in (((w, a, b), opt), (copies, again)):
        gw, ga, gb = grads[4]
        params[0].grad, params[1].grad, params[2].grad = gw.clone(), ga.clone(), gb.clone()
        o.step()
    for p, q in zip((w, a, b), copies, strict=True):
        assert torch.equal(p.detach(), q.detach())


@pytest.mark.parametrize(
    ("kwargs", "group", "message"),
    [
        ({}, {"rank": 0}, "Invalid rank: 0 - should be an int >= 1"),
        ({}, {"rank": 2, "update_proj_gap": 0}, "Invalid update_proj_gap: 0 - should be an int >= 1"),
        ({}, {"rank": 2, "scale": 0.0}, r"Invalid scale: 0.0 - should be > 0.0"),
        ({}, {"rank": 2, "proj_type": "diag"}, "Invalid proj_type: 'diag' - should be one of std, left, right, full"),
        ({}, {"rank": 2, "svd": "fast"}, "Invalid svd: 'fast'"),
        ({}, {"shared_side": "up"}, "Invalid shared_side: 'up'"),
        ({"lr": -1.0}, {}, r"Invalid learning rate: -1.0 - should be a float >= 0.0"),
        ({"betas": (1.0, 0.999)}, {}, r"Invalid beta parameter at index 0: 1.0"),
        ({"eps": -1e-8}, {}, "Invalid epsilon value"),
        ({}, {"lr": -2.0}, r"Invalid learning rate: -2.0"),
    ],
)
def test_hyper_parameters_are_validated_torch_style(kwargs, group, message):
    w = torch.nn.Parameter(torch.randn(4, 4))
    with pytest.raises(ValueError, match=message):
        ProjectedAdamW([{"params": [w], **group}], **kwargs)


def test_rank_groups_need_matrices_and_bases_need_the_right_shape():
    with pytest.raises(ValueError, match=r"shape \(4,\) - GaLore projects 2-D weight matrices only"):
        ProjectedAdamW([{"params": [torch.nn.Parameter(torch.zeros(4))], "rank": 2}])
    w = torch.nn.Parameter(torch.randn(8, 3))
    opt = ProjectedAdamW([{"params": [w], "rank": 2}])
    with pytest.raises(ValueError, match=r"Invalid shared basis shape: \(3, 1\) - should be \(8, c\)"):
        opt.set_shared_basis(w, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="not managed by this optimizer"):
        opt.set_shared_basis(torch.nn.Parameter(torch.zeros(8, 3)), torch.zeros(8, 1))


def _well_conditioned_run(svd: str) -> torch.Tensor:
    # a gradient with a clear gap after k = 4 plus small noise; 20 steps, refresh every 3 (7 refreshes)
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(64, 32, generator=g))
    v, _ = torch.linalg.qr(torch.randn(32, 32, generator=g))
    sigma = torch.tensor([10.0, 8.0, 6.0, 5.0] + [0.01] * 28)
    base = (u * sigma) @ v.T
    w = torch.nn.Parameter(torch.zeros(64, 32))
    opt = ProjectedAdamW([{"params": [w], "rank": 4, "update_proj_gap": 3, "svd": svd}], lr=1e-2)
    for _ in range(20):
        w.grad = base + 1e-3 * torch.randn(64, 32, generator=g)
        opt.step()
    return w.detach()


def test_randomized_refresh_follows_the_exact_trajectory():
    # an unaligned randomized refresh flips the sign of part of the (unrotated) first moment: 0.1 off here
    exact, randomized = _well_conditioned_run("exact"), _well_conditioned_run("randomized")
    assert (exact - randomized).abs().max() <= 1e-5 * exact.abs().max() + 1e-6


@pytest.mark.parametrize(
    ("extra", "shape", "rows"),
    [({"rank": 4}, (20, 9), 20), ({"shared_side": "left"}, (8, 30), 8), ({"rank": 4}, (9, 20), 20)],
)
def test_protect_update_keeps_the_applied_update_off_the_shared_space(extra, shape, rows):
    def overlap(protect: str) -> float:
        g = torch.Generator().manual_seed(5)
        w = torch.nn.Parameter(torch.randn(*shape, generator=g))
        start = w.detach().clone()
        opt = ProjectedAdamW([{"params": [w], "protect": protect, **extra}], lr=1e-2)
        s, _ = torch.linalg.qr(torch.randn(rows, 3, generator=g))
        opt.set_shared_basis(w, s)
        for _ in range(6):
            w.grad = torch.randn(*shape, generator=g)
            opt.step()
        delta = w.detach() - start
        on_s = s.T @ delta if opt.resolved_shared_side(w, opt.group_of(w)) == "left" else delta @ s
        return float(on_s.norm() / delta.norm())

    assert overlap("update") <= 1e-4
    assert overlap("moments") > 1e-2  # the released behaviour: Adam's 1/√V puts S's directions back


def test_protect_is_validated():
    w = torch.nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="Invalid protect: 'weights'"):
        ProjectedAdamW([{"params": [w], "protect": "weights"}])


@pytest.mark.parametrize("extra", [{"shared_side": "left"}, {"rank": 8, "proj_type": "left"}])
def test_a_full_float32_basis_freezes_the_matrix_exactly(extra):
    # in float32 the residual G − S Sᵀ G is ~1e-8, which Adam's 1/(√V + eps) would blow up to a full step
    g = torch.Generator().manual_seed(6)
    w = torch.nn.Parameter(torch.randn(8, 30, generator=g))
    before = w.detach().clone()
    opt = ProjectedAdamW([{"params": [w], "shared_side": "left", **extra}], eps=1e-8, weight_decay=0.1)
    rows = opt.basis_rows(w)
    s, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g))
    opt.set_shared_basis(w, s)
    for _ in range(3):
        w.grad = torch.randn(8, 30, generator=g)
        opt.step()
    assert torch.equal(w.detach(), before)


def test_weight_decay_is_applied_after_the_update():
    # HF / GaLore AdamW order (GORP's release): p ← p − η bc N, then p ← p − η λ p
    lr, wd = 1e-2, 0.5
    w0 = torch.randn(4, 3, dtype=torch.float64)
    g = _grads((4, 3), 1, seed=7)[0]
    w = torch.nn.Parameter(w0.clone())
    opt = ProjectedAdamW([{"params": [w]}], lr=lr, betas=BETAS, eps=EPS, weight_decay=wd)
    w.grad = g.clone()
    opt.step()
    n = ((1 - BETAS[0]) * g) / (((1 - BETAS[1]) * g * g).sqrt() + EPS)
    after = w0 - lr * math.sqrt(1 - BETAS[1]) / (1 - BETAS[0]) * n
    after = after - lr * wd * after
    before = w0 * (1 - lr * wd) - lr * math.sqrt(1 - BETAS[1]) / (1 - BETAS[0]) * n
    assert torch.allclose(w.detach(), after, atol=1e-14, rtol=0)
    assert not torch.allclose(w.detach(), before, atol=1e-7, rtol=0)
