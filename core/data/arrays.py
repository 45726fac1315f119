"""In-memory image datasets and their seeded split."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from core.data.errors import DatasetUnavailable

__all__ = ["ArrayDataset", "DatasetUnavailable", "split_by_fraction"]


@dataclass
class ArrayDataset:
    """images: (N, C, H, W) uint8; labels: (N,) int64, -1 where unlabelled. sizes: (N, 2) (h, w)
    when the images are stored keeping their aspect (core/data/canvas.py): item i is valid in
    its top-left h x w only; None when every image fills the array."""

    images: Tensor
    labels: Tensor
    sizes: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if len(self.labels) != len(self.images):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def num_classes(self) -> int:
        labelled = self.labels[self.labels >= 0]
        return int(labelled.max()) + 1 if len(labelled) else 0

    def subset(self, index: Tensor) -> "ArrayDataset":
        return ArrayDataset(self.images[index], self.labels[index],
                            None if self.sizes is None else self.sizes[index])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of pixel values scaled to [0, 1]."""
        x = self.images.float().div_(255).transpose(0, 1).reshape(self.channels, -1)
        return x.mean(1).tolist(), x.std(1).clamp_min(1e-3).tolist()

    def content_hash(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images.numpy()).tobytes())
        h.update(np.ascontiguousarray(self.labels.numpy()).tobytes())
        return h.hexdigest()


def split_by_fraction(data: ArrayDataset, test_fraction: float, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """A seeded random split into (train, test), stratified by label when every labelled class has
    at least two items and the test set can hold one of each (so a small two-class folder does not
    end up 29 vs 11 in its test set); a plain seeded split otherwise."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    n_test = max(1, int(round(len(data) * test_fraction)))
    labels = data.labels.numpy()
    counts = np.unique(labels, return_counts=True)[1]
    if len(counts) > 1 and counts.min() >= 2 and len(counts) <= min(n_test, len(data) - n_test):
        from sklearn.model_selection import train_test_split

        train_idx, test_idx = train_test_split(np.arange(len(data)), test_size=n_test, stratify=labels,
                                               random_state=seed)
        return data.subset(torch.from_numpy(train_idx)), data.subset(torch.from_numpy(test_idx))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(order[n_test:]), data.subset(order[:n_test])

