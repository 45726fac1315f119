"""LeJEPA's losses (Balestriero & LeCun, 2025, arXiv:2511.08544): SIGReg, the sketched isotropic
Gaussian regulariser, and the multi-view predictive loss.

SIGReg projects embeddings on random unit directions and tests each 1-D projection against
N(0, 1) with the Epps-Pulley statistic
    N * integral |phi_N(t) - exp(-t^2/2)|^2 w(t) dt,   w(t) = exp(-t^2/2),
phi_N the empirical characteristic function, integrated on [-t_max, t_max] with the trapezoid
rule (on [0, t_max] doubled: the integrand is even)."""
from __future__ import annotations

import torch
from torch import Tensor

from core import distributed


def epps_pulley(x: Tensor, t_max: float = 3.0, knots: int = 17) -> Tensor:
    """x: (..., N, S) N samples of S one-dimensional variables. Returns (..., S) statistics.
    Across ranks N is the global batch: the characteristic function is averaged over every
    rank's samples, with gradient."""
    t = torch.linspace(0, t_max, knots, device=x.device, dtype=x.dtype)
    dt = t_max / (knots - 1)
    trapezoid = torch.full_like(t, 2 * dt)
    trapezoid[[0, -1]] = dt
    gauss = torch.exp(-t.square() / 2)  # the N(0,1) characteristic function, also the window
    xt = x[..., None] * t  # (..., N, S, knots)
    n = x.shape[-2] * distributed.world_size()
    cos_mean = distributed.sum_across(xt.cos().sum(-3)) / n
    sin_mean = distributed.sum_across(xt.sin().sum(-3)) / n
    err = (cos_mean - gauss).square() + sin_mean.square()
    return (err @ (trapezoid * gauss)) * n


def random_directions(dim: int, num_slices: int, gen: torch.Generator, device) -> Tensor:
    """(dim, num_slices) independent uniform unit vectors."""
    a = torch.randn(dim, num_slices, generator=gen, device=device)
    return a / a.norm(dim=0, keepdim=True)


def sigreg(z: Tensor, directions: Tensor, t_max: float = 3.0, knots: int = 17) -> Tensor:
    """z: (..., N, D) embeddings (leading dims, e.g. views, are tested separately);
    directions: (D, S). Mean Epps-Pulley statistic over slices (and leading dims)."""
    return epps_pulley(z @ directions.to(z.dtype), t_max, knots).mean()


def view_prediction(z: Tensor, num_global: int) -> Tensor:
    """z: (V, N, D) embeddings of V views, the first num_global global. Every view predicts the
    mean of the global views' embeddings: mean squared error, no stop-gradient."""
    centre = z[:num_global].mean(0)
    return (centre - z).square().mean()


def lejepa_loss(z: Tensor, num_global: int, directions: Tensor, lam: float = 0.05) -> tuple[Tensor, Tensor, Tensor]:
    """(1 - lam) * prediction + lam * SIGReg; returns (loss, prediction, sigreg)."""
    pred, reg = view_prediction(z, num_global), sigreg(z, directions)
    return (1 - lam) * pred + lam * reg, pred, reg
