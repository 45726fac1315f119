"""A narrow transformer that predicts tokens at hidden patch positions from visible ones: MAE's
lightweight decoder (arXiv:2111.06377) and I-JEPA's predictor (arXiv:2301.08243) are this module
with pixel or latent outputs."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from core.backbones.vit import Block, _init, sincos_2d


def num_heads(dim: int, head_dim: int = 32) -> int:
    """The most heads of about `head_dim` channels that divide `dim` (at least one)."""
    for heads in range(max(1, dim // head_dim), 0, -1):
        if dim % heads == 0:
            return heads
    return 1


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """x: (B, N, D), index: (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


class MaskedPredictor(nn.Module):
    """Embeds visible tokens to `dim`, adds the fixed sine-cosine position embedding of their
    patches, appends a shared learnable mask token (plus position embedding) for each hidden
    position, runs `depth` transformer blocks, and maps the hidden positions' outputs to out_dim.
    `prefix` tokens (MAE's class token) join without a position embedding."""

    def __init__(self, in_dim: int, dim: int, depth: int, out_dim: int, grid: int, heads: int | None = None):
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(grid, dim)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads or num_heads(dim)) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, out_dim)
        self.apply(_init)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, visible: Tensor, visible_idx: Tensor, hidden_idx: Tensor, prefix: Tensor | None = None) -> Tensor:
        """visible: (B, K, in_dim) at patches visible_idx (B, K); hidden_idx: (B, T).
        Returns (B, T, out_dim) predictions for the hidden patches."""
        b = visible.shape[0]
        pos = self.pos_embed.expand(b, -1, -1)
        x = self.embed(visible) + gather_tokens(pos, visible_idx)
        queries = self.mask_token.expand(b, hidden_idx.shape[1], -1) + gather_tokens(pos, hidden_idx)
        parts = [x, queries] if prefix is None else [self.embed(prefix), x, queries]
        h = torch.cat(parts, 1)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h[:, -hidden_idx.shape[1]:]))
