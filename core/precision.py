"""Which arithmetic a device runs fast: `precision: auto` picks bf16 autocast where the device
computes bf16 natively, fp32 elsewhere (training and serving alike)."""
from __future__ import annotations

import functools

import torch


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto': bf16 autocast where the device computes bf16 natively (GPUs from Ampere on, CPUs
    with AVX512-BF16 or AMX), fp32 elsewhere."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and _cpu_has_bf16()


@functools.cache
def _cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 in the CPU's flags (Linux), and oneDNN to use them."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
