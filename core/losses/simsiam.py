"""SimSiam's stop-gradient negative cosine similarity (Chen & He, 2020, arXiv:2011.10566, eq. 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """D(p, stopgrad(z)). prediction, target: (batch, dim). Returns the mean of -cos(p_i, z_i),
    in [-1, 1]; the target branch gets no gradient (the paper's stop-gradient)."""
    dtype = torch.promote_types(prediction.dtype, torch.float32)  # at least fp32 under autocast
    return -F.cosine_similarity(prediction.to(dtype), target.detach().to(dtype), dim=1).mean()
