"""Optimisers by name, with weight decay off for biases and norm parameters (as in the papers)."""
from __future__ import annotations

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratios (You et al., 2017), skipping 1-D parameters."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6, eta: float = 0.02):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.norm(p), torch.norm(grad)
                    trust = torch.where((p_norm > 0) & (g_norm > 0), group["eta"] * p_norm / g_norm, torch.ones_like(p_norm))
                    grad = grad.mul(trust)
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if name == "lars":
        return LARS(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw, sgd or lars")
