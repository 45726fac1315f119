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

        def part(xk: str, yk: str, sk: str) -> ArrayDataset:
            images = as_images(arrays[xk])
            labels = arrays[yk].astype(np.int64) if yk in arrays else np.full(len(images), -1)
            sizes = torch.from_numpy(arrays[sk].astype(np.int64)) if sk in arrays else None  # a scan's canvas
            return ArrayDataset(images, torch.from_numpy(labels), sizes)

        train = part("x", "y", "s")
        if "x_test" in arrays:
            return train, part("x_test", "y_test", "s_test")
    return split_by_fraction(train, 0.2, seed=0)


LOADERS = {"npz": load_npz}


def npz_item(path: str | Path, name: str, index: int) -> tuple[np.ndarray | None, int]:
    """(array[index], len(array)) of one array of an uncompressed .npz (what np.savez writes),
    read through a memory map at the member's offset: one item's bytes, never the whole array.
    The item is None when index is out of range."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo(name + ".npy")
        except KeyError:
            raise DatasetUnavailable(f"{path} has no array {name!r}") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise DatasetUnavailable(f"array {name!r} of {path} is compressed; it cannot be read item by item")
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(member)
            header_bytes = member.tell()
    with open(path, "rb") as f:  # the member's data starts after its local header (APPNOTE 4.3.7)
        f.seek(info.header_offset)
        local = f.read(30)
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    offset = info.header_offset + 30 + name_len + extra_len + header_bytes
    if not shape or shape[0] == 0:
        return None, 0 if not shape else shape[0]
    if fortran or dtype.hasobject:
        raise DatasetUnavailable(f"array {name!r} of {path} is not a plain C-ordered array")
    if not 0 <= index < shape[0]:
        return None, shape[0]
    rows = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    return np.array(rows[index]), shape[0]
