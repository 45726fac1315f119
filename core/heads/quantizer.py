"""Gumbel-softmax product quantizer (wav2vec 2.0, arXiv:2006.11477 sec. 3.2; fairseq's
GumbelVectorQuantizer): G codebooks of V entries; each frame picks one entry per codebook by a
straight-through hard Gumbel softmax and the chosen entries are concatenated."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gumbel_temperature(step: int, start: float = 2.0, end: float = 0.5, decay: float = 0.999995) -> float:
    """max(start * decay**step, end): fairseq's latent_temp (2, 0.5, 0.999995) per update."""
    return max(start * decay**step, end)


def perplexity(probs: Tensor) -> Tensor:
    """sum over groups of exp(entropy) of each group's distribution. probs: (G, V)."""
    return torch.exp(-(probs * torch.log(probs + 1e-7)).sum(-1)).sum()


class GumbelQuantizer(nn.Module):
    def __init__(self, dim: int, codebook_dim: int, groups: int = 2, entries: int = 320):
        super().__init__()
        if codebook_dim % groups:
            raise ValueError(f"codebook_dim {codebook_dim} is not divisible by groups {groups}")
        self.groups, self.entries = groups, entries
        self.codebooks = nn.Parameter(torch.empty(groups * entries, codebook_dim // groups))
        self.weight_proj = nn.Linear(dim, groups * entries)
        nn.init.uniform_(self.codebooks)  # fairseq: vars uniform in [0, 1); weight_proj N(0, 1), bias 0
        nn.init.normal_(self.weight_proj.weight, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)

    def forward(self, x: Tensor, temperature: float, gen: torch.Generator | None = None,
                weights: Tensor | None = None) -> dict[str, Tensor]:
        """x: (B, T, dim). Training: hard one-hot codes from Gumbel noise (from `gen`) at
        `temperature`, gradients through the soft probabilities (straight-through); eval: the
        argmax, no noise. `weights` (B, T) bool picks the frames the statistics average over
        (default all). Returns quantized (B, T, codebook_dim), codes (B, T, G) long,
        avg_probs (G, V) (the mean softmax without noise, for the diversity loss),
        prob_perplexity and code_perplexity."""
        b, t, _ = x.shape
        logits = self.weight_proj(x).float().view(b, t, self.groups, self.entries)
        codes = logits.argmax(-1)
        if self.training:
            uniform = torch.rand(logits.shape, generator=gen, device=logits.device).clamp(1e-10, 1 - 1e-7)
            soft = ((logits - torch.log(-torch.log(uniform))) / temperature).softmax(-1)
            codes = soft.argmax(-1)
            onehot = F.one_hot(codes, self.entries).to(soft.dtype)
            onehot = onehot - soft.detach() + soft
        else:
            onehot = F.one_hot(codes, self.entries).to(logits.dtype)
        w = (torch.ones(b, t, device=x.device) if weights is None else weights.float())[..., None, None]
        total = w.sum().clamp_min(1)
        avg_probs = (logits.softmax(-1) * w).sum((0, 1)) / total
        hard_probs = (F.one_hot(codes, self.entries).float() * w).sum((0, 1)) / total
        quantized = torch.einsum("btgv,gvd->btgd", onehot.to(x.dtype),
                                 self.codebooks.view(self.groups, self.entries, -1)).reshape(b, t, -1)
        return {"quantized": quantized, "codes": codes, "avg_probs": avg_probs,
                "prob_perplexity": perplexity(avg_probs), "code_perplexity": perplexity(hard_probs).detach()}
