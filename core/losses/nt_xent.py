"""NT-Xent, the normalised temperature-scaled cross entropy of SimCLR (Chen et al., 2020, eq. 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core import distributed


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR loss. z1, z2: (batch, dim) projections of two views of the same images.
    Each of the 2N views has one positive (its pair) and 2N-2 negatives. Returns the mean loss.

    Across ranks N is the global batch: this rank's 2n anchors meet the gathered 2N keys, and
    the loss is the mean over its own anchors (see core.distributed)."""
    anchors = F.normalize(torch.cat([z1, z2]), dim=1)
    keys = F.normalize(torch.cat([distributed.gather(z1), distributed.gather(z2)]), dim=1)
    n, total = len(z1), len(keys) // 2
    own = torch.arange(n, device=z1.device) + distributed.offset(n)  # this rank's rows in each half
    self_index = torch.cat([own, own + total])
    logits = anchors @ keys.T / temperature
    logits[torch.arange(2 * n, device=z1.device), self_index] = float("-inf")
    targets = torch.cat([own + total, own])
    return F.cross_entropy(logits, targets)
