"""The recipes against their reference code's numbers, as the training loop applies them:
per-group LRs (Barlow Twins' biases and norms, SimSiam's fixed-LR predictor)."""
from __future__ import annotations

import pytest
import torch

from core.methods.registry import build_resolved
from core.optim import build_optimizer
from core.recipes import resolve
from core import train as loop
from core.train import TrainConfig, apply_schedules, train


def one_large_barlow_step(n_items: int = 64, batch: int = 32):
    """One loop step of Barlow Twins' `large` recipe at its peak LR, on a ResNet-18 (ResNet-50's
    8192-wide projector is too large for a CPU test) with a 512-wide projector, on 32 px noise.
    Returns the method before and after and the resolved train settings."""
    resolved = resolve("barlow_twins", 32, n_items, {
        "scale": "large", "backbone": "resnet18", "steps": 1, "warmup_steps": 0, "batch_size": batch,
        "method_options": {"proj_hidden_dim": 512, "proj_dim": 512}})
    torch.manual_seed(0)
    method = build_resolved(resolved)
    before = {name: p.detach().clone() for name, p in method.named_parameters()}
    images = torch.randint(0, 256, (n_items, 3, 32, 32), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    train(method, images, TrainConfig(**resolved["train"]))
    return method, before, resolved["train"]


def test_barlow_large_gives_biases_and_norms_the_reference_lr():
    method, before, settings = one_large_barlow_step()
    lr = 0.2 * 32 / 256  # --learning-rate-weights 0.2 x batch / 256
    assert settings["lr"] == pytest.approx(lr)
    assert settings["lr_groups"] == {"biases_and_norms": {"lr_scale": pytest.approx(0.0048 / 0.2)}}
    moved, size = 0.0, 0.0
    for name, p in method.named_parameters():
        if p.ndim != 1:
            continue
        # the first step of plain momentum SGD (LARS skips 1-D parameters): p -= lr_biases * grad
        expected = before[name] - 0.0048 * 32 / 256 * p.grad
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7, msg=name)
        moved += float((p.detach() - before[name]).pow(2).sum())
        size += float(before[name].pow(2).sum())
    assert (moved / size) ** 0.5 < 0.05  # a small fraction of the bias/norm vector's size


def test_lr_scale_holds_through_warm_up_and_fixed_lr_keeps_the_peak():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    groups = {"biases_and_norms": {"lr_scale": 0.1}, "2": {"fixed_lr": True}}
    config = TrainConfig(steps=100, optimizer="sgd", lr=0.5, warmup_steps=10, final_lr=0.0, lr_groups=groups)
    optimizer = build_optimizer("sgd", model, lr=0.5, weight_decay=1e-4, lr_groups=groups)
    owner = {id(p): name for name, p in model.named_parameters()}
    for step in (0, 4, 9, 50, 99):
        scheduled = 0.5 * (step + 1) / 10 if step < 10 else None
        lr, _ = apply_schedules(optimizer, config, step)
        if scheduled is not None:
            assert lr == pytest.approx(scheduled)
        for group in optimizer.param_groups:
            for p in group["params"]:
                name = owner[id(p)]
                if name == "2.weight":  # the fixed-LR module; its bias matches the first selector
                    want = 0.5
                else:
                    want = lr * (0.1 if p.ndim == 1 else 1.0)
                assert group["lr"] == pytest.approx(want), (step, name)


def test_simsiam_predictor_keeps_the_peak_lr_in_the_loop(monkeypatch):
    resolved = resolve("simsiam", 16, 64, {"steps": 3, "batch_size": 32, "backbone": "small_cnn",
                                           "backbone_options": {"width": 8},
                                           "method_options": {"proj_hidden_dim": 32, "proj_dim": 16,
                                                              "pred_hidden_dim": 8}})
    assert resolved["train"]["lr_groups"] == {"predictor": {"fixed_lr": True}}
    torch.manual_seed(0)
    method = build_resolved(resolved, in_channels=1)
    names = {id(p): n for n, p in method.named_parameters()}
    lrs, real = [], loop.apply_schedules

    def spy(optimizer, config, step):  # the LRs the optimiser holds for each step, as the loop set them
        out = real(optimizer, config, step)
        lrs.append({names[id(g["params"][0])].startswith("predictor."): g["lr"]
                    for g in optimizer.param_groups if g["params"]})
        return out

    monkeypatch.setattr(loop, "apply_schedules", spy)
    train(method, torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8),
          TrainConfig(**{**resolved["train"], "warmup_steps": 2}))
    peak = 0.5 * 32 / 256
    assert [d[True] for d in lrs] == pytest.approx([peak] * 3)  # the predictor
    assert [d[False] for d in lrs][:2] == pytest.approx([peak / 2, peak])  # the rest warms up
