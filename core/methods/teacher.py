"""Teacher networks for self-distillation: a frozen copy of the student, updated as an EMA."""
from __future__ import annotations

import copy

import torch
from torch import nn

from core.schedules import cosine


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy whose parameters take no gradient (the optimiser never sees them)."""
    teacher = copy.deepcopy(module)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def ema_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """Cosine schedule of the teacher momentum from `base` to `final` (BYOL eq. 11, DINO sec. 3.1)."""
    return cosine(step, total_steps, base, final)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, for parameters only, as in the
    official DINO code: buffers stay the teacher's own (its BatchNorm statistics come from its
    own forward passes, and fixed buffers such as position embeddings must not drift by
    rounding, which would break exact resume)."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
