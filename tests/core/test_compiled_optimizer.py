"""The compiled optimiser update (core/step.py CompiledStep.optimizer_step): the same parameters as
the eager update under a changing LR and weight decay, no new graph for a new LR, and a "whole" run
whose checkpoint, LRs stored as floats, resumes exactly.

Backend "eager" (dynamo's capture, eager kernels) for every optimiser, where an update goes wrong
(a Python float read once and frozen into the graph, a tensor LR read on the host); "aot_eager"
(AOT autograd's functionalised graph, what inductor compiles) for two. Inductor's C++ build is too
slow for a CPU test."""
from __future__ import annotations

import functools

import pytest
import torch
import torch._dynamo

import core.step
from core.checkpoint import load_tree, save_tree
from core.optim import build_optimizer, load_optimizer_state, optimizer_state
from core.schedules import warmup_cosine
from core.step import CompiledStep, forward_backward
from core.train import Callbacks, TrainConfig, apply_schedules, train
from tests.core.tiny import build_tiny, digits_16

OPTIMIZERS = ["adamw", "sgd", "lars", "adagrad"]
PEAK_LR = {"adamw": 1e-3, "sgd": 0.05, "lars": 0.3, "adagrad": 0.05}
STEPS = 10
# The compiled update scales by float32 tensors (a product rounded, then added) where the eager one
# passes a double as alpha, applies torch's weight decay as its own kernels, and AdamW's capturable
# form computes its bias corrections in float32 tensors: 2.4e-7 at most after ten updates (measured).
RTOL, ATOL = 1e-5, 1e-6


pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def schedule(name: str, steps: int = STEPS, **extra) -> TrainConfig:
    """Warm-up then cosine LR, and a cosine weight decay (DINO's), so that both change every step."""
    return TrainConfig(steps=steps, batch_size=16, optimizer=name, lr=PEAK_LR[name], warmup_steps=3,
                       final_lr=PEAK_LR[name] / 10, weight_decay=1e-3, final_weight_decay=1e-2, **extra)


@functools.cache
def gradients() -> list[dict[str, torch.Tensor]]:
    """STEPS sets of real gradients: the tiny SimCLR's at its initial weights, a batch of 32 digits
    with new views each step. Both updates are fed the same ones, so that what is compared is the
    update alone, not the training's sensitivity to rounding (which grows the ~1e-8 of one step
    to ~1e-4 in ten at these LRs, measured)."""
    method = build_tiny("simclr").train()
    images = digits_16(32)[0]
    sets = []
    for step in range(STEPS):
        torch.manual_seed(1000 + step)
        method.zero_grad(set_to_none=True)
        forward_backward(method, images, step, STEPS, None)
        sets.append({k: p.grad.clone() for k, p in method.named_parameters()})
    return sets


def updates(name: str, backend: str | None):
    """STEPS updates of the tiny SimCLR's parameters with `gradients()` under the loop's schedule,
    compiled with `backend` (None: eager). Returns the parameters, the frames each update compiled,
    and the LRs each update was given."""
    method = build_tiny("simclr").train()
    config = schedule(name)
    optimizer = build_optimizer(name, method, config.lr, config.weight_decay, compiled=backend is not None)
    step_fn = CompiledStep(method, backend=backend) if backend else None
    frames, given = [], []
    for step, grads in enumerate(gradients()):
        apply_schedules(optimizer, config, step)
        given.append([group["lr"] for group in optimizer.param_groups])
        for key, p in method.named_parameters():
            p.grad = grads[key].clone()  # the updates change .grad in place (L2 weight decay)
        if step_fn:
            before = step_fn.compiled_frames
            step_fn.optimizer_step(optimizer)
            frames.append(step_fn.compiled_frames - before)
        else:
            optimizer.step()
    return {k: v.detach().clone() for k, v in method.named_parameters()}, frames, given


CASES = [(n, "eager") for n in OPTIMIZERS] + [("adamw", "aot_eager"), ("lars", "aot_eager")]


@pytest.mark.parametrize("name,backend", CASES)
def test_compiled_update_matches_the_eager_update(name, backend):
    eager, _, _ = updates(name, None)
    compiled, frames, _ = updates(name, backend)
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, rtol=RTOL, atol=ATOL, msg=lambda m: f"{key}: {m}")
    assert frames[0] >= 1, "the update was not compiled"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_new_lr_is_not_a_new_graph(name):
    _, frames, given = updates(name, "eager")
    # step 0: the weight decay's graph and the step's (LARS: one); step 1: the step's once more where
    # it branches on the state step 0 created (SGD's and LARS's momentum buffers); then none
    assert frames[0] >= 1 and sum(frames[:2]) <= 3, frames
    assert frames[2:] == [0] * (STEPS - 2), frames
    config = schedule(name)
    for lrs in given:  # the tensors the update read: the same objects, refilled
        assert all(lr is first for lr, first in zip(lrs, given[0]))
    final = [float(lr) for lr in given[-1]]
    assert final == pytest.approx([warmup_cosine(STEPS - 1, STEPS, config.lr, 3, config.final_lr)] * len(final))


def test_checkpoint_of_a_compiled_update_loads_eagerly_and_back(tmp_path):
    """A checkpoint holds float LRs; the run that loads it keeps its own execution options (AdamW
    capturable or not, and where its step counts live) and its own LR form (tensors or floats)."""
    for source_compiled in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
        source = build_optimizer("adamw", model, 0.01, 0.05, compiled=source_compiled)
        model(torch.randn(6, 4)).square().sum().backward()
        if source_compiled:  # capturable AdamW runs on a CPU only under torch.compile
            CompiledStep(model, backend="eager").optimizer_step(source)
        else:
            source.step()
        save_tree(tmp_path / "state.safetensors", optimizer_state(source))
        saved, _ = load_tree(tmp_path / "state.safetensors")
        assert all(type(group["lr"]) is float for group in saved["param_groups"])
        target = build_optimizer("adamw", model, 0.5, 0.05, compiled=not source_compiled)
        load_optimizer_state(target, saved)
        for group in target.param_groups:
            assert group["capturable"] is (not source_compiled)
            assert isinstance(group["lr"], torch.Tensor) is (not source_compiled)
            assert float(group["lr"]) == pytest.approx(0.01)
        for p in model.parameters():
            torch.testing.assert_close(target.state[p]["exp_avg"], source.state[p]["exp_avg"])
            torch.testing.assert_close(target.state[p]["step"], source.state[p]["step"].float(), check_dtype=False)


class EagerBackendStep(CompiledStep):
    """The loop's compiled step with dynamo's eager backend, recording the LRs each update read."""
    made: list["EagerBackendStep"] = []

    def __init__(self, method, autocast_dtype=None, mode=None, backend="inductor"):
        super().__init__(method, autocast_dtype, mode, backend="eager")
        self.lrs: list[list] = []
        EagerBackendStep.made.append(self)

    def optimizer_step(self, optimizer):
        self.lrs.append([(type(g["lr"]), g["lr"].device, float(g["lr"])) for g in optimizer.param_groups])
        super().optimizer_step(optimizer)


class Kept(Callbacks):
    def __init__(self, folder):
        self.folder = folder

    def on_checkpoint(self, step, state, final):
        save_tree(self.folder / f"{step}.safetensors", state)


@pytest.mark.parametrize("name", ["adamw", "lars"])
def test_compile_whole_resumes_exactly(name, monkeypatch, tmp_path, one_thread):
    monkeypatch.setattr(core.step, "CompiledStep", EagerBackendStep)
    EagerBackendStep.made.clear()
    images = digits_16(64)[0]
    config = schedule(name, steps=6, compile="whole", checkpoint_every=3, log_every=1)
    (tmp_path / "full").mkdir(), (tmp_path / "resumed").mkdir()
    full = train(build_tiny("simclr"), images, config, callbacks=Kept(tmp_path / "full"))
    state, _ = load_tree(tmp_path / "full" / "3.safetensors")
    assert all(type(group["lr"]) is float for group in state["optimizer"]["param_groups"])
    resumed = train(build_tiny("simclr", seed=1), images, config, callbacks=Kept(tmp_path / "resumed"), resume=state)
    assert (full.reason, full.step, resumed.reason, resumed.step) == ("completed", 6, "completed", 6)
    ends = [load_tree(tmp_path / run / "6.safetensors")[0] for run in ("full", "resumed")]
    for key, value in ends[0]["method"].items():
        torch.testing.assert_close(ends[1]["method"][key], value, rtol=0, atol=0, msg=lambda m: f"{key}: {m}")
    for a, b in zip(ends[0]["optimizer"]["state"].values(), ends[1]["optimizer"]["state"].values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    whole_run, resumed_run = EagerBackendStep.made
    expected = [warmup_cosine(s, 6, config.lr, 3, config.final_lr) for s in range(6)]
    for run, steps in ((whole_run, range(6)), (resumed_run, range(3, 6))):
        assert [lrs[0][2] for lrs in run.lrs] == pytest.approx([expected[s] for s in steps])
        assert all(kind is torch.Tensor and device.type == "cpu" for lrs in run.lrs for kind, device, _ in lrs)
