"""A first-in first-out queue of feature vectors kept in buffers (MoCo negatives, NNCLR support set)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import distributed


class FeatureQueue(nn.Module):
    """`items` (size, dim) holds the newest vectors, `ptr` the row the next push writes to.
    Both are buffers, so a resumed run continues with the same queue. Starts as random unit
    vectors, as in MoCo's reference code."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be positive, got {size}")
        self.register_buffer("items", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, batch: Tensor) -> None:
        """Write `batch` (n, dim), gathered from every rank, over the oldest rows, wrapping around
        the end: every rank keeps the same queue (MoCo's keys gathered before enqueue)."""
        size = len(self.items)
        batch = distributed.gather_detached(batch.detach())[-size:].to(self.items.dtype)
        rows = (self.ptr + torch.arange(len(batch), device=self.items.device)) % size
        self.items[rows] = batch
        self.ptr.copy_((self.ptr + len(batch)) % size)
