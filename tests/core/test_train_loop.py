"""The training loop applies what the resolved recipe says: LR and weight-decay schedules, no decay
for biases and norms, gradient clipping, AMP, the NaN stop, a frozen last layer, and exact resume.

Each test trains a tiny regression "method" whose loss we control, and watches the optimiser
through a step pre-hook, so it sees exactly what the optimiser applies at every step."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from core.augment import ViewConfig, ViewMaker
from core.methods.base import Method
from core.seeds import step_seed
from core.train import Callbacks, TrainConfig, step_generator, train

OPTIMIZERS = ["adamw", "sgd", "lars"]
DECAYED = {"backbone.1.weight", "backbone.5.weight"}  # the two Linear weights
NOT_DECAYED = {"backbone.1.bias", "backbone.2.weight", "backbone.2.bias", "backbone.5.bias"}  # biases, BatchNorm


class Regression(Method):
    """Fits a fixed linear map of the flattened 4x4 image: Linear (with bias) + BatchNorm + Linear.
    Uses the step generator (input noise) and the global RNG (dropout), so resume must replay both.
    `loss_scale` makes gradients as large as a test needs."""

    name = "regression"

    def __init__(self, seed: int = 0, dropout: float = 0.0, loss_scale: float = 1.0):
        torch.manual_seed(seed)
        backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(8, 4))
        super().__init__(backbone, ViewMaker(ViewConfig(), mean=[0.5], std=[0.5]))  # recorded, not used
        self.register_buffer("target_map", torch.randn(16, 4, generator=torch.Generator().manual_seed(99)) / 4)
        self.loss_scale = loss_scale
        self.current_step: int | None = None
        self.after_steps: list[int] = []

    def output(self, images: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float().flatten(1) / 255
        x = x + 0.01 * torch.randn(x.shape, generator=gen, device=x.device)
        return self.backbone(x), x @ self.target_map

    def training_step(self, images, gen, step, total_steps):
        self.current_step = step
        prediction, target = self.output(images, gen)
        loss = self.loss_scale * F.mse_loss(prediction.float(), target)
        return loss, {"step_seen": float(step)}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        self.after_steps.append(step)


class Recorder(Callbacks):
    def __init__(self, keep_at: int | None = None, stop_at: int | None = None):
        self.logs: dict[int, dict[str, float]] = {}
        self.keep_at, self.kept, self.stop_at = keep_at, None, stop_at

    def on_log(self, step, logs):
        self.logs[step] = dict(logs)

    def should_stop(self, step):
        return "cancelled" if step == self.stop_at else None

    def on_checkpoint(self, step, state, final):
        if step == self.keep_at:
            self.kept = copy.deepcopy(state)  # the state holds live tensors; a service writes them out at once


class StepSpy:
    """Records, at every optimiser step the loop actually takes, the method's step index, each
    parameter group's LR and weight decay (by parameter name), and the gradients about to be applied."""

    def __init__(self, method: Method):
        self.method = method
        self.names = {id(p): name for name, p in method.named_parameters()}
        self.records: list[dict] = []

    def __enter__(self):
        self.handle = register_optimizer_step_pre_hook(self.hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    def hook(self, optimizer, args, kwargs):
        groups = [{"names": {self.names[id(p)] for p in g["params"]}, "lr": g["lr"], "weight_decay": g["weight_decay"]}
                  for g in optimizer.param_groups]
        grads = {self.names[id(p)]: p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]
                 if p.grad is not None}
        self.records.append({"step": self.method.current_step, "groups": groups, "grads": grads})

    @property
    def steps(self) -> list[int]:
        return [r["step"] for r in self.records]


pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 4, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def config(steps: int, **overrides) -> TrainConfig:
    return TrainConfig(**{"steps": steps, "batch_size": 16, "optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.0,
                          "log_every": 1, "seed": 0, **overrides})


def expected_lr(step: int, total: int, peak: float, warmup: int, final: float) -> float:
    """Linear warm-up reaching the peak at the end of step warmup-1, then a half cosine from the
    peak (at step `warmup`) towards `final` (at step `total`)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / (total - warmup)
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * t))


def group_of(record: dict, name: str) -> dict:
    return next(g for g in record["groups"] if name in g["names"])


def named(method: Method) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in method.named_parameters()}


# --- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_lr_warms_up_linearly_then_follows_cosine_to_final_lr(optimizer):
    method, recorder = Regression(), Recorder()
    cfg = config(12, optimizer=optimizer, lr=0.1, warmup_steps=3, final_lr=0.01, weight_decay=1e-3)
    with StepSpy(method) as spy:
        result = train(method, images(), cfg, callbacks=recorder)
    assert result.reason == "completed"
    assert spy.steps == list(range(12))
    for record in spy.records:
        want = expected_lr(record["step"], 12, 0.1, 3, 0.01)
        assert [g["lr"] for g in record["groups"]] == pytest.approx([want] * len(record["groups"]), rel=1e-12)
        assert recorder.logs[record["step"] + 1]["lr"] == pytest.approx(want, rel=1e-12)
    lrs = [r["groups"][0]["lr"] for r in spy.records]
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(0.1)  # the peak at the end of warm-up,
    assert lrs[3] == pytest.approx(0.1)  # where the cosine starts (as in DINO's cosine_scheduler),
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))  # then strictly down
    assert lrs[-1] > 0.01  # the last step is one step short of final_lr


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_weight_decay_follows_cosine_to_final_and_no_decay_group_keeps_zero(optimizer):
    method, recorder = Regression(), Recorder()
    cfg = config(10, optimizer=optimizer, lr=0.05, weight_decay=0.04, final_weight_decay=0.4)
    with StepSpy(method) as spy:
        train(method, images(), cfg, callbacks=recorder)
    assert spy.steps == list(range(10))
    for record in spy.records:
        s = record["step"]
        want = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * s / 10))
        decayed, excluded = group_of(record, "backbone.1.weight"), group_of(record, "backbone.1.bias")
        assert decayed["names"] == DECAYED and excluded["names"] == NOT_DECAYED
        assert decayed["weight_decay"] == pytest.approx(want, rel=1e-12)
        assert excluded["weight_decay"] == 0.0
        assert recorder.logs[s + 1]["weight_decay"] == pytest.approx(want, rel=1e-12)
    assert spy.records[0]["groups"][0]["weight_decay"] == pytest.approx(0.04)


def test_weight_decay_is_constant_without_final_weight_decay():
    method = Regression()
    with StepSpy(method) as spy:
        train(method, images(), config(5, optimizer="sgd", weight_decay=0.03))
    for record in spy.records:
        assert group_of(record, "backbone.5.weight")["weight_decay"] == 0.03
        assert group_of(record, "backbone.2.weight")["weight_decay"] == 0.0


class ZeroGradient(Regression):
    """A loss that depends on the parameters with zero gradient: only weight decay moves them."""

    def training_step(self, images, gen, step, total_steps):
        prediction, _ = self.output(images, gen)
        return prediction.sum() * 0.0, {}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_weights_decay_but_biases_and_norm_parameters_do_not(optimizer):
    method = ZeroGradient()
    before = named(method)
    train(method, images(), config(3, optimizer=optimizer, lr=0.1, weight_decay=0.1))
    after = named(method)
    assert set(before) == DECAYED | NOT_DECAYED
    for name in DECAYED:
        assert after[name].norm() < before[name].norm() * 0.999, f"{optimizer}: {name} did not decay"
    for name in NOT_DECAYED:
        assert torch.equal(after[name], before[name]), f"{optimizer}: {name} was decayed"
    if optimizer == "adamw":  # zero gradients: AdamW only multiplies by (1 - lr_t * wd) each step
        factor = math.prod(1 - 0.1 * expected_lr(s, 3, 0.1, 0, 0.0) for s in range(3))
        for name in DECAYED:
            torch.testing.assert_close(after[name], before[name] * factor)


# --- clipping ----------------------------------------------------------------------------------


def test_global_clip_bounds_the_total_norm_the_optimiser_sees_and_logs_grad_norm():
    method, recorder = Regression(loss_scale=1e3), Recorder()
    with StepSpy(method) as spy:
        train(method, images(), config(6, optimizer="sgd", lr=1e-4, grad_clip=0.5), callbacks=recorder)
    assert spy.steps == list(range(6))
    for record in spy.records:
        seen = torch.linalg.vector_norm(torch.stack([g.norm() for g in record["grads"].values()]))
        logged = recorder.logs[record["step"] + 1]["grad_norm"]
        assert logged > 0.5, "the test needs gradients above the clip"
        assert seen <= 0.5 * (1 + 1e-5)
        assert float(seen) == pytest.approx(min(logged, 0.5), rel=1e-4)  # scaled as a whole, to the clip


def test_per_parameter_clip_bounds_each_tensor_norm():
    method = Regression(loss_scale=1e3)
    with StepSpy(method) as spy:
        train(method, images(), config(4, optimizer="sgd", lr=1e-4, grad_clip=0.5, grad_clip_mode="per_parameter"))
    assert spy.steps == list(range(4))
    for record in spy.records:
        norms = {name: float(g.norm()) for name, g in record["grads"].items()}
        assert all(n <= 0.5 * (1 + 1e-5) for n in norms.values()), norms
        assert sum(n == pytest.approx(0.5, rel=1e-4) for n in norms.values()) >= 2, norms  # several were clipped
        assert math.sqrt(sum(n * n for n in norms.values())) > 0.5  # not one global norm


def test_without_clip_no_grad_norm_is_logged():
    recorder = Recorder()
    train(Regression(), images(), config(2), callbacks=recorder)
    assert "grad_norm" not in recorder.logs[2]


# --- precision ---------------------------------------------------------------------------------


def fp16_autocast_available() -> str | None:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3))
        torch.amp.GradScaler("cpu")
    except (RuntimeError, TypeError) as error:
        return f"fp16 autocast / GradScaler on CPU is unsupported in torch {torch.__version__}: {error}"
    return None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_with_finite_decreasing_loss(precision):
    if precision == "fp16" and (reason := fp16_autocast_available()):
        pytest.skip(reason)
    recorder = Recorder()
    result = train(Regression(loss_scale=0.1), images(), config(20, precision=precision, lr=2e-2), callbacks=recorder)
    losses = [recorder.logs[s]["loss"] for s in range(1, 21)]
    assert result.reason == "completed"
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses


def test_fp16_clips_the_unscaled_gradients():
    if reason := fp16_autocast_available():
        pytest.skip(reason)
    method = Regression(loss_scale=10.0)
    with StepSpy(method) as spy:
        train(method, images(), config(4, optimizer="sgd", lr=1e-4, grad_clip=0.5, precision="fp16"))
    assert spy.records
    for record in spy.records:
        seen = torch.linalg.vector_norm(torch.stack([g.norm() for g in record["grads"].values()]))
        assert float(seen) == pytest.approx(0.5, rel=1e-3)  # not 0.5 / scale: unscaled before clipping


class InfiniteGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by inf (finite loss, inf/NaN grads)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class OverflowAt(Regression):
    def __init__(self, overflow_step: int):
        super().__init__(loss_scale=0.1)
        self.overflow_step = overflow_step
        self.params_at: dict[int, dict[str, torch.Tensor]] = {}

    def training_step(self, images, gen, step, total_steps):
        self.current_step = step
        self.params_at[step] = named(self)
        prediction, target = self.output(images, gen)
        if step == self.overflow_step:
            prediction = InfiniteGradient.apply(prediction)
        return self.loss_scale * F.mse_loss(prediction.float(), target), {}

    def after_step(self, step, total_steps):
        from core.methods.momentum import _applied

        self.applied = getattr(self, "applied", []) + [float(_applied.get())]  # the weight EMA updates take
        super().after_step(step, total_steps)


def test_fp16_step_with_inf_grads_skips_the_optimiser_step_and_the_ema():
    """after_step runs every step (the host does not read whether the scaler skipped), with EMA
    updates weighted 0 on the skipped one (core.methods.momentum.applied_only)."""
    if reason := fp16_autocast_available():
        pytest.skip(reason)
    method, recorder = OverflowAt(3), Recorder()
    with StepSpy(method) as spy:
        result = train(method, images(), config(6, precision="fp16", lr=1e-2), callbacks=recorder)
    assert result.reason == "completed"
    assert spy.steps == [0, 1, 2, 4, 5]
    assert method.after_steps == [0, 1, 2, 3, 4, 5]
    assert method.applied == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    for name, value in method.params_at[3].items():
        assert torch.equal(method.params_at[4][name], value), name  # the skipped step changed nothing
    assert any(not torch.equal(method.params_at[5][n], v) for n, v in method.params_at[4].items())
    assert math.isfinite(recorder.logs[4]["loss"])  # the loss itself was finite


# --- stopping, frozen last layer, seeds and resume ---------------------------------------------


class NanFrom(Regression):
    def __init__(self, nan_step: int):
        super().__init__()
        self.nan_step = nan_step
        self.steps_run: list[int] = []

    def training_step(self, images, gen, step, total_steps):
        self.steps_run.append(step)
        loss, logs = super().training_step(images, gen, step, total_steps)
        return (loss * float("nan") if step >= self.nan_step else loss), logs


@pytest.mark.parametrize("nan_step, stop_step", [(7, 10), (9, 10), (10, 15), (0, 5)])
def test_nan_loss_stops_at_the_next_log_step(nan_step, stop_step):
    method, recorder = NanFrom(nan_step), Recorder()
    result = train(method, images(), config(20, log_every=5), callbacks=recorder)
    assert result.reason == "nan"
    assert result.step == stop_step
    assert method.steps_run == list(range(stop_step))
    assert math.isnan(result.logs["loss"]) and sorted(recorder.logs)[-1] == stop_step
    assert all(math.isfinite(logs["loss"]) for step, logs in recorder.logs.items() if step < stop_step)


class WithLastLayer(Regression):
    """A DINO-like head: the backbone, then a layer named last_layer."""

    def __init__(self):
        super().__init__()
        self.head = nn.Module()
        self.head.last_layer = nn.Linear(4, 4)
        self.last_layer_at: list[torch.Tensor] = []

    def training_step(self, images, gen, step, total_steps):
        self.current_step = step
        self.last_layer_at.append(self.head.last_layer.weight.detach().clone())
        prediction, target = self.output(images, gen)
        return F.mse_loss(self.head.last_layer(prediction), target), {}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_last_layer_is_frozen_for_the_first_steps_then_trains(optimizer):
    method = WithLastLayer()
    initial = method.head.last_layer.weight.detach().clone()
    backbone_before = method.backbone[1].weight.detach().clone()
    with StepSpy(method) as spy:
        train(method, images(), config(6, optimizer=optimizer, lr=0.05, weight_decay=0.05, freeze_last_layer_steps=3))
    for step in range(4):  # the weights seen at the start of steps 0..3: no update during steps 0, 1, 2
        assert torch.equal(method.last_layer_at[step], initial), step
    assert not torch.equal(method.last_layer_at[4], initial)  # step 3 updated it
    assert not torch.equal(method.head.last_layer.weight, method.last_layer_at[4])
    assert not torch.equal(method.backbone[1].weight, backbone_before)  # the rest trained all along
    for record in spy.records:
        assert ("head.last_layer.weight" in record["grads"]) == (record["step"] >= 3)
        assert ("head.last_layer.bias" in record["grads"]) == (record["step"] >= 3)


def test_step_seeds_do_not_collide_where_the_linear_mix_did():
    old_mix = 1_000_003
    assert 0 * old_mix + old_mix == 1 * old_mix + 0  # the collision the linear mix had
    assert step_seed(0, old_mix) != step_seed(1, 0)
    grid = [(seed, step) for seed in range(3) for step in (0, 1, old_mix - 1, old_mix, old_mix + 1, 2 * old_mix)]
    assert len({step_seed(seed, step) for seed, step in grid}) == len(grid)
    assert len({step_seed(2, 5, stream) for stream in range(4)}) == 4
    assert step_seed(3, 7) == step_seed(3, 7) and 0 <= step_seed(3, 7) < 2**63
    a = torch.rand(8, generator=step_generator(0, old_mix, torch.device("cpu")))
    b = torch.rand(8, generator=step_generator(1, 0, torch.device("cpu")))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("optimizer, precision", [("sgd", "fp32"), ("lars", "fp32"), ("adamw", "fp32"),
                                                  ("adamw", "fp16")])
def test_resume_from_checkpoint_replays_the_uninterrupted_run_exactly(optimizer, precision):
    if precision == "fp16" and (reason := fp16_autocast_available()):
        pytest.skip(reason)
    cfg = config(6, optimizer=optimizer, precision=precision, lr=0.05, warmup_steps=2, weight_decay=0.01,
                 final_weight_decay=0.1, grad_clip=1.0, checkpoint_every=3)
    straight, whole = Regression(dropout=0.2), Recorder(keep_at=3)
    assert train(straight, images(), cfg, callbacks=whole).reason == "completed"
    assert whole.kept is not None and whole.kept["step"] == 3

    resumed, second = Regression(seed=123, dropout=0.2), Recorder()  # a different init: all from the state
    assert train(resumed, images(), cfg, callbacks=second, resume=whole.kept).reason == "completed"
    assert sorted(second.logs) == [4, 5, 6]
    for step in (4, 5, 6):
        assert second.logs[step]["loss"] == whole.logs[step]["loss"]
    resumed_state = resumed.state_dict()
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed_state[key], value), key


def test_cancelled_run_checkpoints_and_resumes_exactly():
    cfg = config(6, optimizer="sgd", lr=0.05, warmup_steps=2)
    straight = Regression(dropout=0.2)
    train(straight, images(), cfg)
    stopped, first = Regression(dropout=0.2), Recorder(keep_at=3, stop_at=3)
    result = train(stopped, images(), cfg, callbacks=first)
    assert (result.reason, result.step) == ("cancelled", 3) and first.kept["step"] == 3
    resumed = Regression(seed=7, dropout=0.2)
    train(resumed, images(), cfg, resume=first.kept)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_epoch_orders_visit_each_item_once_per_epoch_and_replay_from_the_seed():
    from core.train import EpochOrders

    orders, again = EpochOrders(50, 8, seed=3, device=torch.device("cpu")), EpochOrders(50, 8, 3, torch.device("cpu"))
    per_epoch = 50 // 8
    for epoch in range(3):
        seen = torch.cat([orders.indices(epoch * per_epoch + i) for i in range(per_epoch)])
        assert len(set(seen.tolist())) == per_epoch * 8  # no repeats inside an epoch; the partial batch dropped
    assert torch.equal(again.indices(13), orders.indices(13))  # a resumed run draws the same batch
    assert not torch.equal(orders.indices(0), orders.indices(per_epoch))  # each epoch reshuffles
