"""Whole-dataset preprocessing done once before training (resize, channel conversion)."""
from __future__ import annotations

import torch.nn.functional as F

from core.data.arrays import ArrayDataset


def resize(data: ArrayDataset, size: int) -> ArrayDataset:
    if data.image_size == size and data.images.shape[-2] == size:
        return data
    x = F.interpolate(data.images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return ArrayDataset(x.round().clamp(0, 255).to(data.images.dtype), data.labels)
