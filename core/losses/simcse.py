"""Unsupervised SimCSE (Gao et al., 2021, arXiv:2104.08821 eq. 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def simcse_loss(z1: Tensor, z2: Tensor, temperature: float = 0.05) -> Tensor:
    """z1, z2: (batch, dim), two dropout-noised encodings of the same sentences. For each i,
    -log exp(cos(z1_i, z2_i)/t) / sum_j exp(cos(z1_i, z2_j)/t): the other sentences' second
    encodings are the in-batch negatives. Returns the mean over the batch."""
    sim = F.normalize(z1.float(), dim=1) @ F.normalize(z2.float(), dim=1).T
    return F.cross_entropy(sim / temperature, torch.arange(len(z1), device=z1.device))
