"""Whole-dataset preprocessing done once before training (resize, channel conversion)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core.data.arrays import ArrayDataset


def resize_images(images: Tensor, size: int) -> Tensor:
    """(N, C, H, W) pixel values in [0, 255] -> (N, C, size, size) uint8, bilinear with antialiasing."""
    if images.shape[-2:] == (size, size) and images.dtype == torch.uint8:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def resize(data: ArrayDataset, size: int) -> ArrayDataset:
    if data.image_size == size and data.images.shape[-2] == size:
        return data
    return ArrayDataset(resize_images(data.images, size), data.labels)
