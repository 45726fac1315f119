"""Images stored keeping their aspect ratio, larger than the training size: each is resized so its
shorter side is `short_side` (never enlarged), and placed top-left in one canvas for the dataset
(its largest stored height x width) with its (h, w) kept next to the pixels; crops are then cut
from that region (core/augment/stored_crops.py) instead of from an image squashed square.

The longer side is kept up to MAX_STORED_ASPECT x the shorter: 4:3, the commonest photo shape
(ImageNet's median) and the widest crop RandomResizedCrop's ratio (3/4, 4/3) asks for at full
scale; a wider image keeps its central 4:3 (cropped, not squashed). Memory: a canvas of mixed
portrait and landscape images is (4/3 s)^2 per item, 1.78x a square of side s, 2.3x the
224-px square of the old path at s = 256; a larger cap (16:9) would be 3.2x s^2."""
from __future__ import annotations

import math

import numpy as np
import torch

MAX_STORED_ASPECT = 4 / 3
EVAL_FRACTION = 0.875  # the centre crop's side / shorter side (resize 256, crop 224)


def training_side(short_side: int) -> int:
    """The default training size for images stored at `short_side`: 224 for 256."""
    return max(1, int(round(short_side * EVAL_FRACTION)))


def fit_short_side(image: np.ndarray, short_side: int, max_aspect: float = MAX_STORED_ASPECT) -> np.ndarray:
    """(H, W, C) uint8 with its longer side cut (centred) to at most max_aspect x the shorter,
    then resized keeping its aspect so that the shorter side is `short_side` (never enlarged)."""
    from PIL import Image

    h, w = image.shape[:2]
    longest = int(math.floor(min(h, w) * max_aspect))
    if w > longest:
        left = (w - longest) // 2
        image = image[:, left : left + longest]
    elif h > longest:
        top = (h - longest) // 2
        image = image[top : top + longest]
    h, w = image.shape[:2]
    if min(h, w) <= short_side:
        return np.ascontiguousarray(image)
    scale = short_side / min(h, w)
    if h <= w:
        size = (short_side, max(short_side, round(w * scale)))
    else:
        size = (max(short_side, round(h * scale)), short_side)
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else np.ascontiguousarray(image))
    out = np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=None), dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def to_canvas(images: list[np.ndarray], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """((N, C, H_max, W_max) uint8 with image i in its top-left, zeros elsewhere; (N, 2) int16 (h, w))."""
    sizes = np.array([img.shape[:2] for img in images], dtype=np.int16).reshape(-1, 2)
    height, width = (int(sizes[:, 0].max()), int(sizes[:, 1].max())) if len(images) else (1, 1)
    canvas = np.zeros((len(images), channels, height, width), dtype=np.uint8)
    for i, img in enumerate(images):
        if img.shape[2] != channels:
            img = np.repeat(img, channels, axis=2)
        canvas[i, :, : img.shape[0], : img.shape[1]] = img.transpose(2, 0, 1)
    return canvas, sizes


def center_cropped(data, side: int, chunk: int = 1024):
    """An ArrayDataset of (N, C, side, side) evaluation inputs (resize the shorter side, centre
    crop; core.augment.stored_crops.center_crops) from one stored keeping its aspect; square
    datasets are returned as they are."""
    from core.augment.stored_crops import center_crops
    from core.data.arrays import ArrayDataset

    if data.sizes is None:
        return data
    parts = [center_crops(data.images[i : i + chunk], data.sizes[i : i + chunk], side, EVAL_FRACTION)
             for i in range(0, len(data), chunk)]
    images = torch.cat(parts) if parts else torch.zeros((0, data.channels, side, side), dtype=torch.uint8)
    return ArrayDataset(images, data.labels)


def bytes_per_item(channels: int, height: int, width: int, with_sizes: bool) -> int:
    """Memory one stored item takes: its pixels, and its (h, w) (two int16) on a canvas."""
    return channels * height * width + (4 if with_sizes else 0)


def valid_channel_stats(images: torch.Tensor, sizes: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the valid pixels (scaled to [0, 1]), padding left out."""
    n, channels, height, width = images.shape
    rows = torch.arange(height).view(1, -1, 1) < sizes[:, 0].view(-1, 1, 1).long()
    cols = torch.arange(width).view(1, 1, -1) < sizes[:, 1].view(-1, 1, 1).long()
    valid = (rows & cols).unsqueeze(1).expand(n, channels, height, width)
    x = images.transpose(0, 1)[valid.transpose(0, 1)].view(channels, -1).double().div_(255)
    return x.mean(1).tolist(), x.std(1).clamp_min(1e-3).tolist()
