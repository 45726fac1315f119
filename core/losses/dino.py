"""DINO self-distillation loss and center update (Caron et al., 2021, arXiv:2104.14294, Alg. 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core import distributed
from core.losses.precision import fp32


@fp32
@torch.no_grad()
def teacher_targets(teacher_logits: list[Tensor], center: Tensor, teacher_temp: float = 0.04) -> list[Tensor]:
    """softmax((t - center) / teacher_temp) of each teacher crop's logits (B, K), in float32 with
    autocast off and without gradient (Alg. 1): centring subtracts nearly equal numbers and the
    low temperature magnifies what is left, so bf16 would distort the sharpened targets."""
    return [F.softmax((t - center) / teacher_temp, dim=-1) for t in teacher_logits]


def dino_loss(student_logits: list[Tensor], teacher_logits: list[Tensor], center: Tensor,
              student_temp: float = 0.1, teacher_temp: float = 0.04) -> Tensor:
    """Cross-entropy H(P_t, P_s) between every teacher crop and every *other* student crop.

    student_logits: V tensors (B, K), all crops; the first G are the global crops that
    teacher_logits (G tensors (B, K)) also saw, so pairs with the same index are skipped.
    center: (K,). Targets are softmax((t - center) / teacher_temp) and carry no gradient.
    Returns the mean over pairs of the batch-mean cross-entropy."""
    targets = teacher_targets(teacher_logits, center, teacher_temp)
    log_probs = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student_logits]
    total, pairs = 0.0, 0
    for g, target in enumerate(targets):
        for v, log_p in enumerate(log_probs):
            if v != g:
                total = total + (-target * log_p).sum(-1).mean()
                pairs += 1
    return total / pairs


@fp32
@torch.no_grad()
def updated_center(center: Tensor, teacher_logits: list[Tensor], momentum: float = 0.9) -> Tensor:
    """center <- m * center + (1 - m) * mean of the teacher outputs over batch and crops (eq. 4);
    across ranks the mean is over the global batch (the official all_reduce)."""
    rows = torch.cat(teacher_logits)
    batch_center = distributed.sum_detached(rows.sum(0)) / (len(rows) * distributed.world_size())
    return center * momentum + batch_center * (1 - momentum)
