"""A pre-norm Transformer text encoder with padding-aware attention (SDPA), from `text_tiny`
(CPU) to BERT-base-like. It carries its tokenizer as a byte buffer, so the backbone part of a
checkpoint is the whole text model: weights and the tokenizer that produced its inputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.backbones.registry import register_backbone
from core.modalities import TEXT
from core.text.tokenizer import PAD, Encoded, encode, fingerprint, from_bytes, to_bytes

POOLS = ("cls", "mean")
MAX_POSITIONS = 512  # the largest max_length a text backbone holds (BERT's position table)


class TextBlock(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)) (pre-norm, as GPT-2 / Xiong et al., 2020)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """x: (B, L, dim); keep: (B, 1, 1, L) bool, False at padding (never attended to)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                              dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class TextTransformer(nn.Module):
    """forward(ids) -> (B, dim) features: the [CLS] token ("cls") or the mean of the non-padding
    tokens ("mean") after the final norm. ids: (B, L) int64, PAD (0) after each text."""

    def __init__(self, vocab_size: int, max_length: int, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.1, pool: str = "mean"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        if not 3 <= max_length <= MAX_POSITIONS:
            raise ValueError(f"max_length {max_length} is out of range: a text backbone holds 3..{MAX_POSITIONS} "
                             "tokens")
        if vocab_size < 6:
            raise ValueError(f"vocab_size {vocab_size} is too small (the 5 special tokens come first)")
        self.vocab_size, self.max_length, self.pool = vocab_size, max_length, pool
        self.token_embed = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_length, dim))
        self.embed_norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TextBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.feature_dim = self.embed_dim = dim
        self.register_buffer("tokenizer_bytes", torch.zeros(0, dtype=torch.uint8))
        self._tokenizer = None
        self.apply(_init)
        nn.init.normal_(self.pos_embed, std=0.02)

    # -- the tokenizer travels in the state dict --------------------------------------------------
    def set_tokenizer(self, tokenizer) -> None:
        if tokenizer.get_vocab_size() > self.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens; this encoder embeds "
                             f"{self.vocab_size}")
        data = to_bytes(tokenizer)
        self.tokenizer_bytes = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.token_embed.weight.device)
        self._tokenizer = tokenizer

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if not len(self.tokenizer_bytes):
                raise ValueError("this text encoder has no tokenizer")
            self._tokenizer = from_bytes(self.tokenizer_bytes.cpu().numpy().tobytes())
        return self._tokenizer

    def tokenizer_fingerprint(self) -> str:
        return fingerprint(self.tokenizer_bytes.cpu().numpy().tobytes())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "tokenizer_bytes")
        if saved is not None:  # any length: the buffer takes the saved tokenizer's size
            self.tokenizer_bytes = torch.empty_like(saved, device=self.tokenizer_bytes.device)
            self._tokenizer = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def encode(self, texts: list[str], max_length: int | None = None) -> Encoded:
        return encode(self.tokenizer, texts, max_length or self.max_length)

    # -- the network -------------------------------------------------------------------------------
    def tokens(self, ids: Tensor) -> Tensor:
        """(B, L) ids -> (B, L, dim) normed token features."""
        if ids.shape[1] > self.max_length:
            raise ValueError(f"{ids.shape[1]} tokens; this encoder holds at most {self.max_length}")
        keep = (ids != PAD)[:, None, None, :]
        x = self.drop(self.embed_norm(self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]]))
        for block in self.blocks:
            x = block(x, keep)
        return self.norm(x)

    def readout(self, tokens: Tensor, ids: Tensor) -> Tensor:
        if self.pool == "cls":
            return tokens[:, 0]
        keep = (ids != PAD).unsqueeze(-1).to(tokens.dtype)
        return (tokens * keep).sum(1) / keep.sum(1).clamp_min(1)

    def forward(self, ids: Tensor) -> Tensor:
        return self.readout(self.tokens(ids), ids)


def _init(m: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit norms."""
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _text_backbone(dim: int, depth: int, heads: int, max_length: int):
    def build(in_channels: int = 1, image_size: int = 0, vocab_size: int = 8000, max_length: int = max_length,
              dim: int = dim, depth: int = depth, heads: int = heads, mlp_ratio: float = 4.0, dropout: float = 0.1,
              pool: str = "mean") -> TextTransformer:
        # in_channels / image_size are the image backbones' arguments; a text encoder has none
        return TextTransformer(vocab_size, max_length, dim, depth, heads, mlp_ratio, dropout, pool)

    return build


TEXT_BACKBONES = ("text_tiny", "text_small", "text_base")
register_backbone("text_tiny", TEXT)(_text_backbone(dim=128, depth=2, heads=2, max_length=64))
register_backbone("text_small", TEXT)(_text_backbone(dim=256, depth=4, heads=4, max_length=128))
register_backbone("text_base", TEXT)(_text_backbone(dim=768, depth=12, heads=12, max_length=512))  # BERT-base-like
