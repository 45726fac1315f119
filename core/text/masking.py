"""BERT's dynamic masking (Devlin et al., 2019, sec. 3.1; RoBERTa's per-step variant, Liu et al.,
2019, sec. 4.1): each step draws its own mask from the step's generator, so the masks of a run
are a function of (seed, step)."""
from __future__ import annotations

import torch
from torch import Tensor

from core.text.tokenizer import CLS, MASK, PAD, SEP, SPECIAL_TOKENS

IGNORE = -100  # target of a token that is not predicted (F.cross_entropy's ignore_index)


def mask_tokens(ids: Tensor, gen: torch.Generator, vocab_size: int, select_prob: float = 0.15,
                mask_prob: float = 0.8, random_prob: float = 0.1) -> tuple[Tensor, Tensor]:
    """ids: (B, L) int64. Each ordinary token (not PAD, CLS or SEP) is selected with probability
    `select_prob`; a selected token becomes [MASK] with probability `mask_prob`, a uniformly
    drawn ordinary token with `random_prob`, and stays itself otherwise (80/10/10 in BERT).
    Returns (inputs, targets): targets hold the original id at selected positions, IGNORE
    elsewhere."""
    if not 0 < select_prob <= 1 or mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1:
        raise ValueError("need 0 < select_prob <= 1 and mask_prob, random_prob >= 0 summing to at most 1")
    ordinary = (ids != PAD) & (ids != CLS) & (ids != SEP)
    selected = ordinary & (torch.rand(ids.shape, generator=gen, device=ids.device) < select_prob)
    action = torch.rand(ids.shape, generator=gen, device=ids.device)
    random_ids = torch.randint(len(SPECIAL_TOKENS), vocab_size, ids.shape, generator=gen, device=ids.device)
    inputs = torch.where(selected & (action < mask_prob), torch.full_like(ids, MASK), ids)
    inputs = torch.where(selected & (action >= mask_prob) & (action < mask_prob + random_prob), random_ids, inputs)
    targets = torch.where(selected, ids, torch.full_like(ids, IGNORE))
    return inputs, targets
