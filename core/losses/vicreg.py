"""VICReg: variance-invariance-covariance regularisation (Bardes et al., 2021, arXiv:2105.04906, sec. 3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core import distributed
from core.losses.precision import fp32


def invariance(z1: Tensor, z2: Tensor) -> Tensor:
    """Mean squared distance between paired embeddings (eq. 5), z1, z2: (N, D)."""
    return F.mse_loss(z1.float(), z2.float())


@fp32
def variance(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """Hinge on the per-dimension std: mean_j max(0, gamma - sqrt(Var(z_j) + eps)) (eq. 1), in fp32."""
    std = torch.sqrt(z.var(0) + eps)
    return F.relu(gamma - std).mean()


@fp32
def covariance(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances divided by D (eq. 3-4), in fp32 (the D x D matmul
    would otherwise run in bf16 under autocast)."""
    z = z - z.mean(0)
    n, d = z.shape
    cov = z.T @ z / (n - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def vicreg_loss(z1: Tensor, z2: Tensor, inv_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, sum_branch_variance: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum (eq. 6) for expander outputs z1, z2: (N, D). Returns (loss, the three terms);
    the two branches' covariance terms are added and their variance terms averaged, as in the
    official code, or added with `sum_branch_variance` (solo-learn's variance_loss).
    Across ranks, invariance is this rank's mean and the variance and covariance terms those of
    the gathered global batch (the official FullGatherLayer)."""
    g1, g2 = distributed.gather(z1), distributed.gather(z2)
    terms = {
        "invariance": invariance(z1, z2),
        "variance": (variance(g1) + variance(g2)) / (1 if sum_branch_variance else 2),
        "covariance": covariance(g1) + covariance(g2),
    }
    loss = inv_weight * terms["invariance"] + var_weight * terms["variance"] + cov_weight * terms["covariance"]
    return loss, {k: v.detach() for k, v in terms.items()}
