"""The optimisers take the steps their formulas say: LARS (trust ratio, clip_lr, biases and norms
excluded), SGD with momentum and AdamW as built by `build_optimizer`, with weight decay only on
the weights. Each is compared with a reference written out here, in float64."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.optim import LARS, build_optimizer, param_groups


pytestmark = pytest.mark.usefixtures("one_thread")


def lars_reference(params, grads_by_step, lr, momentum, weight_decays, eta, clip_lr, exclude_bias_n_norm, eps=1e-8):
    """LARS from its formula: trust = eta |p| / (|g| + wd |p| + eps), with clip_lr min(trust / lr, 1);
    momentum SGD on trust (g + wd p); 1-D parameters plain momentum SGD without decay when excluded."""
    params = [p.detach().double().clone() for p in params]
    buffers = [None] * len(params)
    for grads in grads_by_step:
        for i, (p, g) in enumerate(zip(params, grads)):
            g, wd = g.double(), weight_decays[i]
            if p.ndim > 1 or not exclude_bias_n_norm:
                trust = eta * float(p.norm()) / (float(g.norm()) + wd * float(p.norm()) + eps)
                if clip_lr:
                    trust = min(trust / lr, 1.0)
                direction = trust * (g + wd * p)
            else:
                direction = g
            buffers[i] = direction.clone() if buffers[i] is None else momentum * buffers[i] + direction
            params[i] = p - lr * buffers[i]
    return params


def lars_world(seed: int = 0):
    """Three parameters chosen so that, at lr 0.05 and eta 0.02, the trust ratio of the first is
    clipped by clip_lr (trust / lr is about 15) and the second's is not (0.04); the third is a bias."""
    gen = torch.Generator().manual_seed(seed)

    def scaled(shape, norm):
        t = torch.randn(shape, generator=gen)
        return t * (norm / t.norm())

    params = [scaled((3, 4), 4.0), scaled((2, 3), 1.0), scaled((4,), 0.5)]
    grads_by_step = [[scaled((3, 4), 0.1), scaled((2, 3), 10.0), scaled((4,), 0.3)] for _ in range(2)]
    return params, grads_by_step


def run_lars(params, grads_by_step, steps, weight_decays, **options):
    tensors = [nn.Parameter(p.clone()) for p in params]
    groups = [{"params": [t], "weight_decay": wd} for t, wd in zip(tensors, weight_decays)]
    optimizer = LARS(groups, **options)
    for grads in grads_by_step[:steps]:
        for t, g in zip(tensors, grads):
            t.grad = g.clone()
        optimizer.step()
    return tensors


@pytest.mark.parametrize("clip_lr", [True, False])
@pytest.mark.parametrize("exclude_bias_n_norm", [True, False])
@pytest.mark.parametrize("steps", [1, 2])
def test_lars_matches_its_formula(clip_lr, exclude_bias_n_norm, steps):
    params, grads_by_step = lars_world()
    decays = [1e-3, 1e-3, 1e-3]  # the same decay everywhere: an excluded bias must still get none
    options = dict(lr=0.05, momentum=0.9, eta=0.02, clip_lr=clip_lr, exclude_bias_n_norm=exclude_bias_n_norm)
    got = run_lars(params, grads_by_step, steps, decays, **options)
    want = lars_reference(params, grads_by_step[:steps], weight_decays=decays, **options)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.detach().double(), w, rtol=1e-5, atol=1e-7)


def test_lars_clip_lr_caps_the_step_at_the_scheduled_lr():
    params, grads_by_step = lars_world()
    wd = 1e-3
    first = run_lars(params, grads_by_step, 1, [wd] * 3, lr=0.05, momentum=0.9, eta=0.02, clip_lr=True)
    unclipped = run_lars(params, grads_by_step, 1, [wd] * 3, lr=0.05, momentum=0.9, eta=0.02, clip_lr=False)
    p, g = params[0], grads_by_step[0][0]
    # trust 16 clipped to 1: the first step is plain SGD at the scheduled LR on g + wd p
    torch.testing.assert_close(first[0].detach(), p - 0.05 * (g + wd * p))
    # without clip_lr the same parameter moves with the raw trust ratio eta |p| / (|g| + wd |p|)
    trust = 0.02 * p.norm() / (g.norm() + wd * p.norm() + 1e-8)
    torch.testing.assert_close(unclipped[0].detach(), p - 0.05 * trust * (g + wd * p))


def test_lars_zero_parameter_uses_trust_one():
    weight = nn.Parameter(torch.zeros(2, 2))
    weight.grad = torch.ones(2, 2)
    LARS([weight], lr=0.1, momentum=0.0, weight_decay=0.5, eta=0.02).step()
    torch.testing.assert_close(weight.detach(), torch.full((2, 2), -0.1))


class Net(nn.Module):
    """A Linear with a bias, a BatchNorm, and a ViT-style position embedding and class token."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)
        self.head = nn.Linear(3, 2, bias=False)
        self.pos_embed = nn.Parameter(torch.randn(1, 5, 3))
        self.cls_token = nn.Parameter(torch.randn(1, 1, 3))
        self.frozen = nn.Parameter(torch.randn(3, 3), requires_grad=False)


DECAYED = {"linear.weight", "head.weight"}
NOT_DECAYED = {"linear.bias", "norm.weight", "norm.bias", "pos_embed", "cls_token"}


def names_of(model: nn.Module, params) -> set[str]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


def test_param_groups_exclude_biases_norms_and_vit_tokens_from_decay():
    model = Net()
    decay, no_decay = param_groups(model, 0.05)
    assert names_of(model, decay["params"]) == DECAYED and decay["weight_decay"] == 0.05
    assert names_of(model, no_decay["params"]) == NOT_DECAYED and no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars"])
def test_build_optimizer_groups_and_hyperparameters(name):
    model = Net()
    optimizer = build_optimizer(name, model, lr=0.3, weight_decay=0.05, momentum=0.7, betas=(0.8, 0.95), eta=0.01,
                                clip_lr=False, exclude_bias_n_norm=False)
    decay, no_decay = optimizer.param_groups
    assert names_of(model, decay["params"]) == DECAYED and decay["weight_decay"] == 0.05
    assert names_of(model, no_decay["params"]) == NOT_DECAYED and no_decay["weight_decay"] == 0.0
    assert all(g["lr"] == 0.3 for g in optimizer.param_groups)
    expected = {"adamw": {"betas": (0.8, 0.95)}, "sgd": {"momentum": 0.7},
                "lars": {"momentum": 0.7, "eta": 0.01, "clip_lr": False, "exclude_bias_n_norm": False}}[name]
    for key, value in expected.items():
        assert decay[key] == value, key


def test_build_optimizer_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("adam", Net(), lr=0.1, weight_decay=0.0)


def gradients(model: nn.Module, steps: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [{name: torch.randn(p.shape, generator=gen) for name, p in model.named_parameters() if p.requires_grad}
            for _ in range(steps)]


def run(optimizer, model: nn.Module, grads_by_step) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    for grads in grads_by_step:
        for name, g in grads.items():
            params[name].grad = g.clone()
        optimizer.step()
    return {name: params[name].detach().double() for name in grads_by_step[0]}


@pytest.mark.parametrize("steps", [1, 2])
def test_sgd_is_momentum_sgd_with_decay_on_weights_only(steps):
    model, lr, wd, momentum = Net(), 0.1, 0.05, 0.7
    start = {name: p.detach().double().clone() for name, p in model.named_parameters()}
    grads_by_step = gradients(model, steps)
    got = run(build_optimizer("sgd", model, lr=lr, weight_decay=wd, momentum=momentum), model, grads_by_step)
    for name in DECAYED | NOT_DECAYED:
        p, buf = start[name], None
        decay = wd if name in DECAYED else 0.0
        for grads in grads_by_step:
            direction = grads[name].double() + decay * p
            buf = direction if buf is None else momentum * buf + direction
            p = p - lr * buf
        torch.testing.assert_close(got[name], p, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("steps", [1, 3])
def test_adamw_is_decoupled_decay_on_weights_only(steps):
    model, lr, wd, (beta1, beta2), eps = Net(), 0.01, 0.1, (0.8, 0.95), 1e-8
    start = {name: p.detach().double().clone() for name, p in model.named_parameters()}
    grads_by_step = gradients(model, steps)
    got = run(build_optimizer("adamw", model, lr=lr, weight_decay=wd, betas=(beta1, beta2)), model, grads_by_step)
    for name in DECAYED | NOT_DECAYED:
        p, m, v = start[name], 0.0, 0.0
        decay = wd if name in DECAYED else 0.0
        for t, grads in enumerate(grads_by_step, start=1):
            g = grads[name].double()
            p = p * (1 - lr * decay)
            m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
            m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
            p = p - lr * m_hat / (v_hat.sqrt() + eps)
        torch.testing.assert_close(got[name], p, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars"])
def test_zero_gradients_shrink_weights_but_not_biases_or_norms(name):
    model = Net()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(name, model, lr=0.1, weight_decay=0.1)
    zeros = [{n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}] * 3
    got = run(optimizer, model, zeros)
    for n in DECAYED:
        assert got[n].norm() < start[n].double().norm() * 0.999, f"{name}: {n} did not decay"
    for n in NOT_DECAYED:
        assert torch.equal(got[n].float(), start[n]), f"{name}: {n} changed"
    if name == "adamw":
        for n in DECAYED:
            torch.testing.assert_close(got[n].float(), start[n] * (1 - 0.01) ** 3)
    assert math.isclose(float(model.frozen.norm()), float(start["frozen"].norm()))
