"""Batched image ops on float tensors in [0, 1] of shape (B, C, H, W); randomness from a generator.

Each random op takes an optional `trace` dict and, when given one, stores what it sampled there
(per-image tensors, under the names ViewMaker.trace documents); tracing draws nothing extra."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from core.distributed import per_item_rand


def uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> Tensor:
    return per_item_rand((n,), gen, device) * (high - low) + low


def coin(n: int, p: float, gen: torch.Generator, device) -> Tensor:
    return per_item_rand((n,), gen, device) < p


def resized_crop_flip(x: Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                      flip_p: float, gen: torch.Generator, trace: dict | None = None) -> Tensor:
    """Random resized crop (area fraction uniform in `scale`, log-aspect uniform in `ratio`) plus
    horizontal flip, done for the whole batch with one affine grid_sample.

    Unlike torchvision's RandomResizedCrop (10 tries, then a central fallback) nothing is
    resampled: the aspect is drawn in the part of `ratio` where a crop of the drawn area fits
    (w, h <= 1 needs area <= aspect <= 1 / area), so the realised area is always the drawn one.
    Where no aspect in `ratio` fits (a ratio range excluding 1 with a large area), the nearest
    aspect that fits is used: the area stays in `scale`, the aspect leaves `ratio`."""
    b, device = x.shape[0], x.device
    area = uniform(b, *scale, gen, device)
    fits = -torch.log(area)  # the crop fits where |log aspect| <= -log area
    low = torch.full_like(area, math.log(ratio[0])).clamp(-fits, fits)
    high = torch.full_like(area, math.log(ratio[1])).clamp(-fits, fits)
    aspect = torch.exp(low + per_item_rand((b,), gen, device) * (high - low))
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # the clamp only absorbs rounding
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = uniform(b, 0, 1, gen, device) * (1 - w) + w / 2
    cy = uniform(b, 0, 1, gen, device) * (1 - h) + h / 2
    flip = coin(b, flip_p, gen, device)
    if trace is not None:
        trace.update(area=w * h, aspect=w / h, flip=flip)
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx * 2 - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy * 2 - 1
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def gray(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    weights = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def blend(a: Tensor, b: Tensor, factor: Tensor) -> Tensor:
    return (factor.view(-1, 1, 1, 1) * a + (1 - factor.view(-1, 1, 1, 1)) * b).clamp(0, 1)


def rotate_hue(x: Tensor, turns: Tensor) -> Tensor:
    """Hue shift by `turns` (fraction of a full turn) as a rotation in YIQ space."""
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    angle = turns * 2 * math.pi
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq).clamp(0, 1)


def color_jitter(x: Tensor, p: float, brightness: float, contrast: float, saturation: float, hue: float,
                 gen: torch.Generator, trace: dict | None = None) -> Tensor:
    """With probability p per image: brightness, contrast, saturation factors uniform in
    [1 - s, 1 + s] and a hue shift uniform in [-hue, hue] turns, in that order. Factors are drawn
    for every image (applied or not) so the random stream does not depend on the coin."""
    b, device = x.shape[0], x.device
    apply = coin(b, p, gen, device)
    factors = {}
    out = x
    if brightness > 0:
        factors["brightness"] = uniform(b, 1 - brightness, 1 + brightness, gen, device)
        out = blend(out, torch.zeros_like(out), factors["brightness"])
    if contrast > 0:
        mean = gray(out).mean((1, 2, 3), keepdim=True).expand_as(out)
        factors["contrast"] = uniform(b, 1 - contrast, 1 + contrast, gen, device)
        out = blend(out, mean, factors["contrast"])
    if saturation > 0 and x.shape[1] == 3:
        factors["saturation"] = uniform(b, 1 - saturation, 1 + saturation, gen, device)
        out = blend(out, gray(out).expand_as(out), factors["saturation"])
    if hue > 0 and x.shape[1] == 3:
        factors["hue"] = uniform(b, -hue, hue, gen, device)
        out = rotate_hue(out, factors["hue"])
    if trace is not None:
        trace.update(jitter=apply, **factors)
    return torch.where(apply.view(-1, 1, 1, 1), out, x)


def random_grayscale(x: Tensor, p: float, gen: torch.Generator, trace: dict | None = None) -> Tensor:
    if x.shape[1] == 1 or p <= 0:
        return x
    apply = coin(x.shape[0], p, gen, x.device)
    if trace is not None:
        trace["grayscale"] = apply
    return torch.where(apply.view(-1, 1, 1, 1), gray(x).expand_as(x), x)


def gaussian_blur(x: Tensor, p: float, sigma: tuple[float, float], gen: torch.Generator,
                  trace: dict | None = None) -> Tensor:
    """Per-sample Gaussian blur, one grouped conv. The kernel spans ~10 % of the image side (as
    SimCLR's, 23 taps at 224 px) and at least 4 sigma each way (scipy's gaussian_filter
    truncation), so that on small images a large sigma still blurs as much as its value says
    (a 3-tap kernel at 32 px had a variance of 0.6 for sigma 2)."""
    if p <= 0:
        return x
    b, c, h, w = x.shape
    radius = min(max(1, int(0.05 * h), math.ceil(4 * sigma[1])), min(h, w) - 1)  # reflect padding needs < side
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    sig = uniform(b, *sigma, gen, x.device).to(x.dtype)
    kernel = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sig.view(-1, 1) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)
    flat = x.reshape(1, b * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel.view(b * c, 1, -1, 1), groups=b * c)
    apply = coin(b, p, gen, x.device)
    if trace is not None:
        trace.update(blur=apply, sigma=sig)
    return torch.where(apply.view(-1, 1, 1, 1), flat.view(b, c, h, w), x)


def solarize(x: Tensor, p: float, gen: torch.Generator, threshold: float = 0.5,
             trace: dict | None = None) -> Tensor:
    if p <= 0:
        return x
    apply = coin(x.shape[0], p, gen, x.device)
    if trace is not None:
        trace["solarize"] = apply
    return torch.where(apply.view(-1, 1, 1, 1) & (x >= threshold), 1 - x, x)
