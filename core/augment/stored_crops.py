"""Crops of images stored keeping their aspect ratio (core/data/canvas.py): each item fills the
top-left (h, w) of a fixed canvas, and every crop is drawn, cut and resized inside that valid
region, for the whole batch with one grid_sample, so that no padding ever reaches a view.

The training loop says which regions hold for a step with `regions(sizes, side)`; the view
maker's crop call (`resized_crop_flip` here) then uses them, and falls back to the square op
(core.augment.ops.resized_crop_flip) outside, so same-size datasets take exactly today's path."""
from __future__ import annotations

import contextvars
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from core.augment import ops
from core.distributed import per_item_rand

_regions: contextvars.ContextVar = contextvars.ContextVar("regions", default=None)


@contextmanager
def regions(sizes: Tensor, side: int):
    """Inside, the batch's images are canvases whose item i is valid in its top-left
    sizes[i] = (h, w) pixels, and `side` is the training side (what a crop size of 1.0 means)."""
    token = _regions.set((sizes, side))
    try:
        yield
    finally:
        _regions.reset(token)


def input_side(x: Tensor) -> int:
    """The side a crop size fraction refers to: the training side on canvases, else the input's."""
    active = _regions.get()
    return x.shape[-1] if active is None else active[1]


def resized_crop_flip(x: Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                      flip_p: float, gen: torch.Generator, trace: dict | None = None) -> Tensor:
    """ops.resized_crop_flip, inside each item's valid region when `regions` is active."""
    active = _regions.get()
    if active is None:
        return ops.resized_crop_flip(x, size, scale, ratio, flip_p, gen, trace)
    return region_resized_crop_flip(x, active[0], size, scale, ratio, flip_p, gen, trace)


def region_resized_crop_flip(x: Tensor, sizes: Tensor, size: int, scale: tuple[float, float],
                             ratio: tuple[float, float], flip_p: float, gen: torch.Generator,
                             trace: dict | None = None) -> Tensor:
    """Random resized crop plus flip of item i inside its valid region sizes[i] = (h, w): the area
    fraction (uniform in `scale`) is of the true image area h * w, the aspect (log-uniform in
    `ratio`) is the crop's own in pixels, drawn where a crop of that area fits (as
    ops.resized_crop_flip, which this equals when every region is the whole square canvas), and
    the crop is cut and resized from the stored pixels. Draws the same numbers as the square op."""
    b, device = x.shape[0], x.device
    h, w = sizes[:, 0].to(device, torch.float32), sizes[:, 1].to(device, torch.float32)
    area = ops.uniform(b, *scale, gen, device)
    # crop width fraction sqrt(a r h / w) <= 1 and height fraction sqrt(a w / (r h)) <= 1:
    # log r within log a + log(w / h) .. -log a + log(w / h)
    shape_log = torch.log(w / h)
    lowest, highest = torch.log(area) + shape_log, -torch.log(area) + shape_log
    low = torch.minimum(torch.maximum(torch.full_like(area, math.log(ratio[0])), lowest), highest)
    high = torch.minimum(torch.maximum(torch.full_like(area, math.log(ratio[1])), lowest), highest)
    aspect = torch.exp(low + per_item_rand((b,), gen, device) * (high - low))
    fw = torch.sqrt(area * aspect * h / w).clamp(max=1.0)  # fractions of the valid width and height
    fh = torch.sqrt(area * w / (aspect * h)).clamp(max=1.0)
    cx = ops.uniform(b, 0, 1, gen, device) * (1 - fw) + fw / 2
    cy = ops.uniform(b, 0, 1, gen, device) * (1 - fh) + fh / 2
    flip = ops.coin(b, flip_p, gen, device)
    if trace is not None:
        trace.update(area=fw * fh, aspect=fw * w / (fh * h), flip=flip)
    return _sample(x, h, w, cx, cy, fw, fh, size, flip)


def center_crops(images: Tensor, sizes: Tensor, size: int, fraction: float = 1.0) -> Tensor:
    """(N, C, size, size) uint8 evaluation inputs from canvases: the central square of side
    `fraction` x the shorter valid side (the usual resize-shorter-side-then-center-crop: 0.875
    for 256 -> 224), resized to `size`; batched, never reading padding."""
    x = images.float()
    h, w = sizes[:, 0].to(x.device, torch.float32), sizes[:, 1].to(x.device, torch.float32)
    side = torch.minimum(h, w) * fraction
    half = torch.full_like(h, 0.5)
    out = _sample(x, h, w, half, half, side / w, side / h, size, torch.zeros_like(h, dtype=torch.bool))
    return out.round().clamp(0, 255).to(torch.uint8)


def _sample(x: Tensor, h: Tensor, w: Tensor, cx: Tensor, cy: Tensor, fw: Tensor, fh: Tensor, size: int,
            flip: Tensor) -> Tensor:
    """Bilinear samples of the boxes (centre cx, cy; size fw, fh; fractions of each item's valid
    h x w) on a size x size grid. Sample points are clamped to the valid pixel centres (torch's
    border padding, for the region), so the bilinear weight of any padding pixel is exactly 0."""
    b, _, canvas_h, canvas_w = x.shape
    sign = torch.where(flip, -1.0, 1.0)
    steps = (torch.arange(size, device=x.device, dtype=torch.float32) + 0.5) / size - 0.5  # -0.5 .. 0.5
    px = (cx.view(-1, 1) + sign.view(-1, 1) * fw.view(-1, 1) * steps) * w.view(-1, 1)  # pixel coordinates
    py = (cy.view(-1, 1) + fh.view(-1, 1) * steps) * h.view(-1, 1)
    px = torch.minimum(px.clamp(min=0.5), w.view(-1, 1) - 0.5)
    py = torch.minimum(py.clamp(min=0.5), h.view(-1, 1) - 0.5)
    gx = px * (2 / canvas_w) - 1  # align_corners=False: pixel centre i + 0.5 is at (2i + 1) / W - 1
    gy = py * (2 / canvas_h) - 1
    grid = torch.stack([gx.view(b, 1, size).expand(b, size, size), gy.view(b, size, 1).expand(b, size, size)], -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)
