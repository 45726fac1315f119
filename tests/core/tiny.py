"""Tiny, CPU-sized settings shared by the method tests: real digits at 16x16, small networks."""
from __future__ import annotations

import torch

from core.data.transforms import resize_images
from core.methods import build, method_info

# Standard option names; each method takes the ones it has (see MethodInfo.options()).
TINY_OPTIONS = {
    "proj_hidden_dim": 64, "proj_dim": 32, "pred_hidden_dim": 64, "out_dim": 64, "bottleneck_dim": 32,
    "queue_size": 128, "support_size": 128, "num_prototypes": 32, "decoder_dim": 32, "decoder_depth": 1,
    "predictor_dim": 32, "predictor_depth": 1, "num_slices": 64,
}
TINY_CNN = {"width": 8}
TINY_VIT = {"dim": 32, "depth": 2, "heads": 2, "patch_size": 4}
IMAGE_SIZE = 16


def tiny_backbone(name: str) -> tuple[str, dict]:
    default = method_info(name).default_backbone
    if default.startswith("vit"):
        return "vit_tiny", dict(TINY_VIT)
    return "small_cnn", dict(TINY_CNN)


def tiny_options(name: str) -> dict:
    known = method_info(name).options()
    return {k: v for k, v in TINY_OPTIONS.items() if k in known}


def build_tiny(name: str, seed: int = 0):
    torch.manual_seed(seed)
    backbone, backbone_options = tiny_backbone(name)
    return build(name, backbone=backbone, in_channels=1, image_size=IMAGE_SIZE, mean=[0.3], std=[0.35],
                 backbone_options=backbone_options, **tiny_options(name))


def digits_16(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's real digits, upsampled to 16x16 uint8 (N, 1, 16, 16), with labels."""
    from core.data.builtin import digits

    train, _ = digits()
    x = resize_images(train.images, IMAGE_SIZE)
    return (x[:n], train.labels[:n]) if n else (x, train.labels)
