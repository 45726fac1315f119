"""Image files (from an archive, a folder or WebDataset samples) to uint8 arrays, with labels from
class sub-folders and train/test from top-level `train/` and `test/` folders."""
from __future__ import annotations

import io
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch

from core.data.arrays import ArrayDataset, DatasetUnavailable, split_by_fraction

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
# Decoders PIL may use: plain raster formats only (EPS, for one, would run Ghostscript).
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
SPLIT_FOLDERS = {"train": "train", "test": "test"}
MAX_UNREADABLE_LISTED = 100
MAX_SIDE = 1024  # a scanned image is never kept larger: a dataset's arrays are N x side x side
MAX_ASPECT = 16.0  # longer side / shorter side; past it a square resize keeps nothing of the image


class UnreadableImage(ValueError):
    pass


def decode(data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """(H, W, C) uint8 array with C = 1 (grayscale) or 3, and the file's original mode."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
            if img.width * img.height > max_pixels:
                raise UnreadableImage(f"{img.width}x{img.height} pixels is over the limit of {max_pixels}")
            if max(img.width, img.height) > MAX_ASPECT * min(img.width, img.height):
                raise UnreadableImage(f"{img.width}x{img.height} has an aspect ratio over {MAX_ASPECT:g}:1")
            img.load()
    except UnreadableImage:
        raise
    except Exception as exc:  # PIL raises many types for bad files
        raise UnreadableImage(f"not a readable image ({type(exc).__name__})") from exc
    mode = img.mode
    if mode in GRAY_MODES:
        img = img.convert("L")
        return np.asarray(img, dtype=np.uint8)[:, :, None], mode
    return np.asarray(img.convert("RGB"), dtype=np.uint8), mode


def label_and_split(path: str) -> tuple[str | None, str | None]:
    """('train'|'test'|None, class name or None) from a member path like train/cat/1.png."""
    folders = path.split("/")[:-1]
    split = None
    if folders and folders[0].lower() in SPLIT_FOLDERS:
        split, folders = SPLIT_FOLDERS[folders[0].lower()], folders[1:]
    return split, (folders[0] if folders else None)


def resize_array(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size:
        return image
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None), dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def fit_side(image: np.ndarray, side: int) -> np.ndarray:
    """(H, W, C) shrunk, keeping its aspect, so that its longer side is at most `side`."""
    from PIL import Image

    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    scale = side / max(h, w)
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    out = np.asarray(pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR),
                     dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


@dataclass
class ImageCollection:
    """What a scan found: decoded images with their split and class, plus what it could not read."""

    images: list[np.ndarray] = field(default_factory=list)
    classes: list[str | None] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)
    modes: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)
    unreadable: list[dict] = field(default_factory=list)
    n_unreadable: int = 0

    def add_file(self, path: str, data: bytes, max_pixels: int) -> None:
        try:
            image, mode = decode(data, max_pixels)
        except UnreadableImage as exc:
            self.n_unreadable += 1
            if len(self.unreadable) < MAX_UNREADABLE_LISTED:
                self.unreadable.append({"path": path, "reason": str(exc)})
            return
        split, label = label_and_split(path)
        self.add(image, mode, label, split)

    def add(self, image: np.ndarray, mode: str, label: str | None, split: str | None) -> None:
        self.sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
        self.images.append(fit_side(image, MAX_SIDE))  # what is held until build() is bounded too
        self.classes.append(label)
        self.splits.append(split)
        self.modes[mode] += 1

    def target_size(self, declared: int | None) -> int:
        """The declared side, else the most common side, at most MAX_SIDE (images are resized to a square)."""
        if declared:
            return min(declared, MAX_SIDE)
        (w, h), _ = max(((tuple(map(int, k.split("x"))), n) for k, n in self.sizes.items()), key=lambda kv: kv[1])
        return min(max(w, h), MAX_SIDE)

    def build(self, image_size: int | None, test_fraction: float, seed: int,
              short_side: int | None = None,
              non_square_short_side: int | None = None) -> tuple[ArrayDataset, ArrayDataset, dict]:
        """(train, test, facts) as uint8 arrays at one size and channel count; with `short_side`,
        kept at their aspect on a canvas with their sizes (core/data/canvas.py). Without
        `image_size` or `short_side`, a set with any non-square image is kept at its aspect with
        `non_square_short_side` (squashing it square would distort it); an all-square set is stored
        square, where nothing is distorted."""
        if not self.images:
            reason = "no readable images"
            if self.n_unreadable:
                first = self.unreadable[0]
                reason += f" ({self.n_unreadable} unreadable files, e.g. {first['path']!r}: {first['reason']})"
            raise DatasetUnavailable(reason)
        channels = 3 if any(img.shape[2] == 3 for img in self.images) else 1
        resized, sizes, stored = 0, None, {}
        if not (image_size or short_side) and non_square_short_side and \
                any(img.shape[0] != img.shape[1] for img in self.images):
            short_side = non_square_short_side
        if short_side:
            from core.data.canvas import fit_short_side, to_canvas, training_side

            kept = [fit_short_side(img, short_side) for img in self.images]
            resized = sum(a.shape[:2] != b.shape[:2] for a, b in zip(kept, self.images))
            arrays, sizes = to_canvas(kept, channels)
            sizes = torch.from_numpy(sizes.astype(np.int64))
            # images are never enlarged: a folder of smaller ones is stored (and trained) at their own side
            held = min(short_side, int(np.median([min(img.shape[:2]) for img in kept])))
            stored = {"stored_short_side": held, "image_size": training_side(held), "canvas": list(arrays.shape[2:])}
        else:
            size = self.target_size(image_size)
            arrays = np.empty((len(self.images), channels, size, size), dtype=np.uint8)
            for i, img in enumerate(self.images):
                if img.shape[:2] != (size, size):
                    resized += 1
                    img = resize_array(img, size)
                if img.shape[2] != channels:
                    img = np.repeat(img, channels, axis=2)
                arrays[i] = img.transpose(2, 0, 1)
        names = sorted({c for c in self.classes if c is not None})
        index = {name: i for i, name in enumerate(names)}
        labels = np.array([index[c] if c is not None else -1 for c in self.classes], dtype=np.int64)
        data = ArrayDataset(torch.from_numpy(arrays), torch.from_numpy(labels), sizes)
        is_test = torch.tensor([s == "test" for s in self.splits])
        if bool(is_test.any()):
            train = data.subset((~is_test).nonzero().squeeze(1))
            test = data.subset(is_test.nonzero().squeeze(1))
            split = "source"
            if len(train) == 0:
                raise DatasetUnavailable("the archive has a test/ folder but no training images")
        elif len(data) >= 2:
            train, test = split_by_fraction(data, test_fraction, seed)
            split = f"seeded fraction {test_fraction} (seed {seed})"
        else:
            train, test, split = data, data.subset(torch.zeros(0, dtype=torch.long)), "none (one image)"
        facts = {"classes": names, "modes": dict(self.modes), "sizes": dict(self.sizes), "resized": resized,
                 "unreadable": self.unreadable, "n_unreadable": self.n_unreadable, "split": split, **stored}
        return train, test, facts


def collect(files: Iterable[tuple[str, bytes]], max_pixels: int) -> ImageCollection:
    found = ImageCollection()
    for path, data in files:
        if path.rsplit("/", 1)[-1].startswith(".") or "__MACOSX/" in path:
            continue  # OS metadata (.DS_Store, resource forks), not part of the dataset
        found.add_file(path, data, max_pixels)
    return found
