"""MAE's reconstruction loss (He et al., 2021, arXiv:2111.06377): mean squared error on the masked
patches only, against per-patch normalised pixels when norm_pix is on."""
from __future__ import annotations

from torch import Tensor


def patch_pixels(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, N, p*p*C) pixels of each patch, patches in row-major grid order (the
    order of VisionTransformer.patchify), pixels as (p, p, C) like MAE's patchify."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def normalize_patches(target: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch standardisation over its pixels (unbiased variance, as MAE's code)."""
    mean = target.mean(-1, keepdim=True)
    var = target.var(-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def masked_mse(pred: Tensor, target: Tensor, norm_pix: bool = True) -> Tensor:
    """pred, target: (B, M, P) predictions and pixels of the M masked patches of each image.
    Mean over pixels per patch, then over all masked patches."""
    if norm_pix:
        target = normalize_patches(target)
    return (pred - target).pow(2).mean(-1).mean()
