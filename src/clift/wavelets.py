"""A one-level orthonormal 2-D Haar wavelet transform of matrices, in plain torch (differentiable).

Used by ``deal_code``, which treats a LoRA factor ``A`` (shape ``(r, d)``) as a one-channel image, as
the released DEAL code does with ``pytorch_wavelets.DWTForward(J=1, wave="haar", mode="zero")``. The
transform acts on 2×2 blocks ``[[a, b], [c, d]]`` of the last two dimensions::

    LL = (a + b + c + d) / 2     LH = (a + b - c - d) / 2
    HL = (a - b + c - d) / 2     HH = (a - b - c + d) / 2

It is orthonormal (its own inverse up to the block layout), so ``haar_idwt2(*haar_dwt2(x)) == x`` up to
float round-off. Sizes that are odd are padded with one zero row/column ("zero" mode, as the reference
library's output size ``ceil(n / 2)``); :func:`haar_idwt2` crops back to the original shape, so the
round trip is exact for every shape. Band naming: ``LH`` is low-pass along columns and high-pass along
rows (the first matrix dimension); only ``LL`` matters for DEAL, and its definition is unambiguous.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Bands = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def haar_dwt2(x: torch.Tensor) -> tuple[torch.Tensor, Bands]:
    """One-level 2-D Haar DWT of the last two dimensions.

    Args:
        x: tensor of shape ``(..., m, n)``.

    Returns:
        ``(ll, (lh, hl, hh))``, each of shape ``(..., ceil(m / 2), ceil(n / 2))``.
    """
    m, n = x.shape[-2], x.shape[-1]
    # zero mode: one zero row / column for odd sizes
    x = F.pad(x, (0, n % 2, 0, m % 2))
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    ll = (a + b + c + d) * 0.5
    lh = (a + b - c - d) * 0.5
    hl = (a - b + c - d) * 0.5
    hh = (a - b - c + d) * 0.5
    return ll, (lh, hl, hh)


def haar_idwt2(ll: torch.Tensor, bands: Bands, shape: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Inverse of :func:`haar_dwt2`.

    Args:
        ll: low-pass band, shape ``(..., p, q)``.
        bands: ``(lh, hl, hh)``, each of shape ``(..., p, q)``.
        shape: ``(m, n)``, the last two dimensions of the original input (``ceil(m/2) == p``).

    Returns:
        Tensor of shape ``(..., m, n)``.

    Raises:
        ValueError: when ``shape`` does not match the band size.
    """
    lh, hl, hh = bands
    m, n = int(shape[-2]), int(shape[-1])
    p, q = ll.shape[-2], ll.shape[-1]
    if (m + 1) // 2 != p or (n + 1) // 2 != q:
        raise ValueError(
            f"haar_idwt2: bands of size {p}x{q} cannot come from a {m}x{n} input; pass the shape of the "
            "tensor given to haar_dwt2."
        )
    a = (ll + lh + hl + hh) * 0.5
    b = (ll + lh - hl - hh) * 0.5
    c = (ll - lh + hl - hh) * 0.5
    d = (ll - lh - hl + hh) * 0.5
    # interleave the four (…, p, q) blocks into (…, 2p, 2q): rows (a b / c d) per block
    top = torch.stack((a, b), dim=-1).flatten(-2)  # (..., p, 2q)
    bottom = torch.stack((c, d), dim=-1).flatten(-2)
    out = torch.stack((top, bottom), dim=-2).flatten(-3, -2)  # (..., 2p, 2q)
    return out[..., :m, :n]
