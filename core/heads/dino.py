"""The DINO projection head (Caron et al., 2021, arXiv:2104.14294, sec. 3.1 and appendix)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NormedLinear(nn.Module):
    """A bias-free linear layer whose rows are L2-normalised at every forward: weight
    normalisation with the magnitude g fixed to 1 (DINO's `norm_last_layer=True`). The weight
    starts as nn.Linear's default: the official DINOHead creates its last layer after applying
    its trunc-normal init, so the layer keeps PyTorch's kaiming-uniform one."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear.reset_parameters

    def forward(self, x: Tensor) -> Tensor:
        """Logits in float32 outside autocast: the loss divides them by temperatures down to
        0.04, which would magnify bf16 rounding 25-fold."""
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.float(), F.normalize(self.weight.float(), dim=1))


class DINOHead(nn.Module):
    """3-layer MLP (GELU; batch norm only if asked, as DINO's `use_bn_in_head`, off for its ViTs)
    -> bottleneck -> L2-normalise -> weight-normed linear `last_layer` to `out_dim` logits.

    The official code keeps `last_layer` fixed during the first epoch by dropping its gradient
    (`cancel_gradients_last_layer`); here the training loop does that for every parameter whose
    name contains "last_layer", so the name is part of the interface."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, out_dim: int = 65536,
                 layers: int = 3, batch_norm: bool = False):
        super().__init__()
        blocks: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            norm = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
            blocks += [nn.Linear(dim, hidden_dim), *norm, nn.GELU()]
            dim = hidden_dim
        blocks.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*blocks)
        self.last_layer = NormedLinear(bottleneck_dim, out_dim)
        for m in self.mlp:
            if isinstance(m, nn.Linear):  # the official DINOHead._init_weights
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x).float(), dim=-1))
