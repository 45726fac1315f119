"""The masked-language-modelling loss (BERT, arXiv:1810.04805 sec. 3.1, task #1)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def masked_lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """logits: (N, vocab) at the N selected positions; targets: (N,) their original ids. The mean
    cross entropy over selected tokens only; 0 (with a gradient path) when nothing was selected."""
    if len(targets) == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets)
