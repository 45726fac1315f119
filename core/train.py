"""The one training loop: step-based schedules, AMP, grad clipping, callbacks, exact resume.

Randomness is derived from (seed, step), so a run resumed from a checkpoint at step s replays
steps s+1.. exactly as an uninterrupted run would."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Iterator, Protocol

import torch
from torch import Tensor

from core.methods.base import Method
from core.optim import build_optimizer
from core.schedules import cosine, warmup_cosine
from core.seeds import step_seed

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything the loop applies. The service fills it from the resolved recipe
    (core/recipes.py); the defaults here are only for direct use of the library."""

    steps: int
    batch_size: int = 256
    optimizer: str = "adamw"  # adamw | sgd | lars
    lr: float = 1e-3  # peak LR, after any batch-size scaling
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    final_lr: float = 0.0
    final_weight_decay: float | None = None  # cosine weight-decay schedule to this value (DINO)
    momentum: float = 0.9  # SGD / LARS
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    eta: float = 0.02  # LARS trust coefficient
    clip_lr: bool = True  # LARS
    exclude_bias_n_norm: bool = True  # LARS
    grad_clip: float | None = None
    grad_clip_mode: str = "global"  # global | per_parameter (DINO's clip_gradients)
    freeze_last_layer_steps: int = 0  # parameters named "last_layer" get no update this long (DINO)
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 | fp16
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only the final checkpoint


class Callbacks:
    """Hooks the loop calls; the service implements them to write metrics and checkpoints."""

    def on_log(self, step: int, logs: dict[str, float]) -> None: ...

    def should_stop(self, step: int) -> str | None:
        """Return a reason to stop (e.g. 'cancelled'), or None to continue."""
        return None

    def on_checkpoint(self, step: int, state: dict, final: bool) -> None: ...


class BatchStream(Protocol):
    """A dataset too large for memory (e.g. WebDataset shards): uint8 (B, C, H, W) batches from
    `start_step` on, the same batches for the same (seed, step) so that resume is exact."""

    def batches(self, batch_size: int, seed: int, start_step: int) -> Iterator[Tensor]: ...


@dataclass
class TrainResult:
    step: int
    reason: str  # completed | cancelled | nan | <callback's reason>
    logs: dict


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(step_seed(seed, step))


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(seed, epoch, stream=1)))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> Tensor:
    """The indices of step `step`: a seeded permutation per epoch, last partial batch dropped."""
    per_epoch = n // batch_size
    epoch, within = divmod(step, per_epoch)
    return epoch_order(n, seed, epoch)[within * batch_size : (within + 1) * batch_size]


def training_state(method: Method, optimizer, scaler, step: int, config: TrainConfig) -> dict:
    """Everything to resume, plus what the run was given: the loop's config, the method's
    hyper-parameters and its views."""
    return {"method": method.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "step": step, "config": asdict(config),
            "hparams": dict(getattr(method, "hparams", {})),
            "views": method.views.config.to_dict() if method.views is not None else None}  # text methods have none


def train(method: Method, images: Tensor | BatchStream, config: TrainConfig, device: str | torch.device = "cpu",
          callbacks: Callbacks | None = None, resume: dict | None = None) -> TrainResult:
    """Train `method` on uint8 `images` (N, C, H, W), or on a BatchStream, for config.steps
    optimiser steps."""
    callbacks = callbacks or Callbacks()
    device = torch.device(device)
    streamed = not isinstance(images, Tensor)
    if not streamed and config.batch_size > len(images):
        raise ValueError(f"batch size {config.batch_size} is larger than the dataset ({len(images)} items)")
    method.to(device).train()
    optimizer = build_optimizer(config.optimizer, method, config.lr, config.weight_decay, momentum=config.momentum,
                                betas=tuple(config.betas), eta=config.eta, clip_lr=config.clip_lr,
                                exclude_bias_n_norm=config.exclude_bias_n_norm)
    last_layer = [p for name, p in method.named_parameters() if "last_layer" in name]
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
    start = 0
    if resume is not None:
        method.load_state_dict(resume["method"])
        optimizer.load_state_dict(resume["optimizer"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        start = int(resume["step"])
    if streamed:
        stream = iter(images.batches(config.batch_size, config.seed, start))
    else:
        pinned = images.pin_memory() if device.type == "cuda" else images
    logs: dict[str, float] = {}
    window_start, window_steps = time.perf_counter(), 0
    step = start
    while step < config.steps:
        reason = callbacks.should_stop(step)
        if reason:
            callbacks.on_checkpoint(step, training_state(method, optimizer, scaler, step, config), final=True)
            return TrainResult(step, reason, logs)
        torch.manual_seed(step_seed(config.seed, step, stream=3))  # dropout etc. replay on resume
        lr, weight_decay = apply_schedules(optimizer, config, step)
        if streamed:
            batch = next(stream).to(device, non_blocking=True)
        else:
            indices = batch_indices(len(images), config.batch_size, config.seed, step)
            batch = pinned[indices].to(device, non_blocking=True)
        gen = step_generator(config.seed, step, device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss, extra = method.training_step(batch, gen, step, config.steps)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        grad_norm = clip_gradients(method, optimizer, scaler, config)
        if step < config.freeze_last_layer_steps:
            for p in last_layer:  # DINO's cancel_gradients_last_layer
                p.grad = None
        scale_before = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        if scale_before is None or scaler.get_scale() >= scale_before:
            method.after_step(step, config.steps)  # the scaler skips a step with inf/NaN grads by lowering its scale
        step += 1
        window_steps += 1
        if step % config.log_every == 0 or step == config.steps:
            value = float(loss.detach())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - window_start
            logs = {"loss": value, "lr": lr, "weight_decay": weight_decay,
                    "img_per_s": window_steps * config.batch_size / max(elapsed, 1e-9),
                    **({"grad_norm": float(grad_norm)} if grad_norm is not None else {}),
                    **{k: float(v) for k, v in extra.items()}}
            callbacks.on_log(step, logs)
            window_start, window_steps = time.perf_counter(), 0
            if not math.isfinite(value):
                return TrainResult(step, "nan", logs)
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            callbacks.on_checkpoint(step, training_state(method, optimizer, scaler, step, config), final=False)
    callbacks.on_checkpoint(step, training_state(method, optimizer, scaler, step, config), final=True)
    return TrainResult(step, "completed", logs)


def apply_schedules(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int) -> tuple[float, float]:
    """Set this step's LR (linear warm-up, then cosine to final_lr) and weight decay (constant,
    or cosine to final_weight_decay) on every parameter group; groups excluded from decay
    (biases, norms) keep 0."""
    lr = warmup_cosine(step, config.steps, config.lr, config.warmup_steps, config.final_lr)
    weight_decay = config.weight_decay
    if config.final_weight_decay is not None:
        weight_decay = cosine(step, config.steps, config.weight_decay, config.final_weight_decay)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if group.get("decay", True):
            group["weight_decay"] = weight_decay
    return lr, weight_decay


def clip_gradients(method: Method, optimizer, scaler, config: TrainConfig) -> Tensor | None:
    """Clip to config.grad_clip: one norm over all gradients ("global", torch's
    clip_grad_norm_), or each parameter's own norm ("per_parameter", DINO's clip_gradients).
    Returns the total gradient norm before clipping (global mode), else None."""
    if not config.grad_clip:
        return None
    scaler.unscale_(optimizer)
    if config.grad_clip_mode == "per_parameter":
        for p in method.parameters():
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_([p], config.grad_clip)
        return None
    return torch.nn.utils.clip_grad_norm_(method.parameters(), config.grad_clip)
