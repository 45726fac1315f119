"""The one training loop: step-based schedules, AMP, grad clipping, callbacks, exact resume.

Randomness is derived from (seed, step), so a run resumed from a checkpoint at step s replays
steps s+1.. exactly as an uninterrupted run would.

Under torch.distributed (launched by torchrun) each rank trains on its slice of the same global
(seed, step) batch, wrapped in DistributedDataParallel; only rank 0 calls on_log and
on_checkpoint, and rank 0's should_stop decides for every rank. Checkpoints hold the method's own
tensors, the same whatever the world size, so a run can resume on a different one."""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Iterator, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from core import distributed
from core.augment import stored_crops
from core.masters import PARAM_DTYPES, Masters, check_bf16_params
from core.methods.base import Method
from core.methods.momentum import applied_only
from core.optim import build_optimizer, load_optimizer_state, optimizer_state
from core.precision import resolve_precision
from core.schedules import cosine, warmup_cosine
from core.seeds import step_seed

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything the loop applies. The service fills it from the resolved recipe
    (core/recipes.py); the defaults here are only for direct use of the library."""

    steps: int
    batch_size: int = 256
    optimizer: str = "adamw"  # adamw | sgd | lars | adagrad
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
    lr_groups: dict = field(default_factory=dict)  # selector -> {lr_scale, fixed_lr} (core.optim.lr_group_of)
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 | fp16 | auto (bf16 where the device has native bf16, else fp32)
    # fp32 | bf16: bf16 parameters, the optimiser on fp32 masters (core/masters.py); precision bf16, one process,
    # methods marked bf16_params_ok only
    param_dtype: str = "fp32"
    # true | false | auto: torch.compile the backbone (auto: where it was measured to help); whole: compile the
    # step's views, forward, loss and backward as one graph, the optimiser update as another (core/step.py; one
    # process, not fp16), its random draws from the global generator seeded per step instead of the per-step
    # generator
    compile: str = "false"
    cuda_graphs: bool = False  # CUDA graphs (compile mode reduce-overhead) of the backbone, or of the whole step; CUDA only
    channels_last: bool | None = None  # None: on for convolutional backbones on GPUs
    log_every: int = 10
    checkpoint_every: int = 0  # steps; 0: none by step count
    checkpoint_seconds: float = 0.0  # also checkpoint when this long has passed since the last one; 0: off
    agree_every: int = 10  # several processes: rank 0's stop / timed-checkpoint decision is broadcast every this many steps
    sync_batchnorm: bool | None = None  # across ranks; None: on when the method has batch norm


class Callbacks:
    """Hooks the loop calls; the service implements them to write metrics and checkpoints."""

    def on_log(self, step: int, logs: dict[str, float]) -> None: ...

    def should_stop(self, step: int) -> str | None:
        """Return a reason to stop (e.g. 'cancelled'), or None to continue."""
        return None

    def on_checkpoint(self, step: int, state: dict, final: bool) -> None: ...


class BatchStream(Protocol):
    """A dataset too large for memory (e.g. WebDataset shards): uint8 (B, C, H, W) batches from
    `start_step` on, the same batches for the same (seed, step) so that resume is exact. Under
    torch.distributed it is asked for this rank's share (rank, world keywords, per-rank batch)."""

    def batches(self, batch_size: int, seed: int, start_step: int, **rank_and_world) -> Iterator[Tensor]: ...

    # A stream that also has `n_items` yields (batch, dataset indices) pairs when asked
    # `with_indices=True`, each item's index the same in every epoch (for DeepCluster-v2's bank).


@dataclass
class TrainResult:
    step: int
    reason: str  # completed | cancelled | nan | <callback's reason>
    logs: dict


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(step_seed(seed, step))


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(seed, epoch, stream=1)))


class EpochOrders:
    """The indices of each step: a seeded permutation per epoch, last partial batch dropped. Each
    epoch's permutation is drawn once and copied to the data's device, so that a step slices it
    there without a host-to-device copy (a copy from pageable memory waits for the GPU)."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device):
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self.epoch, self.order = None, None

    def indices(self, step: int) -> Tensor:
        epoch, within = divmod(step, self.n // self.batch_size)
        if epoch != self.epoch:
            order = epoch_order(self.n, self.seed, epoch)
            if self.device.type == "cuda":  # from pinned memory the copy does not wait for the GPU either
                order = order.pin_memory()
            self.epoch, self.order = epoch, order.to(self.device, non_blocking=True)
        return self.order[within * self.batch_size : (within + 1) * self.batch_size]


def training_state(method: Method, optimizer, scaler, step: int, config: TrainConfig) -> dict:
    """Everything to resume, plus what the run was given: the loop's config, the method's
    hyper-parameters and its views. With bf16 parameters, called inside Masters.fp32_view: the
    method's weights are then its fp32 masters."""
    return {"method": method.state_dict(), "optimizer": optimizer_state(optimizer),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "step": step, "config": asdict(config),
            "hparams": dict(getattr(method, "hparams", {})),
            "views": method.views.config.to_dict() if method.views is not None else None}  # text methods have none


class _Step(nn.Module):
    """What DistributedDataParallel runs as forward(): one training step of the method."""

    def __init__(self, method: Method):
        super().__init__()
        self.method = method

    def forward(self, batch, gen, step, total_steps, **indices):
        return self.method.training_step(batch, gen, step, total_steps, **indices)


def memory_pass(source: Tensor, orders: EpochOrders, rank: int, local: int, config: TrainConfig,
                device: torch.device, canvas: tuple[Tensor, int] | None = None):
    """(images, dataset indices, generator) of this rank for one pass over every image, in the
    first epoch's order (the last batch ends at the last image and overlaps the one before), with
    views drawn from their own seeds: a method's forward-only pass before step 0 (DeepCluster-v2's
    `init_memory`)."""
    mine = slice(rank * local, (rank + 1) * local)
    n, batch = len(source), config.batch_size
    orders.indices(0)  # draws the first epoch's order
    starts = list(range(0, n - batch + 1, batch)) + ([n - batch] if n % batch else [])
    for step, begin in enumerate(starts):
        indices = orders.order[begin : begin + batch][mine]
        gen = torch.Generator(device=device).manual_seed(step_seed(config.seed, step, stream=4))
        # held while the method embeds the batch: its views draw this rank's rows, as in a training step
        window = distributed.batch_slice(mine.start, local, batch) if distributed.world_size() > 1 else nullcontext()
        with window, valid_regions(canvas, indices):
            yield source[indices].to(device, non_blocking=True), indices.to(device), gen


def valid_regions(canvas: tuple[Tensor, int] | None, indices: Tensor):
    """While a step's views are drawn: the (h, w) of these images on their canvas and the
    training side (images stored keeping their aspect, core/data/canvas.py); else nothing."""
    if canvas is None:
        return nullcontext()
    sizes, side = canvas
    return stored_crops.regions(sizes[indices], side)


def uses_sync_batchnorm(method: Method, config: TrainConfig) -> bool:
    return distributed.has_batchnorm(method) if config.sync_batchnorm is None else config.sync_batchnorm


def _agree(decision):
    """Rank 0's decision (a stop reason, whether a timed checkpoint is due), on every rank: two
    flags in a small CPU tensor each step; the reason's text only on the step it stops."""
    if not distributed.active():
        return decision
    reason, timed = decision if decision is not None else (None, False)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # an NCCL-only group moves CUDA tensors alone
    flags = torch.tensor([reason is not None, bool(timed)], dtype=torch.uint8, device=device)
    dist.broadcast(flags, src=0)
    if not flags[0]:
        return None, bool(flags[1])
    box = [reason]
    dist.broadcast_object_list(box, src=0)
    return box[0], bool(flags[1])


def _convolutional(method: Method) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.kernel_size != m.stride for m in method.backbone.modules())


class Prefetcher:
    """Batches of a BatchStream read ahead in a thread (into pinned memory on a GPU), so decoding
    overlaps compute; `wait` is the time the loop spent waiting for data."""

    def __init__(self, batches, pin: bool, depth: int = 2):
        import queue
        import threading

        self.queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self.pin = pin
        self.thread = threading.Thread(target=self._fill, args=(batches,), daemon=True, name="prefetch")
        self.thread.start()

    def _fill(self, batches) -> None:
        try:
            for batch in batches:  # a tensor, or (tensor, indices)
                if self.pin:
                    batch = tuple(t.pin_memory() for t in batch) if isinstance(batch, tuple) else batch.pin_memory()
                self.queue.put(batch)
        except BaseException as exc:  # handed to the loop, which raises it
            self.queue.put(exc)

    def next(self) -> Tensor:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


class Window:
    """The loss and the method's logs summed on the device over the steps since the last log, so
    that a step never waits for the device; read (one transfer, one collective) on log steps."""

    def __init__(self):
        self.sums: dict[str, Tensor | float] = {}
        self.counts: dict[str, int] = {}

    def add(self, loss: Tensor, extra: dict) -> None:
        for name, value in (("loss", loss), *extra.items()):
            value = value.detach().float().reshape(()) if isinstance(value, Tensor) else float(value)
            if name not in self.sums:  # a copy: the method may update its own tensor in place later
                self.sums[name] = value.clone() if isinstance(value, Tensor) else value
            else:
                self.sums[name] = self.sums[name] + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def read(self, device: torch.device) -> dict[str, float]:
        """Each value's mean over the window and over the ranks; then starts a new window."""
        names = list(self.sums)
        means = torch.stack([torch.as_tensor(self.sums[k], dtype=torch.float32, device=device).reshape(()) /
                             self.counts[k] for k in names])
        self.sums, self.counts = {}, {}
        return dict(zip(names, distributed.mean_detached(means).tolist()))


def train(method: Method, images: Tensor | BatchStream, config: TrainConfig, device: str | torch.device = "cpu",
          callbacks: Callbacks | None = None, resume: dict | None = None,
          canvas: tuple[Tensor, int] | None = None) -> TrainResult:
    """Train `method` on uint8 `images` (N, C, H, W), or on a BatchStream, for config.steps
    optimiser steps. config.batch_size is the global batch, split evenly over the ranks.
    `canvas`: (sizes (N, 2), training side) when the images are stored keeping their aspect, item
    i valid in its top-left sizes[i] = (h, w) (core/data/canvas.py); crops are cut from there."""
    callbacks = callbacks or Callbacks()
    device = torch.device(device)
    streamed = not isinstance(images, Tensor)
    if streamed and canvas is not None:
        raise ValueError("canvas sizes go with in-memory images; a stream's batches are square")
    if not streamed and config.batch_size > len(images):
        raise ValueError(f"batch size {config.batch_size} is larger than the dataset ({len(images)} items)")
    rank, world = distributed.rank(), distributed.world_size()
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} does not split evenly over {world} processes")
    local = config.batch_size // world
    if resume is not None:  # before DDP is built: every rank holds the resumed weights from the start
        method.load_state_dict(resume["method"])
    if world > 1 and uses_sync_batchnorm(method, config):
        distributed.convert_batchnorm(method, device)
    method.to(device).train()
    precision = resolve_precision(config.precision, device)
    if config.param_dtype not in PARAM_DTYPES:
        raise ValueError(f"unknown param_dtype {config.param_dtype!r}; choose {' or '.join(PARAM_DTYPES)}")
    if config.param_dtype == "bf16":
        check_bf16_params(method, precision, world, config.compile)
    channels_last = config.channels_last if config.channels_last is not None else (
        device.type == "cuda" and _convolutional(method))
    if channels_last:
        method.to(memory_format=torch.channels_last)
    compile_backbone(method, config, device)
    whole = whole_step(method, config, device, precision, world)
    # after channels_last and any resumed weights, so that the masters copy those exactly
    masters = Masters(method) if config.param_dtype == "bf16" else None
    step_fn = method.training_step
    if world > 1:  # gradients averaged over ranks; buffers (queues, centers) are kept equal by the methods
        step_fn = DistributedDataParallel(_Step(method), device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=method.unused_parameters, forward_sync_buffers=False)
    optimizer = build_optimizer(config.optimizer, masters.named() if masters else method, config.lr,
                                config.weight_decay, momentum=config.momentum, betas=tuple(config.betas),
                                eta=config.eta, clip_lr=config.clip_lr,
                                exclude_bias_n_norm=config.exclude_bias_n_norm, fused=device.type == "cuda",
                                lr_groups=config.lr_groups, compiled=whole is not None)
    trained = masters.named() if masters else list(method.named_parameters())  # what clipping and the update see
    last_layer = [p for name, p in trained if "last_layer" in name]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    start = 0
    if resume is not None:
        load_optimizer_state(optimizer, resume["optimizer"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        start = int(resume["step"])
    distributed.check_same_step(start)
    # a method with a bank of the dataset (DeepCluster-v2) takes each image's index: the loop's own,
    # or a stream's (one that knows its items: n_items)
    wants_indices = hasattr(method, "accepts_indices") and (
        method.accepts_indices(images.n_items) if streamed and hasattr(images, "n_items") else
        not streamed and method.accepts_indices(len(images)))
    if streamed:
        indexed = {"with_indices": True} if wants_indices else {}
        stream = Prefetcher(images.batches(config.batch_size, config.seed, start, **indexed) if world == 1
                            else images.batches(local, config.seed, start, rank=rank, world=world, **indexed),
                            pin=device.type == "cuda")
    else:
        source = on_device(images, device)
        orders = EpochOrders(len(images), config.batch_size, config.seed, source.device)
        if canvas is not None:
            canvas = (canvas[0].to(source.device), canvas[1])
    if wants_indices and not streamed and start == 0 and hasattr(method, "fill_memory"):
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            method.fill_memory(memory_pass(source, orders, rank, local, config, device, canvas))
    logs: dict[str, float] = {}
    running, window_start, window_steps, waited = Window(), time.perf_counter(), 0, 0.0
    last_checkpoint = time.monotonic()
    step, pending = start, None
    if config.agree_every < 1:
        raise ValueError(f"agree_every must be >= 1, got {config.agree_every}")
    while step < config.steps:
        timed = bool(config.checkpoint_seconds) and time.monotonic() - last_checkpoint >= config.checkpoint_seconds
        if rank == 0:  # rank 0 decides; a stop it asks for waits for the next agreement
            pending = pending or callbacks.should_stop(step)
        reason = None
        if world == 1 or (step - start) % config.agree_every == 0:  # one broadcast every agree_every steps
            reason, timed = _agree((pending, timed) if rank == 0 else None)
        else:
            timed = False
        if reason:
            if rank == 0:
                checkpoint(callbacks, masters, step, method, optimizer, scaler, config, final=True)
            if masters:
                masters.release()
            return TrainResult(step, reason, logs)
        if timed and step > start:  # the checkpoint after step - 1, taken here so that one broadcast carries it
            last_checkpoint = time.monotonic()
            if rank == 0:
                checkpoint(callbacks, masters, step, method, optimizer, scaler, config, final=False)
        if config.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs may be overwritten
        torch.manual_seed(step_seed(config.seed, step, stream=3))  # dropout etc. replay on resume
        lr, weight_decay = apply_schedules(optimizer, config, step)
        mine = slice(rank * local, (rank + 1) * local)  # this rank's rows of the global batch
        asked = time.perf_counter()
        if streamed:
            batch = stream.next()
            if wants_indices:
                batch, indices = batch
            batch = batch.to(device, non_blocking=True)
        else:
            indices = orders.indices(step)[mine]
            batch = source[indices].to(device, non_blocking=True)
        waited += time.perf_counter() - asked
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        step_indices = {"indices": indices.to(device)} if wants_indices else {}
        # a canvas of aspect-keeping images: crops are cut inside each item's own region
        regions = valid_regions(canvas, indices) if canvas is not None else nullcontext()
        optimizer.zero_grad(set_to_none=True)
        if whole is not None:  # views to the loss in one graph, drawing from the seed set above
            with regions:
                loss, extra = whole.forward_backward(batch, step, config.steps, **step_indices)
        else:
            gen = step_generator(config.seed, step, device)
            window = distributed.batch_slice(mine.start, local, config.batch_size) if world > 1 else nullcontext()
            with window, regions, torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                                 enabled=autocast_dtype is not None):
                loss, extra = step_fn(batch, gen, step, config.steps, **step_indices)
            scaler.scale(loss).backward()
        if masters:
            masters.take_grads()
        grad_norm = clip_gradients([p for _, p in trained], optimizer, scaler, config)
        if step < config.freeze_last_layer_steps:
            for p in last_layer:  # DINO's cancel_gradients_last_layer
                p.grad = None
        if whole is not None:  # the update compiled too; no scaler to consult ("whole" refuses fp16)
            whole.optimizer_step(optimizer)
        else:
            scaler.step(optimizer)
        if masters:
            masters.write_back()
        applied = step_applied(scaler, optimizer)
        scaler.update()
        with applied_only(applied):  # EMA targets stay put where the scaler skipped the step (inf/NaN grads)
            (whole or method).after_step(step, config.steps)
        running.add(loss, extra)
        step += 1
        window_steps += 1
        if step % config.log_every == 0 or step == config.steps:
            means = running.read(device)
            value = means.pop("loss")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - window_start
            logs = {"loss": value, "lr": lr, "weight_decay": weight_decay,
                    "img_per_s": window_steps * config.batch_size / max(elapsed, 1e-9),
                    "data_wait": waited / max(elapsed, 1e-9),  # the fraction of step time spent waiting for data
                    **({"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}
                       if device.type == "cuda" else {}),
                    **({"grad_norm": float(grad_norm)} if grad_norm is not None else {}), **means}
            if rank == 0:
                callbacks.on_log(step, logs)
            window_start, window_steps, waited = time.perf_counter(), 0, 0.0
            if not math.isfinite(value):
                if masters:
                    masters.release()
                return TrainResult(step, "nan", logs)
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            last_checkpoint = time.monotonic()
            if rank == 0:
                checkpoint(callbacks, masters, step, method, optimizer, scaler, config, final=False)
    if rank == 0:
        checkpoint(callbacks, masters, step, method, optimizer, scaler, config, final=True)
    if masters:
        masters.release()
    return TrainResult(step, "completed", logs)


def checkpoint(callbacks: Callbacks, masters: Masters | None, step: int, method: Method, optimizer, scaler,
               config: TrainConfig, final: bool) -> None:
    """callbacks.on_checkpoint with the training state; with bf16 parameters, the fp32 masters in
    their place meanwhile (the callback's parts and "full" state alike), so the files are fp32."""
    with masters.fp32_view() if masters else nullcontext():
        callbacks.on_checkpoint(step, training_state(method, optimizer, scaler, step, config), final=final)


def compiles(method: Method, config: TrainConfig, device: torch.device) -> bool:
    """Whether the backbone is torch.compiled: "true", "false", or "auto", which compiles where
    benchmarks/train_throughput.py measured a gain: convnets on a GPU (SimCLR ResNet-18 on an
    H200: +18 %). ViTs gained nothing there (MAE ViT-S: +0 %), and the CPU ran slower compiled."""
    if config.compile == "auto":
        return device.type == "cuda" and _convolutional(method)
    return config.compile == "true"


def whole_step(method: Method, config: TrainConfig, device: torch.device, precision: str, world: int):
    """The compiled step (core.step.CompiledStep) when config.compile is "whole", else None."""
    if config.compile != "whole":
        return None
    if precision == "fp16":  # the scaler's skip decision reads the device each step
        raise ValueError("compile 'whole' does not run fp16 (its loss scaler); use bf16 or fp32")
    if world > 1:
        raise ValueError("compile 'whole' runs in one process; several use compile 'true' or 'auto'")
    if config.cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs needs a CUDA device, not {device}")
    from core.step import CompiledStep

    autocast_dtype = {"bf16": torch.bfloat16}.get(precision)
    return CompiledStep(method, autocast_dtype, mode="reduce-overhead" if config.cuda_graphs else None)


def compile_backbone(method: Method, config: TrainConfig, device: torch.device) -> None:
    """torch.compile the backbone in place (the state dict keeps its keys): with CUDA graphs
    (mode reduce-overhead) when config.cuda_graphs, else where `compiles` says. Under "auto" a
    graph that fails to compile runs eagerly instead of failing the run. Under "whole" the
    step is compiled instead (`whole_step`)."""
    if config.compile == "whole":
        return
    if config.cuda_graphs:
        if device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, not {device}")
        method.backbone.compile(mode="reduce-overhead")
    elif compiles(method, config, device):
        if config.compile == "auto":
            import torch._dynamo

            torch._dynamo.config.suppress_errors = True
        method.backbone.compile()


def on_device(images: Tensor, device: torch.device, budget: float = 0.25) -> Tensor:
    """The uint8 dataset where batches are cut from it: on the GPU when it fits in `budget` of the
    free memory (no host-to-device copy per step), else in pinned host memory (CPU: as is)."""
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() <= budget * free:
        return images.to(device)
    return images.pin_memory()


def apply_schedules(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int) -> tuple[float, float]:
    """Set this step's LR (linear warm-up, then cosine to final_lr) and weight decay (constant,
    or cosine to final_weight_decay) on every parameter group; groups excluded from decay
    (biases, norms) keep 0. A group's lr_scale multiplies its LR at every step, warm-up
    included (the Barlow Twins code's learning_rate_biases); a fixed_lr group keeps the peak LR
    (SimSiam's --fix-pred-lr). A compiled update's LRs and weight decays are tensors, filled in
    place so that a new value is not a new graph (core.optim.hyperparameters_in_tensors). Returns
    the scheduled LR and weight decay."""
    lr = warmup_cosine(step, config.steps, config.lr, config.warmup_steps, config.final_lr)
    weight_decay = config.weight_decay
    if config.final_weight_decay is not None:
        weight_decay = cosine(step, config.steps, config.weight_decay, config.final_weight_decay)
    for group in optimizer.param_groups:
        set_hyperparameter(group, "lr", (config.lr if group.get("fixed_lr") else lr) * group.get("lr_scale", 1.0))
        if group.get("decay", True):
            set_hyperparameter(group, "weight_decay", weight_decay)
    return lr, weight_decay


def set_hyperparameter(group: dict, key: str, value: float) -> None:
    if isinstance(group[key], Tensor):  # a compiled update's input: the same tensor, a new value
        group[key].fill_(value)
    else:
        group[key] = value


def step_applied(scaler, optimizer) -> Tensor | None:
    """After scaler.step: a 0-d 0/1 float tensor on the device, 1 where the optimiser step was
    taken, 0 where the fp16 scaler skipped it for inf/NaN gradients (read from the scaler's
    found-inf flags, which stay on the device); None without a scaler."""
    if not scaler.is_enabled():
        return None
    found = list(scaler._found_inf_per_device(optimizer).values())  # torch keeps no public accessor
    return (torch.stack([f.to(found[0].device) for f in found]).sum() == 0).float()


def clip_gradients(params: nn.Module | list[Tensor], optimizer, scaler, config: TrainConfig) -> Tensor | None:
    """Clip to config.grad_clip: one norm over all gradients ("global", torch's
    clip_grad_norm_), or each parameter's own norm ("per_parameter", DINO's clip_gradients:
    clip_grad_norm_ on each parameter alone, here with multi-tensor kernels). `params`: a method,
    or the tensors the optimiser updates (fp32 masters with bf16 parameters). Returns the total
    gradient norm before clipping (global mode), else None."""
    if not config.grad_clip:
        return None
    params = list(params.parameters()) if isinstance(params, nn.Module) else params
    scaler.unscale_(optimizer)
    if config.grad_clip_mode == "per_parameter":
        grads = [p.grad for p in params if p.grad is not None]
        if grads:  # coefficient min(max / (|g| + 1e-6), 1), as clip_grad_norm_ of one tensor
            coefs = torch._foreach_add(torch._foreach_norm(grads), 1e-6)
            torch._foreach_reciprocal_(coefs)
            torch._foreach_mul_(coefs, config.grad_clip)
            torch._foreach_clamp_max_(coefs, 1.0)
            torch._foreach_mul_(grads, coefs)
        return None
    return torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
