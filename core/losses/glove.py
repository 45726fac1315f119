"""GloVe's weighted least-squares loss (Pennington et al., 2014, eq. 8)."""
from __future__ import annotations

import torch
from torch import Tensor


def glove_weight(x: Tensor, x_max: float = 100.0, alpha: float = 0.75) -> Tensor:
    """f(x) = (x / x_max)^alpha below x_max, 1 above (eq. 9)."""
    return torch.where(x < x_max, (x / x_max) ** alpha, torch.ones_like(x))


def glove_loss(w: Tensor, w_context: Tensor, b: Tensor, b_context: Tensor, x: Tensor, x_max: float = 100.0,
               alpha: float = 0.75) -> Tensor:
    """sum_k 1/2 f(X_k) (w_k . w~_k + b_k + b~_k - log X_k)^2 over a batch of co-occurrence entries
    (glove.c's cost, whose gradient is f * diff). w, w_context: (B, dim) the word and context
    vectors of each entry; b, b_context: (B,) their biases; x: (B,) the co-occurrence counts (> 0)."""
    diff = (w * w_context).sum(1) + b + b_context - torch.log(x)
    return 0.5 * (glove_weight(x, x_max, alpha) * diff * diff).sum()
