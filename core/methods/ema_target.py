"""Exponential-moving-average target encoders (I-JEPA, data2vec): a frozen copy of the online
network, updated after each optimiser step as target = m * target + (1 - m) * online."""
from __future__ import annotations

import copy

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off; it is a submodule, so its weights are in state_dict()."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameters and float buffers."""
    t_params, o_params = list(target.parameters()), list(online.parameters())
    torch._foreach_lerp_(t_params, o_params, 1 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        if t.is_floating_point():
            t.lerp_(o, 1 - momentum)
        else:
            t.copy_(o)
