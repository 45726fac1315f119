"""Global-batch helpers over torch.distributed; every one is the identity at world size 1.

Semantics: each rank computes a loss L_r on its slice of the global batch, DDP averages the
gradients, and so the run optimises mean_r L_r. The collectives used inside a loss
(`gather`, `sum_across`) send gradients back to the rank that produced each slice (their
backward sums across ranks), which makes the averaged gradient exactly that of the loss on
the whole batch: a loss over the gathered batch (Barlow Twins, VICReg's variance) has
L_r = L on every rank, a per-anchor loss (NT-Xent) has L_r = the mean over the rank's anchors."""
from __future__ import annotations

import contextlib
import contextvars
import warnings

import torch
import torch.distributed as dist
from torch import Tensor, nn

_batch_slice: contextvars.ContextVar[tuple[int, int, int] | None] = contextvars.ContextVar("batch_slice", default=None)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def gather(x: Tensor) -> Tensor:
    """Concatenate every rank's x (same shape on each) along dim 0, in rank order, with gradient
    flowing back to each rank's own slice."""
    if not active():
        return x
    from torch.distributed.nn.functional import all_gather

    with _quiet():
        return torch.cat(all_gather(x.contiguous()), 0)


@torch.no_grad()
def gather_detached(x: Tensor) -> Tensor:
    """`gather` without gradient (queue and memory-bank writes)."""
    if not active():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


def broadcast_(x: Tensor) -> Tensor:
    """Rank 0's x on every rank, in place (a result computed once: DeepCluster-v2's k-means)."""
    if active():
        dist.broadcast(x, src=0)
    return x


def sum_across(x: Tensor) -> Tensor:
    """The sum of x over ranks, differentiable (statistics inside a loss: SIGReg, batch norm)."""
    if not active():
        return x
    from torch.distributed.nn.functional import all_reduce

    with _quiet():
        return all_reduce(x)


@contextlib.contextmanager
def _quiet():
    """torch.distributed.nn.functional warns that it will move to a private module; it is the
    public API with gradients today."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


@torch.no_grad()
def sum_detached(x: Tensor) -> Tensor:
    """The sum of x over ranks, without gradient (Sinkhorn, the DINO center)."""
    if not active():
        return x
    out = x.clone()
    dist.all_reduce(out)
    return out


@torch.no_grad()
def max_detached(x: Tensor) -> Tensor:
    if not active():
        return x
    out = x.clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


@torch.no_grad()
def mean_detached(x: Tensor) -> Tensor:
    return sum_detached(x) / world_size()


def offset(local_rows: int) -> int:
    """Where this rank's rows start in the gathered batch (equal slices on every rank)."""
    return rank() * local_rows


@contextlib.contextmanager
def batch_slice(start: int, local: int, total: int):
    """Inside, per-item random draws (core.augment.ops.per_item_rand) draw for the whole global
    batch of `total` items and keep rows start..start+local: the views of an image are the same
    whatever the world size."""
    token = _batch_slice.set((start, local, total))
    try:
        yield
    finally:
        _batch_slice.reset(token)


def batch_window() -> tuple[int, int, int] | None:
    """(start, local, total) inside `batch_slice`, else None."""
    return _batch_slice.get()


def per_item_rand(shape: tuple[int, ...], gen: torch.Generator | None, device) -> Tensor:
    """torch.rand(shape, generator=gen) for draws whose dim 0 is the batch (or k batches one
    after the other). Inside `batch_slice`, it draws for the global batch and returns this
    rank's rows, so the generator advances exactly as in a single-process run. gen None draws
    from the global generator: what a torch.compiled step does (dynamo cannot trace a
    torch.Generator argument), seeded per step by the loop."""
    window = _batch_slice.get()
    shape = tuple(shape)
    if window is None:
        return torch.rand(shape, generator=gen, device=device)
    start, local, total = window
    if not shape or shape[0] % local:
        return torch.rand(shape, generator=gen, device=device)
    k = shape[0] // local
    full = torch.rand((k, total) + shape[1:], generator=gen, device=device)
    return full[:, start : start + local].reshape(shape)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm with statistics over the global batch, on any device: the CPU (gloo) stand-in
    for torch's SyncBatchNorm, which runs only on accelerators. Same parameters and buffers as
    BatchNorm1d/2d, so checkpoints are the same tensors."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and active()):
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = sum_detached(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
        mean = sum_across(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = sum_across(centred.square().sum(dims)) / count  # biased, as batch norm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1).clamp(min=1), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer made global-batch: torch's SyncBatchNorm on accelerators, GlobalBatchNorm
    on the CPU. Parameters and buffers are carried over (the state dict keeps its keys)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        with torch.no_grad():
            if module.affine:
                out.weight, out.bias = module.weight, module.bias
            if module.track_running_stats:
                out.running_mean, out.running_var = module.running_mean, module.running_var
                out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child, device))
    return module


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def agreed_resume(candidates: list, read, skipped=lambda candidate, exc: None):
    """(candidate, state) that every rank resumes from: rank 0 reads the candidates in order
    (newest first) and takes the first it can read (`skipped` hears about the others); the other
    ranks read rank 0's choice, never their own, so one unreadable file on one rank cannot make
    the ranks start from different checkpoints. A rank that cannot read the chosen one raises.
    candidates are plain values (ids); (None, None) when there is nothing to resume from."""
    chosen, state = None, None
    if rank() == 0:
        for candidate in candidates:
            try:
                chosen, state = candidate, read(candidate)
                break
            except (OSError, ValueError) as exc:  # a torn or missing file: try the one before
                skipped(candidate, exc)
    if active():
        box = [chosen]
        dist.broadcast_object_list(box, src=0)
        chosen = box[0]
        if rank() != 0 and chosen is not None:
            state = read(chosen)
    return chosen, state


def check_same_step(step: int) -> None:
    """Raise unless every rank starts at the same step (a resume that diverged)."""
    if not active():
        return
    steps = [None] * world_size()
    dist.all_gather_object(steps, int(step))
    if len(set(steps)) != 1:
        raise RuntimeError(f"the ranks would start at different steps {steps}; refusing to train")
