"""Vision Transformer (tiny/small) with patch masking for MAE, I-JEPA and data2vec."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import stochastic_depth

from core.backbones.registry import register_backbone


class Block(nn.Module):
    """Pre-norm transformer block; `drop_path`: the probability that a sample skips each residual
    branch while training (stochastic depth, as DINO's ViT)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.heads, self.drop_path = heads, drop_path
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.branch(self.proj(attn))
        return x + self.branch(self.mlp(self.norm2(x)))

    def branch(self, y: Tensor) -> Tensor:
        return stochastic_depth(y, self.drop_path, "row", self.training) if self.drop_path else y


def sincos_2d(grid: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (MAE), shape (grid*grid, dim)."""
    coords = torch.arange(grid, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    parts = [torch.outer(axis.flatten(), omega) for axis in (yy, xx)]
    return torch.cat([torch.sin(parts[0]), torch.cos(parts[0]), torch.sin(parts[1]), torch.cos(parts[1])], 1)


POOLS = ("cls", "mean")


class VisionTransformer(nn.Module):
    """forward(x) -> (B, dim) features read out by `pool`: "cls", the class token after the final
    norm, or "mean", the mean of the patch tokens after the final norm (the class token left
    out; the readout MAE, I-JEPA and data2vec evaluate). `tokens(x, keep)` runs on visible
    patches only."""

    def __init__(self, image_size: int, patch_size: int, in_channels: int, dim: int, depth: int, heads: int,
                 pool: str = "cls", grad_checkpointing: bool = False, drop_path_rate: float = 0.0):
        super().__init__()
        self.grad_checkpointing = grad_checkpointing  # recompute each block's activations in backward
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of patch size {patch_size}")
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        self.pool = pool
        self.patch_size, self.grid = patch_size, image_size // patch_size
        self.num_patches = self.grid**2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(self.grid, dim)[None], persistent=False)
        # stochastic depth rising linearly over the blocks to drop_path_rate (DINO's VisionTransformer)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # torch.linspace, off the meta device
        self.blocks = nn.ModuleList(Block(dim, heads, drop_path=rate) for rate in rates)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.feature_dim = self.embed_dim = dim
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(_init)

    def patchify(self, x: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, N, dim) patch tokens with position embeddings. Inputs of another
        size (multi-crop's local views) get the sine-cosine embedding of their own grid.
        mask: (B, N) bool; where True the patch embedding is replaced by `mask_token` (dim,)
        before the position embedding is added (BEiT/data2vec masked input)."""
        tokens = self.patch_embed(x)
        grid = tokens.shape[-1]
        pos = self.pos_embed if grid == self.grid else sincos_2d(grid, tokens.shape[1])[None].to(tokens)
        tokens = tokens.flatten(2).transpose(1, 2)
        if mask is not None:
            tokens = torch.where(mask[..., None], mask_token.reshape(1, 1, -1).to(tokens.dtype), tokens)
        return tokens + pos

    def tokens(self, x: Tensor, keep: Tensor | None = None, return_layers: bool = False,
               mask: Tensor | None = None, mask_token: Tensor | None = None):
        """keep: (B, K) indices of visible patches; mask/mask_token: see patchify. Returns
        (B, 1+K, dim) normed tokens (cls first), and, with return_layers, the list of every
        block's output before the final norm."""
        patches = self.patchify(x, mask, mask_token)
        if keep is not None:
            patches = torch.gather(patches, 1, keep[..., None].expand(-1, -1, patches.shape[-1]))
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches], 1)  # not len(x): a symbolic batch exports
        layers = []
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, use_reentrant=False)
            else:
                h = block(h)
            layers.append(h)
        out = self.norm(h)
        return (out, layers) if return_layers else out

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.tokens(x)
        return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(1)


def without_drop_path(net: nn.Module) -> nn.Module:
    """`net` with stochastic depth off in every block (DINO's teacher has none); other nets as they are."""
    for block in net.modules():
        if isinstance(block, Block):
            block.drop_path = 0.0
    return net


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@register_backbone("vit_tiny")
def vit_tiny(in_channels: int = 3, image_size: int = 32, patch_size: int = 4, dim: int = 192, depth: int = 12,
             heads: int = 3, pool: str = "cls", grad_checkpointing: bool = False,
             drop_path_rate: float = 0.0) -> VisionTransformer:
    """ViT-Ti/patch (Touvron et al., 2021); dim/depth/heads may be shrunk for CPU-sized runs.
    grad_checkpointing recomputes each block in backward (less activation memory, ~30% more compute);
    drop_path_rate: stochastic depth of the last block (0 in the first, linear in between)."""
    return VisionTransformer(image_size, patch_size, in_channels, dim=dim, depth=depth, heads=heads, pool=pool,
                             grad_checkpointing=grad_checkpointing, drop_path_rate=drop_path_rate)


@register_backbone("vit_small")
def vit_small(in_channels: int = 3, image_size: int = 32, patch_size: int = 4, dim: int = 384, depth: int = 12,
              heads: int = 6, pool: str = "cls", grad_checkpointing: bool = False,
              drop_path_rate: float = 0.0) -> VisionTransformer:
    return VisionTransformer(image_size, patch_size, in_channels, dim=dim, depth=depth, heads=heads, pool=pool,
                             grad_checkpointing=grad_checkpointing, drop_path_rate=drop_path_rate)
