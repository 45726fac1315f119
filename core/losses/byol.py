"""BYOL's normalised mean squared error (Grill et al., 2020, arXiv:2006.07733, eq. 2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def normalized_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """prediction: (batch, dim) online predictions; target: (batch, dim) target projections
    (no gradient flows into them). Returns mean ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z), in [0, 4]."""
    dtype = torch.promote_types(prediction.dtype, torch.float32)  # at least fp32 under autocast
    cos = F.cosine_similarity(prediction.to(dtype), target.detach().to(dtype), dim=1)
    return (2 - 2 * cos).mean()
