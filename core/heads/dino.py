"""The DINO projection head (Caron et al., 2021, arXiv:2104.14294, sec. 3.1 and appendix)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NormedLinear(nn.Module):
    """A bias-free linear layer whose rows are L2-normalised at every forward: weight
    normalisation with the magnitude g fixed to 1 (DINO's `norm_last_layer=True`)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: Tensor, frozen: bool = False) -> Tensor:
        weight = self.weight.detach() if frozen else self.weight
        return F.linear(x, F.normalize(weight, dim=1))


class DINOHead(nn.Module):
    """3-layer MLP (GELU; batch norm only if asked, as DINO's `use_bn_in_head`) -> bottleneck -> L2-normalise -> weight-normed
    linear to `out_dim` logits. `forward(x, freeze_last=True)` lets no gradient reach the
    last layer (the paper keeps it fixed during the first epoch)."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, out_dim: int = 65536,
                 layers: int = 3, batch_norm: bool = False):
        super().__init__()
        blocks: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            norm = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
            blocks += [nn.Linear(dim, hidden_dim, bias=not batch_norm), *norm, nn.GELU()]
            dim = hidden_dim
        blocks.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*blocks)
        self.last_layer = NormedLinear(bottleneck_dim, out_dim)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                # Xavier normal is ~0.02 at the paper's widths (its trunc_normal(0.02)) and keeps
                # the signal above the biases' first updates in narrow heads
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, freeze_last: bool = False) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1), frozen=freeze_last)
