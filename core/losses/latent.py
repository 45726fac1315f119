"""Regression onto teacher latents: I-JEPA's layer-normed targets (arXiv:2301.08243) and data2vec's
layer-normed average of the top-K blocks (arXiv:2202.03555)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core.losses.precision import fp32


def feature_norm(x: Tensor) -> Tensor:
    """Parameter-free layer norm over the last (feature) dimension."""
    return F.layer_norm(x, x.shape[-1:])


@fp32
def top_k_average(layers: list[Tensor], k: int) -> Tensor:
    """data2vec targets: the average of the raw outputs (B, N, D) of the last k blocks, then ONE
    layer norm over the features without affine parameters, in float32 (fairseq data2vec_vision
    with layer_norm_targets=True and no per-layer norm, the vision config; the data2vec_vision
    code's --post_target_layer_norm)."""
    if not 1 <= k <= len(layers):
        raise ValueError(f"top_k must be in 1..{len(layers)}, got {k}")
    return feature_norm(torch.stack(layers[-k:]).mean(0))


def latent_regression(pred: Tensor, target: Tensor, loss: str = "smooth_l1", beta: float = 1.0,
                      mask: Tensor | None = None) -> Tensor:
    """pred, target: (..., D). Elementwise smooth_l1 (threshold beta; I-JEPA's code) or squared
    error, averaged over all elements, or with `mask` (...) bool over the positions, over the
    masked positions' elements only (a fixed-shape `per[mask].mean()`: no data-dependent shape)."""
    if loss == "smooth_l1":
        per = F.smooth_l1_loss(pred, target, reduction="none", beta=beta)
    elif loss == "mse":
        per = (pred - target).pow(2)
    else:
        raise ValueError(f"unknown latent loss {loss!r}; choose smooth_l1 or mse")
    if mask is None:
        return per.mean()
    weight = mask.to(per.dtype)
    return (per.sum(-1) * weight).sum() / (weight.sum().clamp(min=1) * per.shape[-1])
