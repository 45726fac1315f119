"""Optimisers by name, with weight decay off for biases and norm parameters (as in the papers)."""
from __future__ import annotations

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratios (You et al., 2017), as in solo-learn's
    `solo/utils/lars.py` and the BYOL/Barlow Twins reference code.

    For a parameter p with gradient g: trust = eta * |p| / (|g| + wd * |p| + eps); with `clip_lr`
    the trust is min(trust / lr, 1), so the effective step never exceeds the scheduled LR. The
    update is momentum SGD on trust * (g + wd * p). With `exclude_bias_n_norm`, 1-D parameters
    (biases, norm scales) take plain momentum SGD: no trust ratio and no weight decay."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02,
                 clip_lr: bool = True, exclude_bias_n_norm: bool = True, eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr,
                                      exclude_bias_n_norm=exclude_bias_n_norm, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        """Multi-tensor: one norm kernel over the parameters and one over the gradients, trust ratios
        as one tensor, foreach updates; nothing is read on the host."""
        for group in self.param_groups:
            wd, lr, momentum = group["weight_decay"], group["lr"], group["momentum"]
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            scaled = [i for i, p in enumerate(params) if p.ndim > 1 or not group["exclude_bias_n_norm"]]
            if scaled:
                ps, gs = [params[i] for i in scaled], [grads[i] for i in scaled]
                p_norm, g_norm = torch.stack(torch._foreach_norm(ps)), torch.stack(torch._foreach_norm(gs))
                trust = group["eta"] * p_norm / (g_norm + wd * p_norm + group["eps"])
                if group["clip_lr"]:
                    trust = torch.clamp(trust / lr, max=1.0)
                trust = torch.where((p_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                updated = torch._foreach_add(gs, ps, alpha=wd)
                torch._foreach_mul_(updated, list(trust.unbind()))
                for i, grad in zip(scaled, updated):
                    grads[i] = grad
            fresh = [i for i, p in enumerate(params) if "momentum_buffer" not in self.state[p]]
            for i in fresh:
                self.state[params[i]]["momentum_buffer"] = grads[i].clone()
            old = [i for i in range(len(params)) if i not in set(fresh)]
            if old:
                bufs = [self.state[params[i]]["momentum_buffer"] for i in old]
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, [grads[i] for i in old])
            if params:
                torch._foreach_add_(params, [self.state[p]["momentum_buffer"] for p in params], alpha=-lr)


def is_excluded_from_decay(name: str, param: nn.Parameter) -> bool:
    """Biases and norm parameters (every 1-D tensor), plus ViT position embeddings and class
    tokens, take no weight decay (as in the DINO, MAE and solo-learn code)."""
    return param.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "mask_token"))


BIASES_AND_NORMS = "biases_and_norms"


def lr_group_of(name: str, param: nn.Parameter, lr_groups: dict) -> dict:
    """The LR options of a parameter: those of the first selector in `lr_groups` that matches it.
    A selector is "biases_and_norms" (every 1-D parameter, the Barlow Twins code's
    `param.ndim == 1`) or a module name ("predictor" matches "predictor.0.weight"). Options:
    lr_scale (a multiplier on the scheduled LR) and fixed_lr (the peak LR at every step, no
    warm-up or decay: SimSiam's --fix-pred-lr, solo-learn's static_lr)."""
    for selector, options in lr_groups.items():
        if (param.ndim == 1 if selector == BIASES_AND_NORMS else
                name == selector or name.startswith(selector + ".")):
            return {"lr_scale": float(options.get("lr_scale", 1.0)), "fixed_lr": bool(options.get("fixed_lr", False))}
    return {"lr_scale": 1.0, "fixed_lr": False}


def check_lr_groups(lr_groups: dict) -> None:
    for selector, options in lr_groups.items():
        unknown = set(options) - {"lr_scale", "fixed_lr"}
        if unknown or not isinstance(selector, str) or not selector:
            raise ValueError(f"lr_groups[{selector!r}]: options are lr_scale and fixed_lr, not {sorted(unknown)}")
        if float(options.get("lr_scale", 1.0)) < 0:
            raise ValueError(f"lr_groups[{selector!r}].lr_scale must be >= 0")


def param_groups(model: nn.Module, weight_decay: float, lr_groups: dict | None = None) -> list[dict]:
    """Groups by (decay, lr_scale, fixed_lr): the decaying and the non-decaying group at the
    plain LR first, then one group per other combination that has parameters."""
    lr_groups = lr_groups or {}
    check_lr_groups(lr_groups)
    plain = {"lr_scale": 1.0, "fixed_lr": False}
    groups = {(True, 1.0, False): [], (False, 1.0, False): []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            lr = lr_group_of(name, p, lr_groups) if lr_groups else plain
            key = (not is_excluded_from_decay(name, p), lr["lr_scale"], lr["fixed_lr"])
            groups.setdefault(key, []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "decay": decay,
             "lr_scale": lr_scale, "fixed_lr": fixed_lr}
            for (decay, lr_scale, fixed_lr), params in groups.items()
            if params or (lr_scale, fixed_lr) == (1.0, False)]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9,
                    betas: tuple[float, float] = (0.9, 0.999), eta: float = 0.02, clip_lr: bool = True,
                    exclude_bias_n_norm: bool = True, fused: bool = False,
                    lr_groups: dict | None = None) -> torch.optim.Optimizer:
    """Weight decay is set per group; the training loop rescales the decaying group's value when
    the recipe has a weight-decay schedule. `fused` (on GPUs): one kernel for all parameters
    (AdamW, SGD); otherwise torch's foreach implementation. `lr_groups`: per-group LR options
    (see `lr_group_of`), applied by the loop's schedule (core.train.apply_schedules)."""
    groups = param_groups(model, weight_decay, lr_groups)
    fast = {"fused": True} if fused else {"foreach": True}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), **fast)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, **fast)
    if name == "adagrad":  # GloVe: glove.c starts every squared-gradient sum at 1, not 0
        return torch.optim.Adagrad(groups, lr=lr, initial_accumulator_value=1.0, foreach=True)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, eta=eta, clip_lr=clip_lr,
                    exclude_bias_n_norm=exclude_bias_n_norm)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw, sgd, lars or adagrad")
