"""Momentum (EMA) targets as MoCo and BYOL use them: a frozen copy, a parameter-only update and
the cosine momentum schedule.

The target is an ordinary submodule whose parameters have requires_grad=False, so it is saved in
`state_dict()` and never seen by the optimiser; the momentum is a function of (step, total).
Unlike `ema_target.ema_update` (I-JEPA, data2vec), only parameters are averaged: as in the MoCo
and BYOL reference code, the target's BatchNorm statistics are its own, from its forward passes."""
from __future__ import annotations

import torch
from torch import nn

from core.methods.ema_target import frozen_copy
from core.schedules import cosine

__all__ = ["ema_update", "frozen_copy", "momentum_at"]


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter."""
    targets, onlines = list(target.parameters()), [p.detach() for p in online.parameters()]
    if len(targets) != len(onlines):
        raise ValueError(f"target has {len(targets)} parameters, online {len(onlines)}")
    torch._foreach_lerp_(targets, onlines, 1.0 - momentum)


def momentum_at(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """Cosine increase from `base` at step 0 to `final` at the last step (BYOL, Grill et al. 2020,
    sec. 3.2: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2)."""
    return cosine(step, total_steps, base, final)
