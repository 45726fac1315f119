"""Patch masks on a (grid x grid) patch grid for masked-modelling methods; randomness from a
generator, patch index = row * grid + column (the order of VisionTransformer.patchify).

- `random_keep`: MAE's per-sample uniform random masking (He et al., 2021, arXiv:2111.06377).
- `block_mask`: BEiT's block-wise masking, used by data2vec (arXiv:2106.08254, arXiv:2202.03555).
- `jepa_blocks`: I-JEPA's context block and target blocks (Assran et al., 2023, arXiv:2301.08243).
"""
from __future__ import annotations

import math

import numpy as np

import torch
from torch import Tensor

from core import distributed
from core.distributed import per_item_rand


def random_keep(batch: int, num_patches: int, mask_ratio: float, gen: torch.Generator, device) -> Tensor:
    """(batch, K) sorted indices of the visible patches, K = round((1 - mask_ratio) * num_patches),
    drawn uniformly without replacement per sample (MAE's argsort of per-sample noise)."""
    keep = max(1, min(num_patches, round((1 - mask_ratio) * num_patches)))
    noise = per_item_rand((batch, num_patches), gen, device)
    return noise.argsort(1)[:, :keep].sort(1).values


def complement(keep: Tensor, num_patches: int) -> Tensor:
    """(B, N - K) sorted indices not in `keep` (B, K); every row of `keep` has distinct entries."""
    kept = torch.zeros(keep.shape[0], num_patches, dtype=torch.uint8, device=keep.device)
    kept.scatter_(1, keep, 1)
    # a stable sort puts the hidden patches first, in index order: static shapes, unlike nonzero()
    return torch.argsort(kept, dim=1, stable=True)[:, : num_patches - keep.shape[1]]


def _rect(top: Tensor, left: Tensor, h: Tensor, w: Tensor, grid: int) -> Tensor:
    """(B, grid*grid) bool masks of the rectangles [top, top+h) x [left, left+w)."""
    rows = torch.arange(grid, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])
    in_cols = (rows >= left[:, None]) & (rows < (left + w)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :]).flatten(1)


def _randint(high: Tensor, gen: torch.Generator) -> Tensor:
    """Uniform integers in [0, high) elementwise (high >= 1)."""
    return (per_item_rand(high.shape, gen, high.device) * high).long().clamp(max=high - 1)


def block_mask(batch: int, grid: int, mask_ratio: float, gen: torch.Generator, device,
               min_patches: int | None = None, aspect: tuple[float, float] = (0.3, 1 / 0.3),
               rounds: int = 40) -> Tensor:
    """(batch, grid*grid) bool, True = masked. BEiT's block-wise masking: add random rectangles
    (area uniform in [min_patches, what is still to mask], log-uniform aspect) while the masked
    count stays within round(mask_ratio * N); a fixed number of batched rounds replaces BEiT's
    per-sample retry loop. min_patches defaults to BEiT's 16 of 196, scaled to the grid."""
    n = grid * grid
    target = round(mask_ratio * n)
    min_patches = min_patches or max(1, round(16 / 196 * n))
    mask = torch.zeros(batch, n, dtype=torch.bool, device=device)
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(rounds):
        remaining = (target - mask.sum(1)).clamp(min=0).float()
        high = remaining.clamp(min=min_patches)
        area = min_patches + per_item_rand((batch,), gen, device) * (high - min_patches)
        ratio = torch.exp(log_lo + per_item_rand((batch,), gen, device) * (log_hi - log_lo))
        h = torch.sqrt(area * ratio).round().long().clamp(1, grid)
        w = torch.sqrt(area / ratio).round().long().clamp(1, grid)
        top, left = _randint(grid - h + 1, gen), _randint(grid - w + 1, gen)
        grown = mask | _rect(top, left, h, w, grid)
        ok = (grown.sum(1) <= target)[:, None]
        mask = torch.where(ok, grown, mask)
    return mask


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


def _host_rect(top: np.ndarray, left: np.ndarray, h: int, w: int, grid: int) -> np.ndarray:
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
    block = _host_rect(rng.integers(0, grid - ch + 1, total)[mine], rng.integers(0, grid - cw + 1, total)[mine],
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
