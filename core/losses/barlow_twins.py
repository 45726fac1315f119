"""Barlow Twins redundancy-reduction loss (Zbontar et al., 2021, arXiv:2103.03230, eq. 1)."""
from __future__ import annotations

import torch
from torch import Tensor

from core import distributed
from core.losses.precision import fp32


def standardize(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Batch normalisation without affine parameters: zero mean, unit (biased) variance per dim."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


@fp32
def cross_correlation(z1: Tensor, z2: Tensor) -> Tensor:
    """(D, D) float32 cross-correlation of the batch-standardised projections z1, z2: (N, D).
    An fp32 island: in bf16 the off-diagonal terms (~1/sqrt(N)) drown in rounding error."""
    return standardize(z1).T @ standardize(z2) / len(z1)


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 5e-3) -> Tensor:
    """sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2, for projections z1, z2: (N, D).
    Across ranks C is that of the gathered global batch, with gradient."""
    c = cross_correlation(distributed.gather(z1), distributed.gather(z2))
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag
