"""Feature extraction from a frozen encoder."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from core.augment import normalize


@torch.no_grad()
def extract_features(encoder: nn.Module, images: Tensor, mean: list[float], std: list[float],
                     batch_size: int = 512, device: str | torch.device = "cpu") -> Tensor:
    """images: (N, C, H, W) uint8. Returns (N, feature_dim) float32 features on the CPU."""
    encoder = encoder.to(device).eval()
    out = []
    for chunk in images.split(batch_size):
        x = normalize(chunk.to(device).float() / 255, mean, std)
        out.append(encoder(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, getattr(encoder, "feature_dim", 0))


def raw_pixels(images: Tensor) -> Tensor:
    """The raw-pixel baseline's 'features': flattened pixels in [0, 1]."""
    return images.flatten(1).float() / 255
