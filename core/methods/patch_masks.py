"""Patch masks whose shapes the host knows without reading the device: MAE's hidden patches by a
sort instead of `nonzero`, and I-JEPA's blocks drawn on the host, as the paper's collator does in
its data-loader workers (the block sizes and the context size set the tensor shapes, so drawn on
the device they would be read back every step)."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from core import distributed


def hidden_patches(keep: Tensor, num_patches: int) -> Tensor:
    """(B, N - K) sorted indices not in `keep` (B, K) (rows of distinct entries): the patches whose
    flag is 0 come first in a stable sort of the kept flags, in index order."""
    kept = torch.zeros(keep.shape[0], num_patches, dtype=torch.uint8, device=keep.device)
    kept.scatter_(1, keep, 1)
    return kept.argsort(dim=1, stable=True)[:, : num_patches - keep.shape[1]]


def _block_size(scale, aspect, grid: int, max_area: int, rng: np.random.Generator) -> tuple[int, int]:
    """I-JEPA's _sample_block_size: one (h, w) per batch, each side < grid, area <= max_area."""
    u = rng.random(2)
    area = grid * grid * (scale[0] + u[0] * (scale[1] - scale[0]))
    ratio = aspect[0] + u[1] * (aspect[1] - aspect[0])
    h = max(1, min(grid - 1, round(math.sqrt(area * ratio))))
    w = max(1, min(grid - 1, round(math.sqrt(area / ratio))))
    while h * w > max(1, max_area):
        if h >= w:
            h -= 1
        else:
            w -= 1
    return h, w


def _rect(top: np.ndarray, left: np.ndarray, h: int, w: int, grid: int) -> np.ndarray:
    """(..., grid*grid) bool masks of the rectangles [top, top+h) x [left, left+w)."""
    rows = np.arange(grid)
    in_rows = (rows >= top[..., None]) & (rows < top[..., None] + h)
    in_cols = (rows >= left[..., None]) & (rows < left[..., None] + w)
    return (in_rows[..., :, None] & in_cols[..., None, :]).reshape(*top.shape, grid * grid)


def jepa_blocks(batch: int, grid: int, seed, device, num_targets: int = 4,
                target_scale: tuple[float, float] = (0.15, 0.2), target_aspect: tuple[float, float] = (0.75, 1.5),
                context_scale: tuple[float, float] = (0.85, 1.0), min_context: int = 4) -> tuple[Tensor, Tensor]:
    """I-JEPA masks, drawn on the host from `seed` (anything numpy.random.default_rng takes). Returns (context (B, K) sorted patch indices,
    targets (B, num_targets, h*w)) on `device`, copied without waiting for it.

    As in the paper's collator, one target block size and one context block size per batch (so
    targets stack), positions per sample; the context is its block minus the union of the
    targets, and every sample keeps the batch minimum K of context patches (a random subset).
    Adapted to small grids: sides < grid, the targets together cover at most N - min_context
    patches, and a sample whose context would have fewer than min_context patches takes the whole
    image minus the targets. Inside `distributed.batch_slice` the draws are the global batch's
    and this rank keeps its rows, so the masks do not depend on the world size."""
    window = distributed.batch_window()
    start, total = (window[0], window[2]) if window is not None and window[1] == batch else (0, batch)
    rng = np.random.default_rng(seed)
    n = grid * grid
    min_context = min(min_context, n - num_targets)
    th, tw = _block_size(target_scale, target_aspect, grid, (n - min_context) // num_targets, rng)
    ch, cw = _block_size(context_scale, (1.0, 1.0), grid, n, rng)
    mine = slice(start, start + batch)
    top = rng.integers(0, grid - th + 1, (total, num_targets))[mine]
    left = rng.integers(0, grid - tw + 1, (total, num_targets))[mine]
    cells = (np.arange(th)[:, None] * grid + np.arange(tw)[None, :]).reshape(-1)
    targets = (top * grid + left)[..., None] + cells  # (B, T, th * tw)
    covered = np.zeros((batch, n), dtype=bool)
    np.put_along_axis(covered, targets.reshape(batch, -1), True, axis=1)
    block = _rect(rng.integers(0, grid - ch + 1, total)[mine], rng.integers(0, grid - cw + 1, total)[mine],
                  ch, cw, grid)
    context = block & ~covered
    context = np.where((context.sum(1) < min_context)[:, None], ~covered, context)
    k = int(context.sum(1).min())
    noise = rng.random((total, n))[mine] + (~context) * 2.0
    chosen = np.sort(np.argsort(noise, axis=1, kind="stable")[:, :k], axis=1)
    return _to_device(chosen, device), _to_device(targets, device)


def _to_device(array: np.ndarray, device) -> Tensor:
    """int64 host array on `device`; from pinned memory on a GPU, so the copy does not wait for it."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    if torch.device(device).type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
