"""Multi-crop helpers (SwAV, arXiv:2006.09882, sec. 3.2): global crops are the views of the
largest size, the others are local; crops of one size go through a network as one batch."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from core.augment import ViewConfig


def global_crop_count(config: ViewConfig) -> int:
    """How many views per image have the largest size (the global crops)."""
    largest = max(c.size for c in config.crops)
    return sum(c.count for c in config.crops if c.size == largest)


def split_crops(views: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """(global crops, local crops), keeping each group's order."""
    largest = max(v.shape[-1] for v in views)
    return [v for v in views if v.shape[-1] == largest], [v for v in views if v.shape[-1] != largest]


def forward_crops(net: nn.Module, crops: list[Tensor]) -> list[Tensor]:
    """net applied to every crop, batching consecutive crops of the same size together (as
    DINO's MultiCropWrapper does). Returns one output per crop, in order."""
    outputs: list[Tensor] = []
    start = 0
    while start < len(crops):
        end = start
        while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
            end += 1
        outputs += net(torch.cat(crops[start:end])).chunk(end - start)
        start = end
    return outputs


def embed_crops(backbone: nn.Module, head: nn.Module, crops: list[Tensor]) -> list[Tensor]:
    """head(backbone(crop)) for every crop: the backbone batched per crop size, the head once
    over all crops, so that its batch norm sees every crop (SwAV's and DINO's MultiCrop
    forward). Returns one output per crop, in order."""
    features = forward_crops(backbone, crops)
    return list(head(torch.cat(features)).chunk(len(crops)))
