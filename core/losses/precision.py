"""fp32 islands: statistics that must not run in bf16/fp16 even inside an autocast region.

A `.float()` cast alone does not hold under autocast: the next matmul casts its inputs back to
the autocast dtype. Cross-correlations, covariances, Sinkhorn-Knopp, k-means and sharpened
softmax targets lose too much precision in bf16 (8 mantissa bits: a cross-correlation's
off-diagonal terms, or scores divided by SwAV's epsilon 0.05 before exp), so these functions
switch autocast off and compute in float32."""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch
from torch import Tensor

Fn = TypeVar("Fn", bound=Callable)

HALF = (torch.float16, torch.bfloat16)


def to_fp32(value):
    """Half-precision tensors (also inside lists and tuples) cast to float32; the rest unchanged."""
    if isinstance(value, Tensor):
        return value.float() if value.dtype in HALF else value
    if isinstance(value, (list, tuple)):
        return type(value)(to_fp32(v) for v in value)
    return value


def _device_type(values) -> str:
    for value in values:
        if isinstance(value, Tensor):
            return value.device.type
        if isinstance(value, (list, tuple)) and value:
            found = _device_type(value)
            if found:
                return found
    return ""


def fp32(fn: Fn) -> Fn:
    """Decorator: run `fn` with autocast disabled on its inputs' device and its half-precision
    tensor arguments cast to float32, so every op inside computes (and returns) float32.
    The undecorated function stays reachable as `fn.__wrapped__`."""

    @functools.wraps(fn)
    def island(*args, **kwargs):
        device_type = _device_type(list(args) + list(kwargs.values())) or "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*to_fp32(args), **{k: to_fp32(v) for k, v in kwargs.items()})

    return island  # type: ignore[return-value]
