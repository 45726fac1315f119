"""bf16 parameters with fp32 master weights (TrainConfig.param_dtype "bf16"): the model computes
with bf16 weights, so autocast has no weight casts left to do; the optimiser updates fp32 copies.

Each step: the backward leaves bf16 gradients on the bf16 parameters; `take_grads` hands them to
the masters as fp32 (clipping and the optimiser act on the masters); `write_back` rounds the
updated masters into the parameters (round to nearest even, as tensor.to(bfloat16)).

Only trainable matrices (ndim >= 2: linear and conv weights, embeddings) become bf16: they are
what autocast casts at every matmul. Vectors (biases, norm scales and shifts) stay fp32 with fp32
masters of their own: PyTorch's CPU layer_norm and batch_norm take fp32 parameters with a bf16
input but refuse bf16 parameters with an fp32 input ("mixed dtype (CPU): expect parameter to have
scalar type of Float"), which a residual stream in fp32 gives them; autocast casts a bias at no
measurable cost. Buffers (BatchNorm running statistics, a ViT's fixed
position embedding) stay fp32: a running mean updated by 0.1 of the batch mean each step loses
most of that update to bf16's 8-bit mantissa, and they are small. Checkpoints hold the masters:
`fp32_view` puts them in the parameters' place while a checkpoint is taken, so its weights and
backbone file are fp32 as in an fp32 run, and a resume restores the masters bit for bit."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn

PARAM_DTYPES = ("fp32", "bf16")


def check_bf16_params(method: nn.Module, precision: str, world: int, compile: str) -> None:
    """Raise ValueError where bf16 parameters would be wrong: a precision other than bf16, a
    method not marked `bf16_params_ok` (EMA targets, parameters changed outside the optimiser),
    several processes, compile "whole"."""
    if precision != "bf16":
        raise ValueError(f"param_dtype bf16 needs precision bf16 (here it resolves to {precision}: fp32 has no "
                         f"bf16 compute, fp16 its own loss scaler); use param_dtype fp32 or precision bf16")
    if not getattr(method, "bf16_params_ok", False):
        label = getattr(method, "name", "") or type(method).__name__
        raise ValueError(f"param_dtype bf16 is not available for {label}: "
                         f"its EMA target or other state updated outside the optimiser would lose precision or "
                         f"diverge from the fp32 masters; use param_dtype fp32")
    if world > 1:
        raise ValueError("param_dtype bf16 runs in one process (DDP would reduce the bf16 gradients); "
                         "use param_dtype fp32 with several processes")
    if compile == "whole":
        raise ValueError("param_dtype bf16 does not run with compile 'whole' (its compiled update would have to "
                         "take the masters); use compile true, auto or false")


def lowered(param: Tensor) -> bool:
    """Whether a trainable parameter is held in bf16 (the module docstring says why matrices only)."""
    return param.ndim >= 2


class Masters:
    """fp32 masters of `method`'s trainable parameters, whose matrices become bf16."""

    def __init__(self, method: nn.Module):
        named = [(name, p) for name, p in method.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        # exact copies of the (possibly resumed) fp32 weights; leaves the optimiser can own
        self.masters = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        with torch.no_grad():
            for p in self.params:
                if lowered(p):
                    p.data = p.data.to(torch.bfloat16)

    def named(self) -> list[tuple[str, Tensor]]:
        """(name, master) pairs, in the order of method.named_parameters(): what the optimiser is
        built over, so that weight-decay exclusions and LR groups match an fp32 run's."""
        return list(zip(self.names, self.masters))

    def take_grads(self) -> None:
        """The parameters' gradients (bf16 on the matrices), as fp32, on the masters; the parameters' freed."""
        for p, master in zip(self.params, self.masters):
            master.grad = None if p.grad is None else p.grad.float()
            p.grad = None

    @torch.no_grad()
    def write_back(self) -> None:
        torch._foreach_copy_(self.params, self.masters)

    @contextmanager
    def fp32_view(self):
        """Inside, the parameters are the fp32 masters themselves (no copy): a checkpoint taken here
        holds them. The bf16 weights are put back on exit."""
        held = [p.data for p in self.params]
        for p, master in zip(self.params, self.masters):
            p.data = master.data
        try:
            yield
        finally:
            for p, data in zip(self.params, held):
                p.data = data

    def release(self) -> None:
        """The end of training: the parameters keep the fp32 masters, as after an fp32 run."""
        for p, master in zip(self.params, self.masters):
            p.data = master.detach()
