"""BERT's masked-LM head: dense + GELU + LayerNorm, then a decoder tied to the input embeddings."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLMHead(nn.Module):
    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.transform[0].weight, std=0.02)
        nn.init.zeros_(self.transform[0].bias)

    def forward(self, tokens: Tensor, embedding: Tensor) -> Tensor:
        """tokens: (N, dim) encoder outputs; embedding: (vocab, dim) the input embedding matrix
        (weight tying, BERT / Press & Wolf 2017). Returns (N, vocab) logits."""
        return F.linear(self.transform(tokens), embedding, self.bias)
