"""Datasets stored as files: .npz with x/y arrays and IDX pairs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.data.arrays import ArrayDataset, DatasetUnavailable, split_by_fraction


def as_images(x: np.ndarray) -> torch.Tensor:
    """Accept (N,H,W), (N,H,W,C) or (N,C,H,W) arrays; return (N,C,H,W) uint8."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DatasetUnavailable(f"images must be (N,H,W[,C]) with 1 or 3 channels, got shape {x.shape}")
    if x.dtype != np.uint8:
        x = np.asarray(x, dtype=np.float64)
        scale = 255.0 if x.max(initial=0) <= 1.0 else 1.0
        x = np.clip(np.round(x * scale), 0, 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(x))


def load_npz(path: str) -> tuple[ArrayDataset, ArrayDataset]:
    """An .npz with x (and optional y); x_test/y_test give the test split, else 20 % seeded."""
    if not Path(path).is_file():
        raise DatasetUnavailable(f"no such file: {path}")
    with np.load(path, allow_pickle=False) as arrays:
        if "x" not in arrays:
            raise DatasetUnavailable("npz must contain an array named 'x'")

        def part(xk: str, yk: str) -> ArrayDataset:
            images = as_images(arrays[xk])
            labels = arrays[yk].astype(np.int64) if yk in arrays else np.full(len(images), -1)
            return ArrayDataset(images, torch.from_numpy(labels))

        train = part("x", "y")
        if "x_test" in arrays:
            return train, part("x_test", "y_test")
    return split_by_fraction(train, 0.2, seed=0)


LOADERS = {"npz": load_npz}
