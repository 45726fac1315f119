"""bf16 parameters with fp32 master weights (TrainConfig.param_dtype "bf16", core/masters.py): the
model computes with bf16 matrices, the optimiser updates fp32 masters, checkpoints hold the masters."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import core.precision
from core.masters import check_bf16_params
from core.train import Callbacks, TrainConfig, train
from tests.core.tiny import build_tiny, digits_16


class Recorder(Callbacks):
    """What the loop shows its callbacks: losses, the dtypes and values of the method's parameters
    between steps, and copies of every checkpoint's state."""

    def __init__(self, method):
        self.method, self.losses, self.dtypes, self.weights, self.states = method, [], [], {}, {}

    def on_log(self, step, logs):
        self.losses.append(logs["loss"])
        self.lr = logs["lr"]
        self.dtypes.append({(p.ndim >= 2, p.dtype) for p in self.method.parameters()})
        self.weights[step] = {k: v.detach().clone() for k, v in self.method.named_parameters()}

    def on_checkpoint(self, step, state, final):
        self.states[step] = copy.deepcopy(state)
        # what the service saves as the backbone file (workers/training.py reads the parts' state dicts)
        self.parts_dtypes = {v.dtype for v in self.method.parts()["backbone"].state_dict().values()}


def run(param_dtype: str, steps: int, resume=None, **options):
    torch.manual_seed(0)
    method = build_tiny("mae")
    images, _ = digits_16(256)
    recorder = Recorder(method)
    config = TrainConfig(steps=steps, batch_size=32, lr=2e-3, weight_decay=0.05, precision="bf16",
                         param_dtype=param_dtype, log_every=1, seed=0, **options)
    result = train(method, images, config, callbacks=recorder, resume=resume)
    return method, recorder, result


def flat(weights: dict) -> torch.Tensor:
    return torch.cat([v.float().flatten() for v in weights.values()])


def test_mae_trains_with_bf16_matrices_and_stays_close_to_fp32_autocast():
    seen = []
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append({p.dtype for g in opt.param_groups for p in g["params"]}))
    try:
        method, bf16, result = run("bf16", 15)
    finally:
        hook.remove()
    _, fp32, _ = run("fp32", 15)
    assert result.reason == "completed"
    # during training: matrices bf16, vectors (biases, norms) fp32; the optimiser updates fp32 masters only
    assert all(d == {(True, torch.bfloat16), (False, torch.float32)} for d in bf16.dtypes)
    assert all(d == {(False, torch.float32), (True, torch.float32)} for d in fp32.dtypes)
    assert seen and all(d == {torch.float32} for d in seen)
    assert sum(bf16.losses[-3:]) < sum(bf16.losses[:3])
    # the checkpoint and the method after training hold the fp32 masters
    final = bf16.states[15]["method"]
    assert {v.dtype for k, v in final.items() if v.is_floating_point()} == {torch.float32}
    assert bf16.parts_dtypes == {torch.float32}
    assert {p.dtype for p in method.parameters()} == {torch.float32}
    trained = [k for k, _ in method.named_parameters()]
    a = flat({k: final[k] for k in trained})
    b = flat({k: fp32.states[15]["method"][k] for k in trained})
    moved = flat({k: fp32.states[15]["method"][k] - build_tiny("mae").state_dict()[k] for k in trained})
    # measured: 0.26 % of the weights' norm, 5.1 % of what 15 AdamW steps moved them
    assert ((a - b).norm() / b.norm()).item() < 5e-3
    assert ((a - b).norm() / moved.norm()).item() < 0.1


def test_one_sgd_step_updates_the_master_by_lr_times_the_bf16_gradient():
    torch.manual_seed(0)
    method = build_tiny("mae")
    before = {k: v.detach().clone() for k, v in method.named_parameters()}
    grads = {}

    def keep(name):
        def hook(p):  # the first step's gradient, as it lands on the (bf16) parameter
            grads.setdefault(name, p.grad.clone())
        return hook

    for name, p in method.named_parameters():
        p.register_post_accumulate_grad_hook(keep(name))
    recorder = Recorder(method)
    images, _ = digits_16(256)
    config = TrainConfig(steps=2, batch_size=32, optimizer="sgd", momentum=0.0, lr=0.1, weight_decay=0.0,
                         precision="bf16", param_dtype="bf16", log_every=1, checkpoint_every=1, seed=0)
    train(method, images, config, callbacks=recorder)
    masters, params = recorder.states[1]["method"], recorder.weights[1]
    assert grads["backbone.patch_embed.weight"].dtype == torch.bfloat16
    for name, old in before.items():
        # master_old - lr * grad, rounded once: torch's SGD is p.add_(grad, alpha=-lr), a fused multiply-add
        # (a separate product and difference is up to one ulp away)
        expected = torch.add(old, grads[name].float(), alpha=-0.1)
        assert masters[name].dtype == torch.float32
        assert torch.equal(masters[name], expected), name
        assert torch.equal(params[name], expected.to(params[name].dtype)), name
        assert params[name].dtype == (torch.bfloat16 if old.ndim >= 2 else torch.float32)


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run():
    _, whole, _ = run("bf16", 6, checkpoint_every=3)
    _, resumed, result = run("bf16", 6, resume=whole.states[3], checkpoint_every=3)
    assert result.step == 6
    for part in ("method", "optimizer"):
        a, b = whole.states[6][part], resumed.states[6][part]
        flat_a, flat_b = _tensors(a), _tensors(b)
        assert flat_a.keys() == flat_b.keys()
        for key in flat_a:
            assert torch.equal(flat_a[key], flat_b[key]), (part, key)


def _tensors(tree, prefix=""):
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _tensors(value, f"{prefix}/{key}").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, value in enumerate(tree) for k, v in _tensors(value, f"{prefix}/{i}").items()}
    return {}


@pytest.mark.parametrize("name, precision, message", [
    ("byol", "bf16", "not available for byol"),
    ("dino", "bf16", "not available for dino"),
    ("mae", "fp32", "needs precision bf16"),
    ("mae", "fp16", "needs precision bf16"),
])
def test_bf16_params_refuse_ema_methods_and_other_precisions(name, precision, message):
    images, _ = digits_16(64)
    config = TrainConfig(steps=1, batch_size=32, precision=precision, param_dtype="bf16")
    with pytest.raises(ValueError, match=message):
        train(build_tiny(name), images, config)


def test_auto_precision_without_native_bf16_is_refused(monkeypatch):
    monkeypatch.setattr(core.precision, "native_bf16", lambda device: False)
    images, _ = digits_16(64)
    with pytest.raises(ValueError, match="resolves to fp32"):
        train(build_tiny("mae"), images, TrainConfig(steps=1, batch_size=32, precision="auto", param_dtype="bf16"))


def test_bf16_params_refuse_several_processes_and_compile_whole():
    method = build_tiny("mae")
    with pytest.raises(ValueError, match="one process"):
        check_bf16_params(method, "bf16", 2, "false")
    with pytest.raises(ValueError, match="compile 'whole'"):
        check_bf16_params(method, "bf16", 1, "whole")
    check_bf16_params(method, "bf16", 1, "true")  # compile of the backbone alone is fine
