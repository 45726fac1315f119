"""One training step as compiled graphs: views, forward, loss and backward in one torch.compile
graph (CUDA graphs where asked), the optimiser update and the method's after_step (EMA) after it.

Random draws (views, masks, dropout) come from the global generator, which the loop seeds from
(seed, step) before each step: dynamo cannot trace a torch.Generator argument, and a step seeded
this way replays exactly on resume. The numbers differ from the eager loop's per-step generator,
but a compiled step and the same step run eagerly with gen=None draw alike (inductor's own RNG
aside: see `fallback_random`).

The optimiser runs after the graph, not inside it: torch.optim's step() graph-breaks on purpose
(torch/optim/optimizer.py, _use_grad_for_differentiable, pytorch#104053) and dynamo breaks again
on parameters whose .grad the traced backward set. On GPUs the optimisers are fused (one kernel
for all parameters, core.optim), so this split costs a launch, not a kernel per parameter."""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from core.methods.base import Method

log = logging.getLogger(__name__)


def forward_backward(method: Method, batch: Tensor, step: int, total_steps: int, autocast_dtype,
                     **indices) -> tuple[Tensor, dict]:
    """Views, forward, loss and backward of one step; gradients land in .grad. Returns the
    detached loss and the method's logs (a returned loss still tied to the graph would make
    dynamo split the function before backward)."""
    device_type = batch.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        loss, logs = method.training_step(batch, None, step, total_steps, **indices)
    loss.backward()
    return loss.detach(), {k: v.detach() if isinstance(v, Tensor) else v for k, v in logs.items()}


def after_step(method: Method, step: int, total_steps: int) -> None:
    method.after_step(step, total_steps)


class CompiledStep:
    """forward_backward and after_step, torch.compiled once for a method.

    mode: None (inductor's default) or "reduce-overhead" (CUDA graphs, where shapes are
    static). backend: "inductor", or "aot_eager" (the same traced graph run by eager kernels:
    what the CPU tests use, inductor's C++ build being slow there). `compiled_frames` counts the
    frames dynamo compiled for this step (what a test checks to see that the step was compiled)."""

    def __init__(self, method: Method, autocast_dtype=None, mode: str | None = None, backend: str = "inductor"):
        import torch._dynamo

        # lets dynamo trace Tensor.backward() into the graph instead of breaking before it
        torch._dynamo.config.trace_autograd_ops = True
        self.method, self.autocast_dtype = method, autocast_dtype
        options = {"backend": backend, **({"mode": mode} if mode else {})}
        self._forward_backward = torch.compile(forward_backward, **options)
        self._after_step = torch.compile(after_step, **options)
        self.compiled_frames = 0

    def forward_backward(self, batch: Tensor, step: int, total_steps: int, **indices) -> tuple[Tensor, dict]:
        return self._counted(self._forward_backward, self.method, batch, step, total_steps, self.autocast_dtype,
                             **indices)

    def after_step(self, step: int, total_steps: int) -> None:
        self._counted(self._after_step, self.method, step, total_steps)

    def _counted(self, fn, *args, **kwargs):
        from torch._dynamo.utils import counters

        before = counters["stats"]["unique_graphs"]
        out = fn(*args, **kwargs)
        self.compiled_frames += counters["stats"]["unique_graphs"] - before
        return out


def graph_breaks(method: Method, batch: Tensor, step: int, total_steps: int, autocast_dtype=None,
                 **indices) -> list[str]:
    """The reasons dynamo breaks the forward_backward graph of `method` (empty: one graph).
    Runs one step (gradients accumulate in .grad)."""
    import torch._dynamo

    torch._dynamo.config.trace_autograd_ops = True
    explanation = torch._dynamo.explain(forward_backward)(method, batch, step, total_steps, autocast_dtype, **indices)
    return [str(reason.reason).splitlines()[0] + _where(reason) for reason in explanation.break_reasons]


def _where(reason) -> str:
    frames = [f for f in getattr(reason, "user_stack", []) or [] if "/core/" in f.filename]
    return f" at {frames[-1].filename.split('/core/')[-1]}:{frames[-1].lineno}" if frames else ""
