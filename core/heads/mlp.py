"""MLP heads: Linear-BN-ReLU blocks with a plain linear output (optionally batch-normed)."""
from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, batch_norm: bool = True,
        last_bn: bool = False) -> nn.Sequential:
    blocks: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        blocks += [nn.Linear(dim, hidden_dim, bias=not batch_norm)]
        blocks += [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
        blocks += [nn.ReLU(inplace=True)]
        dim = hidden_dim
    blocks.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        blocks.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*blocks)
