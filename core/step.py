"""One training step as compiled graphs: views, forward and loss in one torch.compile graph, whose
backward AOT autograd compiles with it (CUDA graphs where asked); the optimiser update in a second;
the method's after_step (EMA) in a third.

The backward runs as `loss.backward()` on the compiled forward's output, not traced into the same
frame (dynamo's trace_autograd_ops): where a method breaks the graph (I-JEPA's host-drawn blocks),
a backward traced in the resumed frame left every .grad None on torch 2.14.1.

Random draws (views, masks, dropout) come from the global generator, which the loop seeds from
(seed, step) before each step: dynamo cannot trace a torch.Generator argument, and a step seeded
this way replays exactly on resume. The numbers differ from the eager loop's per-step generator,
but a compiled step and the same step run eagerly with gen=None draw alike (inductor's own RNG
aside: see `fallback_random`).

The update is a graph of its own, not part of the forward's: torch.optim's step() breaks the graph
on purpose around its body (torch/optim/optimizer.py, _use_grad_for_differentiable, pytorch#104053:
AOT autograd then sees a no-grad graph and updates the parameters in place), and it reads the .grad
that the backward set. Its LRs and weight decays are 0-d tensors on the parameters' device that the
loop's schedule fills in place (core.optim.hyperparameters_in_tensors; PyTorch's "compiled
optimizer" recipe), so a new value each step is a new input, not a new graph. torch's AdamW, SGD
and Adagrad take no tensor weight decay (a Python test and alpha=), so for them the decay runs in
the same compiled function just before their step(), as they would apply it
(core.optim.apply_weight_decay); LARS reads the tensor itself. So the update compiles at step 0,
once more at step 1 where the optimiser finds the state that step 0 created (SGD's and LARS's
momentum buffers), and never after. It runs without CUDA graphs, even where the forward has them:
inductor's foreach fusion already makes it a few kernels, and CUDA graphs over it are not measured.

Still eager, between the graphs: zero_grad, gradient clipping (core.train.clip_gradients) and
DINO's frozen last layer. They stay out together: DINO clears the last layer's .grad after
clipping, whose global norm counts those gradients, and .grad set to None inside the graph would
be traced state that flips where the freeze ends; clipping itself is already two or three
multi-tensor kernels. Where the freeze ends the update is compiled again, once (the parameters
with a gradient change: DINO tiny, frames [2, 0, 0, 2, 0, 0] for a freeze of 3 steps). The fp16 loss scaler: "whole" refuses fp16, as the scaler's skip reads the device."""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from core.methods.base import Method
from core.optim import apply_weight_decay, weight_decay_taken_out

log = logging.getLogger(__name__)


def forward(method: Method, batch: Tensor, step: int, total_steps: int, autocast_dtype, **indices) -> tuple[Tensor, dict]:
    """Views, forward and loss of one step. Returns the loss and the method's logs, detached."""
    device_type = batch.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        loss, logs = method.training_step(batch, None, step, total_steps, **indices)
    return loss, {k: v.detach() if isinstance(v, Tensor) else v for k, v in logs.items()}


def forward_backward(method: Method, batch: Tensor, step: int, total_steps: int, autocast_dtype,
                     **indices) -> tuple[Tensor, dict]:
    """`forward`, then backward: gradients land in .grad. Returns the detached loss and the logs."""
    loss, logs = forward(method, batch, step, total_steps, autocast_dtype, **indices)
    loss.backward()
    return loss.detach(), logs


def optimizer_step(optimizer: torch.optim.Optimizer, decays: list) -> None:
    apply_weight_decay(optimizer, decays)
    optimizer.step()


def after_step(method: Method, step: int, total_steps: int) -> None:
    method.after_step(step, total_steps)


class CompiledStep:
    """forward_backward, the optimiser update and after_step, torch.compiled once for a method.

    mode: None (inductor's default) or "reduce-overhead" (CUDA graphs, where shapes are
    static). backend: "inductor", or "aot_eager" (the same traced graph run by eager kernels:
    what the CPU tests use, inductor's C++ build being slow there). `compiled_frames` counts the
    frames dynamo compiled for this step (what a test checks to see that the step was compiled)."""

    def __init__(self, method: Method, autocast_dtype=None, mode: str | None = None, backend: str = "inductor"):
        self.method, self.autocast_dtype = method, autocast_dtype
        options = {"backend": backend, **({"mode": mode} if mode else {})}
        self._forward = torch.compile(forward, **options)
        self._after_step = torch.compile(after_step, **options)
        self._optimizer_step = torch.compile(optimizer_step, backend=backend)  # no CUDA graphs: module docstring
        self.compiled_frames = 0

    def forward_backward(self, batch: Tensor, step: int, total_steps: int, **indices) -> tuple[Tensor, dict]:
        loss, logs = self._counted(self._forward, self.method, batch, step, total_steps, self.autocast_dtype,
                                   **indices)
        loss.backward()  # AOT autograd's compiled backward of the forward graph
        return loss.detach(), logs

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step(), compiled; the groups' LRs and weight decays held in tensors, as the
        loop's are (core.optim.build_optimizer with compiled=True)."""
        with weight_decay_taken_out(optimizer) as decays:
            self._counted(self._optimizer_step, optimizer, decays)

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
    """The reasons dynamo breaks the step's forward graph of `method` (empty: one graph)."""
    import torch._dynamo

    explanation = torch._dynamo.explain(forward)(method, batch, step, total_steps, autocast_dtype, **indices)
    return [str(reason.reason).splitlines()[0] + _where(reason) for reason in explanation.break_reasons]


def _where(reason) -> str:
    frames = [f for f in getattr(reason, "user_stack", []) or [] if "/core/" in f.filename]
    return f" at {frames[-1].filename.split('/core/')[-1]}:{frames[-1].lineno}" if frames else ""
