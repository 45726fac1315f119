"""Built-in image datasets: sklearn's bundled digits and Fashion-MNIST from the Debian package
(the text built-ins are in core/data/text_builtins.py; core.modalities.BUILTINS lists them all)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from core.data.arrays import ArrayDataset, DatasetUnavailable, split_by_fraction
from core.data.idx import read_idx
from core.modalities import BUILTINS, IMAGE, builtin_names

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
NAMES = builtin_names(IMAGE)


# class names by label (Fashion-MNIST's from its paper, arXiv:1708.07747, Table 1)
CLASS_NAMES = {"digits": tuple(str(d) for d in range(10)),
               "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                 "Bag", "Ankle boot")}


def class_names(name: str) -> tuple[str, ...]:
    return CLASS_NAMES.get(name, ())


def load(name: str) -> tuple[ArrayDataset, ArrayDataset]:
    if name == "digits":
        return digits()
    if name == "fashion-mnist":
        return fashion_mnist()
    if name in BUILTINS:
        raise DatasetUnavailable(f"{name} is a {BUILTINS[name]} dataset (core.data.sources.load_builtin)")
    raise DatasetUnavailable(f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTINS)}")


def digits() -> tuple[ArrayDataset, ArrayDataset]:
    """sklearn's 1,797 8x8 digits (values 0..16), split 80/20 with a fixed seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None]
    data = ArrayDataset(torch.from_numpy(images), torch.from_numpy(bunch.target.astype(np.int64)))
    return split_by_fraction(data, test_fraction=0.2, seed=0)


def fashion_mnist_dir() -> Path:
    candidates = [os.environ.get("DARKMATTER_FASHION_MNIST_DIR", ""), *FASHION_MNIST_DIRS]
    for folder in filter(None, candidates):
        if (Path(folder) / "train-images-idx3-ubyte.gz").exists():
            return Path(folder)
    raise DatasetUnavailable(
        "fashion-mnist is not installed: run `apt-get install dataset-fashion-mnist` "
        "or set DARKMATTER_FASHION_MNIST_DIR to a folder with its IDX files"
    )


def fashion_mnist() -> tuple[ArrayDataset, ArrayDataset]:
    """The official 60,000/10,000 split, 28x28 grayscale."""
    folder = fashion_mnist_dir()

    def part(prefix: str) -> ArrayDataset:
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        return ArrayDataset(torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64)))

    return part("train"), part("t10k")

