"""Momentum (EMA) targets, the one implementation for MoCo, BYOL, DINO, I-JEPA and data2vec: a
frozen copy, a parameter-only update and the cosine momentum schedule.

The target is an ordinary submodule whose parameters have requires_grad=False, so it is saved in
`state_dict()` and never seen by the optimiser; the momentum is a function of (step, total).
Only parameters are averaged, as in the MoCo, BYOL and DINO reference code: the target's
BatchNorm statistics come from its own forward passes, and fixed buffers (a ViT's position
embedding) must not drift by rounding, which would break exact resume."""
from __future__ import annotations

import contextlib
import contextvars
import copy

import torch
from torch import Tensor
from torch import nn

from core.schedules import cosine

__all__ = ["ema_update", "frozen_copy", "momentum_at", "applied_only"]

_applied: contextvars.ContextVar[Tensor | None] = contextvars.ContextVar("ema_applied", default=None)


@contextlib.contextmanager
def applied_only(applied: Tensor | None):
    """Inside, EMA updates move their targets by `applied` (a 0-d 0/1 tensor on the device) times
    their usual step: 0 where the fp16 scaler skipped the optimiser step, without the host
    reading which (None: always applied)."""
    token = _applied.set(applied)
    try:
        yield
    finally:
        _applied.reset(token)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off; it is a submodule, so its weights are in state_dict()."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter."""
    targets, onlines = list(target.parameters()), [p.detach() for p in online.parameters()]
    if len(targets) != len(onlines):
        raise ValueError(f"target has {len(targets)} parameters, online {len(onlines)}")
    applied = _applied.get()
    if applied is None:
        torch._foreach_lerp_(targets, onlines, 1.0 - momentum)
    else:  # lerp by exactly 0 leaves a target bit-identical
        weight = applied * (1.0 - momentum)
        torch._foreach_lerp_(targets, onlines, [weight.to(t.dtype) for t in targets])


def momentum_at(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """Cosine increase from `base` at step 0 to `final` at the last step (BYOL, Grill et al. 2020,
    sec. 3.2: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2; DINO sec. 3.1)."""
    return cosine(step, total_steps, base, final)
