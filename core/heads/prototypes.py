"""Prototype layers for clustering methods (SwAV, arXiv:2006.09882; DeepCluster-v2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Prototypes(nn.Module):
    """A bias-free linear layer of `num_prototypes` unit-norm rows: scores are cosine
    similarities of L2-normalised embeddings with the prototypes. The rows are re-normalised
    in place by `normalize_()` after each optimiser step (SwAV, sec. 4 / Algorithm 1)."""

    def __init__(self, dim: int, num_prototypes: int):
        super().__init__()
        self.weight = nn.Parameter(F.normalize(torch.randn(num_prototypes, dim), dim=1))

    def forward(self, z: Tensor, frozen: bool = False) -> Tensor:
        """z: (B, dim) unit-norm embeddings -> (B, num_prototypes) scores. `frozen` lets no
        gradient reach the prototypes (SwAV keeps them fixed during the first iterations).
        The scores are float32, computed outside autocast: the loss divides them by a
        temperature of 0.1, which would magnify bf16 rounding 10-fold."""
        weight = self.weight.detach() if frozen else self.weight
        with torch.autocast(z.device.type, enabled=False):
            return z.float() @ weight.float().T

    @torch.no_grad()
    def normalize_(self) -> None:
        self.weight.copy_(F.normalize(self.weight, dim=1))
