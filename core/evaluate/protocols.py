"""Protocols by name. Feature protocols are pure functions over pre-extracted features
(train_x, train_y, test_x, test_y, seed, **options) -> {metric: value}; `finetune` needs the
encoder itself and is run by the caller with core.evaluate.finetune.finetune."""
from __future__ import annotations

import inspect
from typing import Callable

from torch import Tensor

from core.evaluate.clustering import clustering
from core.evaluate.fewshot import few_shot
from core.evaluate.health import health
from core.evaluate.knn import knn_accuracy
from core.evaluate.linear import linear_probe

Protocol = Callable[..., dict[str, float]]
PROTOCOLS: dict[str, Protocol] = {}
ENCODER_PROTOCOLS = ("finetune",)  # need the encoder, not features


def protocol(name: str):
    def wrap(fn):
        PROTOCOLS[name] = fn
        return fn

    return wrap


@protocol("knn")
def knn(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int = 0,
        k: int | list[int] = (20, 200), temperature: float = 0.07) -> dict[str, float]:
    """Weighted kNN top-1 for each k: metrics 'top1@k20', 'top1@k200'. A k above the number of
    training items is capped to it, and the metric named by the k used (200 neighbours of 160
    items would be every item: the majority class, reported as if it were k=200)."""
    ks = [k] if isinstance(k, int) else list(k)
    if not ks or any(int(kk) < 1 for kk in ks):
        raise ValueError("knn k must be positive integers")
    used = sorted({min(int(kk), len(train_x)) for kk in ks})
    return {f"top1@k{kk}": knn_accuracy(train_x, train_y, test_x, test_y, kk, temperature) for kk in used}


protocol("linear")(linear_probe)
protocol("few-shot")(few_shot)
protocol("clustering")(clustering)
protocol("health")(health)


def protocol_names() -> list[str]:
    return sorted([*PROTOCOLS, *ENCODER_PROTOCOLS])


def protocol_options(name: str) -> set[str]:
    """The option names a protocol accepts (everything after the data arguments and seed)."""
    if name == "finetune":
        from core.evaluate.finetune import finetune as fn

        skip = {"encoder", "train_images", "train_labels", "test_images", "test_labels", "mean", "std", "seed",
                "device", "should_stop"}
    elif name in PROTOCOLS:
        fn, skip = PROTOCOLS[name], {"train_x", "train_y", "test_x", "test_y", "seed"}
    else:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(protocol_names())}")
    return {p for p in inspect.signature(fn).parameters if p not in skip}


def check_options(name: str, options: dict) -> None:
    unknown = set(options) - protocol_options(name)
    if unknown:
        raise ValueError(f"unknown options for protocol {name}: {', '.join(sorted(unknown))}; "
                         f"it accepts: {', '.join(sorted(protocol_options(name))) or 'none'}")


def run_protocol(name: str, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int = 0,
                 **options) -> dict[str, float]:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown feature protocol {name!r}; choose one of {', '.join(sorted(PROTOCOLS))}")
    check_options(name, options)
    return PROTOCOLS[name](train_x, train_y, test_x, test_y, seed=seed, **options)
