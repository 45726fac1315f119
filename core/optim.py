"""Optimisers by name, with weight decay off for biases and norm parameters (as in the papers)."""
from __future__ import annotations

from contextlib import contextmanager

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
        as one tensor, foreach updates; nothing is read on the host. `lr` and `weight_decay` may be
        0-d tensors (a compiled update's, `hyperparameters_in_tensors`)."""
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
                if isinstance(wd, torch.Tensor):  # alpha takes only a number
                    updated = torch._foreach_add(gs, torch._foreach_mul(ps, wd))
                else:
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
                bufs = [self.state[p]["momentum_buffer"] for p in params]
                if isinstance(lr, torch.Tensor):  # a compiled step's LR (core/step.py): alpha takes only a number
                    torch._foreach_add_(params, torch._foreach_mul(bufs, -lr))
                else:
                    torch._foreach_add_(params, bufs, alpha=-lr)


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


def param_groups(model: nn.Module | list[tuple[str, torch.Tensor]], weight_decay: float,
                 lr_groups: dict | None = None) -> list[dict]:
    """Groups by (decay, lr_scale, fixed_lr): the decaying and the non-decaying group at the
    plain LR first, then one group per other combination that has parameters. `model`: a module,
    or (name, tensor) pairs standing for its parameters (fp32 masters, core/masters.py)."""
    lr_groups = lr_groups or {}
    check_lr_groups(lr_groups)
    plain = {"lr_scale": 1.0, "fixed_lr": False}
    groups = {(True, 1.0, False): [], (False, 1.0, False): []}
    named = model.named_parameters() if isinstance(model, nn.Module) else model
    for name, p in named:
        if p.requires_grad:
            lr = lr_group_of(name, p, lr_groups) if lr_groups else plain
            key = (not is_excluded_from_decay(name, p), lr["lr_scale"], lr["fixed_lr"])
            groups.setdefault(key, []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "decay": decay,
             "lr_scale": lr_scale, "fixed_lr": fixed_lr}
            for (decay, lr_scale, fixed_lr), params in groups.items()
            if params or (lr_scale, fixed_lr) == (1.0, False)]


def build_optimizer(name: str, model: nn.Module | list[tuple[str, torch.Tensor]], lr: float,
                    weight_decay: float, momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999),
                    eta: float = 0.02, clip_lr: bool = True, exclude_bias_n_norm: bool = True, fused: bool = False,
                    lr_groups: dict | None = None, compiled: bool = False) -> torch.optim.Optimizer:
    """Weight decay is set per group; the training loop rescales the decaying group's value when
    the recipe has a weight-decay schedule. `fused` (on GPUs): one kernel for all parameters
    (AdamW, SGD); otherwise torch's foreach implementation. `lr_groups`: per-group LR options
    (see `lr_group_of`), applied by the loop's schedule (core.train.apply_schedules).
    `compiled`: for an update under torch.compile (core/step.py): LRs and weight decays as 0-d
    tensors (`hyperparameters_in_tensors`), AdamW capturable (torch's foreach AdamW takes a tensor
    LR only so), nothing fused (inductor fuses the foreach kernels itself)."""
    groups = param_groups(model, weight_decay, lr_groups)
    fast = {"fused": True} if fused and not compiled else {"foreach": True}
    if name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), capturable=compiled, **fast)
    elif name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, **fast)
    elif name == "adagrad":  # GloVe: glove.c starts every squared-gradient sum at 1, not 0
        optimizer = torch.optim.Adagrad(groups, lr=lr, initial_accumulator_value=1.0, foreach=True)
    elif name == "lars":
        optimizer = LARS(groups, lr=lr, momentum=momentum, eta=eta, clip_lr=clip_lr,
                         exclude_bias_n_norm=exclude_bias_n_norm)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose adamw, sgd, lars or adagrad")
    if compiled:
        hyperparameters_in_tensors(optimizer)
    return optimizer


# The hyper-parameters a schedule changes every step (core.train.apply_schedules). Under torch.compile
# a float is a constant of the graph, guarded on: a new value each step would be a new graph.
SCHEDULED = ("lr", "weight_decay")


def hyperparameters_in_tensors(optimizer: torch.optim.Optimizer) -> None:
    """Every group's LR, and the weight decay of every decaying group, as a 0-d float32 tensor on the
    parameters' device, which the schedule fills in place: torch.compile traces them as inputs of
    the update, so a new value is not a new graph. Groups that take no decay keep 0.0."""
    device = next((p.device for group in optimizer.param_groups for p in group["params"]), torch.device("cpu"))
    for group in optimizer.param_groups:
        for key in SCHEDULED if group.get("decay", True) else ("lr",):
            group[key] = torch.tensor(float(group[key]), dtype=torch.float32, device=device)


@contextmanager
def weight_decay_taken_out(optimizer: torch.optim.Optimizer):
    """Yields each group's tensor weight decay (None where it is a float), with the group's own set
    to 0.0 meanwhile, for `apply_weight_decay` to apply before torch's step(). torch's foreach AdamW,
    SGD and Adagrad test weight_decay in Python (`!= 0`) and pass it as alpha=, a number: a tensor
    there breaks the graph, and AOT autograd makes a changing float a constant, a new graph each
    step. LARS takes the tensor itself (its trust ratio reads it): nothing is taken out."""
    groups = optimizer.param_groups
    decays = [None if isinstance(optimizer, LARS) or not isinstance(g["weight_decay"], torch.Tensor)
              else g["weight_decay"] for g in groups]
    for group, decay in zip(groups, decays):
        if decay is not None:
            group["weight_decay"] = 0.0
    try:
        yield decays
    finally:
        for group, decay in zip(groups, decays):
            if decay is not None:
                group["weight_decay"] = decay


@torch.no_grad()
def apply_weight_decay(optimizer: torch.optim.Optimizer, decays: list) -> None:
    """What torch's step() first does with a group's weight decay wd, with wd a tensor: AdamW's
    decoupled p <- p * (1 - lr * wd), SGD's and Adagrad's L2 term g <- g + wd * p. `decays` from
    `weight_decay_taken_out`."""
    decoupled = optimizer.defaults.get("decoupled_weight_decay", False)
    for group, decay in zip(optimizer.param_groups, decays, strict=True):
        params = [p for p in group["params"] if p.grad is not None]
        if decay is None or not params:
            continue
        if decoupled:
            torch._foreach_mul_(params, 1 - group["lr"] * decay)
        else:
            torch._foreach_add_([p.grad for p in params], torch._foreach_mul(params, decay))


# How a run executes its update, not what it learned: a resumed run keeps its own.
EXECUTION_OPTIONS = ("foreach", "fused", "capturable")


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """optimizer.state_dict() with every group's LR and weight decay floats: a checkpoint is the same
    whether the run held them in tensors (a compiled update) or not, and keeps no alias of a tensor
    the schedule refills in place. Reads such tensors on the host (a sync, once per checkpoint)."""
    state = optimizer.state_dict()
    state["param_groups"] = [{**group, **{k: float(group[k]) for k in SCHEDULED}} for group in state["param_groups"]]
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's optimiser state into `optimizer`, which keeps its execution options
    (foreach, fused, capturable: where torch keeps the step counts follows them) and the form of
    its LR and weight decay (floats, or tensors refilled in place), so that a checkpoint of a
    compiled run resumes eagerly and the other way round."""
    own = optimizer.param_groups
    saved = [{**group, **{k: mine[k] for k in EXECUTION_OPTIONS if k in mine}}
             for mine, group in zip(own, state["param_groups"], strict=True)]
    forms = [{k: group[k] for k in SCHEDULED} for group in own]
    optimizer.load_state_dict({**state, "param_groups": saved})
    for group, form in zip(optimizer.param_groups, forms):
        for key, mine in form.items():
            if isinstance(mine, torch.Tensor):
                group[key] = mine.fill_(float(group[key]))
