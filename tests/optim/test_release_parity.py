"""Parity with GORP's released optimizer and basis rule, written out from the spec (gorp.md §1.2-1.3) with
hand-built float32 tensors; no code of the release is used. What it encodes:

* with exact SVD and eps 1e-6, an empty shared space gives the release's weights to float32 rounding;
* with a shared space the release forms ``I − S Sᵀ`` densely, clift applies ``S (Sᵀ R)``: equal to rounding;
* weight decay is applied after the update (HF / GaLore AdamW), not before (torch AdamW);
* a basis stored with 0 columns at a later task grows by the extension rule (the release kept 1 column),
  only the first task uses the strict rule;
* ``method=gorp`` alone uses the release's eps, 1e-6, whatever ``train.adam_eps`` says.
"""

from __future__ import annotations

import math

import torch

from clift.config import RunConfig, upgrade_config
from clift.optim import ProjectedAdamW, extend_basis

BETAS, EPS, LR, WD, RANK, GAP = (0.9, 0.999), 1e-6, 1e-2, 0.01, 3, 4


def _release_form(w0: torch.Tensor, grads: list[torch.Tensor], basis: torch.Tensor | None) -> torch.Tensor:
    """The released step, float32: V_k as a (k, n) row block, dense I − S Sᵀ, decay after the update."""
    w = w0.clone()
    m = v = ortho = None
    dense = None if basis is None else torch.eye(basis.shape[0]) - basis @ basis.T  # (m, m)
    for t, g in enumerate(grads, start=1):
        if (t - 1) % GAP == 0:
            _, _, vh = torch.linalg.svd(g, full_matrices=False)
            ortho = vh[:RANK]  # (k, n)
        r = g @ ortho.T  # (m, k)
        if dense is not None:
            r = dense @ r
        m = torch.zeros_like(r) if m is None else m
        v = torch.zeros_like(r) if v is None else v
        m.mul_(BETAS[0]).add_(r, alpha=1 - BETAS[0])
        v.mul_(BETAS[1]).addcmul_(r, r, value=1 - BETAS[1])
        n = (m / (v.sqrt() + EPS)) @ ortho  # (m, n)
        w.add_(n, alpha=-LR * math.sqrt(1 - BETAS[1] ** t) / (1 - BETAS[0] ** t))
        w.add_(w, alpha=-LR * WD)
    return w


def _clift(w0: torch.Tensor, grads: list[torch.Tensor], basis: torch.Tensor | None) -> torch.Tensor:
    w = torch.nn.Parameter(w0.clone())
    group = {"params": [w], "rank": RANK, "update_proj_gap": GAP, "svd": "exact"}
    opt = ProjectedAdamW([group], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    if basis is not None:
        opt.set_shared_basis(w, basis)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    return w.detach()


def _tensors(seed: int) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(24, 10, generator=g)
    grads = [torch.randn(24, 10, generator=g) for _ in range(12)]  # three refreshes
    basis, _ = torch.linalg.qr(torch.randn(24, 5, generator=g))
    return w0, grads, basis


def test_empty_shared_space_matches_the_release_step_to_float32_rounding():
    w0, grads, _ = _tensors(0)
    got, want = _clift(w0, grads, None), _release_form(w0, grads, None)
    assert (got - want).abs().max() <= 3e-7 * want.abs().max()  # decay before the update: 1.6e-6


def test_shared_space_matches_the_releases_dense_projection_to_float32_rounding():
    w0, grads, basis = _tensors(1)
    got, want = _clift(w0, grads, basis), _release_form(w0, grads, basis)
    assert (got - want).abs().max() <= 3e-7 * want.abs().max()  # decay before the update: 1.6e-6
    assert (got - _clift(w0, grads, None)).abs().max() > 1e-4  # the basis did change the trajectory


def test_a_later_task_with_an_empty_stored_basis_keeps_the_direction_that_reaches_the_threshold():
    u, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(2)))
    moment = u[:, :2] @ torch.diag(torch.tensor([0.97, 0.2])) @ torch.eye(2, 5)  # 96 % in one direction
    assert extend_basis(None, moment, 0.9).shape[1] == 0  # first task: strict, as the release
    assert extend_basis(torch.zeros(8, 0), moment, 0.9).shape[1] == 1  # later task: extension rule


def test_gorp_alone_runs_the_releases_eps_and_old_stored_runs_keep_theirs():
    cfg = RunConfig.from_dict({"method": "gorp", "train": {"adam_eps": 1e-8}})
    assert cfg.method.adam_eps == 1e-6 and cfg.method.galore_svd in ("exact", "randomized")
    stored = cfg.to_dict()
    del stored["method"]["adam_eps"]  # a run stored before the field existed ran at train.adam_eps
    assert upgrade_config(stored)["method"]["adam_eps"] is None
    assert upgrade_config(cfg.to_dict())["method"]["adam_eps"] == 1e-6
