"""Step-based schedules: values computed from the step, never mutated by callbacks."""
from __future__ import annotations

import math


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine from `start` at step 0 to `end` at `total`."""
    progress = min(max(step / max(total, 1), 0.0), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(step: int, total: int, peak: float, warmup: int, final: float = 0.0) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to `final`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return cosine(step - warmup, total - warmup, peak, final)


def linear(step: int, total: int, start: float, end: float) -> float:
    progress = min(max(step / max(total, 1), 0.0), 1.0)
    return start + (end - start) * progress
