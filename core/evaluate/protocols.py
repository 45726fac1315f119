"""Protocols by name over pre-extracted features: each returns {metric: value}."""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from core.evaluate.knn import knn_accuracy

Protocol = Callable[..., dict[str, float]]
PROTOCOLS: dict[str, Protocol] = {}


def protocol(name: str):
    def wrap(fn):
        PROTOCOLS[name] = fn
        return fn

    return wrap


@protocol("knn")
def knn(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int = 0,
        k: int | list[int] = 20, temperature: float = 0.07) -> dict[str, float]:
    ks = [k] if isinstance(k, int) else list(k)
    return {f"top1_k{kk}": knn_accuracy(train_x, train_y, test_x, test_y, kk, temperature) for kk in ks}


def run_protocol(name: str, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int = 0,
                 **options) -> dict[str, float]:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name](train_x, train_y, test_x, test_y, seed=seed, **options)
