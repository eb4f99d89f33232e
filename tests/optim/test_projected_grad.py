"""Projected weight gradients inside autograd give the same GaLore trajectory without the full dYᵀX product."""

from __future__ import annotations

import pytest
import torch

from clift.optim import ProjectedAdamW
from clift.optim.projected_grad import ProjectedWeightGrad


def _train(shape: tuple[int, int], proj_type: str, projected: bool, steps: int = 7) -> tuple[torch.Tensor, list]:
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(shape[1], shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(shape, generator=g, dtype=torch.float64))
        layer.bias.copy_(torch.randn(shape[0], generator=g, dtype=torch.float64))
    group = {"params": [layer.weight], "rank": 3, "update_proj_gap": 3, "proj_type": proj_type}
    opt = ProjectedAdamW([group], lr=1e-2)
    hook = ProjectedWeightGrad([layer], opt) if projected else None
    grads = []
    for _ in range(steps):
        x = torch.randn(5, 4, shape[1], generator=g, dtype=torch.float64)
        target = torch.randn(5, 4, shape[0], generator=g, dtype=torch.float64)
        loss = (layer(x) - target).pow(2).mean()
        loss.backward()
        grads.append(layer.weight.grad.clone())
        opt.step()
        opt.zero_grad(set_to_none=True)
    if hook is not None:
        hook.remove()
        assert "forward" not in layer.__dict__
    return layer.weight.detach(), grads


@pytest.mark.parametrize(("shape", "proj_type"), [((12, 7), "std"), ((5, 11), "std"), ((9, 6), "full")])
def test_projected_weight_gradient_gives_the_same_trajectory(shape, proj_type):
    full, full_grads = _train(shape, proj_type, projected=False)
    proj, proj_grads = _train(shape, proj_type, projected=True)
    assert torch.allclose(full, proj, atol=1e-10, rtol=0)
    # refresh steps (0, 3, 6) see the full gradient; the others a rank-3 one of smaller norm
    for i, (a, b) in enumerate(zip(full_grads, proj_grads, strict=True)):
        if i % 3 == 0:
            assert torch.allclose(a, b, atol=1e-12)
        else:
            assert torch.linalg.matrix_rank(b) <= 3 and b.norm() < a.norm()
