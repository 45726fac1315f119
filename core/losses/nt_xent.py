"""NT-Xent, the normalised temperature-scaled cross entropy of SimCLR (Chen et al., 2020, eq. 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR loss. z1, z2: (batch, dim) projections of two views of the same images.
    Each of the 2N views has one positive (its pair) and 2N-2 negatives. Returns the mean loss."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)
