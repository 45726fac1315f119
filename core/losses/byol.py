"""BYOL's normalised mean squared error (Grill et al., 2020, arXiv:2006.07733, eq. 2)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def normalized_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """prediction: (batch, dim) online predictions; target: (batch, dim) target projections
    (no gradient flows into them). Returns mean ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z), in [0, 4]."""
    cos = F.cosine_similarity(prediction, target.detach(), dim=1)
    return (2 - 2 * cos).mean()
