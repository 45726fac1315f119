"""SwAV: Sinkhorn-Knopp codes and the swapped prediction loss (Caron et al., 2020, arXiv:2006.09882)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core import distributed
from core.losses.precision import fp32


@fp32
@torch.no_grad()
def prototype_scores(z: Tensor, prototypes: Tensor) -> Tensor:
    """(B, K) float32 scores of embeddings z: (B, D) against prototypes: (K, D), no gradient: the
    scores Sinkhorn-Knopp turns into codes, computed outside autocast (exp(score / 0.05)
    magnifies bf16 rounding ~20-fold)."""
    return z @ prototypes.T


@fp32
@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Soft codes Q for scores (B, K) under an equipartition constraint (sec. 3.1, eq. 3-4).

    Alternately normalises prototype rows to 1/K and sample columns to 1/B of Q^T, starting
    from exp(scores / epsilon), in float32 with autocast off. Returns (B, K) codes without
    gradient: each sample's codes sum to 1, and each prototype gets about B/K of the mass
    (exactly in the limit of iterations).

    Across ranks B is the global batch: the total and the prototype rows are summed over ranks
    (the official distributed_sinkhorn), so the codes are those of the whole batch."""
    shift = distributed.max_detached(scores.max())
    q = torch.exp((scores - shift) / epsilon).T  # (K, B); the shift cancels below
    q = q / distributed.sum_detached(q.sum())
    k = q.shape[0]
    b = q.shape[1] * distributed.world_size()
    for _ in range(iterations):
        q = q / distributed.sum_detached(q.sum(dim=1, keepdim=True)) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).T


def swav_loss(scores: list[Tensor], codes: list[Tensor], temperature: float = 0.1) -> Tensor:
    """Swapped prediction (eq. 1-2). scores: V tensors (B, K), prototype scores of every crop;
    codes: A tensors (B, K), the Sinkhorn codes of the first A crops. Each crop's softmax
    (scores / temperature) predicts the codes of every other assigned crop; returns the mean
    over pairs of the batch-mean cross-entropy."""
    log_probs = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]
    total, pairs = 0.0, 0
    for a, q in enumerate(codes):
        for v, log_p in enumerate(log_probs):
            if v != a:
                total = total + (-q.detach() * log_p).sum(1).mean()
                pairs += 1
    return total / pairs
