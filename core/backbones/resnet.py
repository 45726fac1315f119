"""ResNet-18/50 from torchvision (random init) with an optional small-image stem."""
from __future__ import annotations

from torch import nn
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models import resnet50 as tv_resnet50

from core.backbones.registry import register_backbone


def adapt(model: nn.Module, in_channels: int, small_stem: bool) -> nn.Module:
    if small_stem:  # CIFAR-style stem: 3x3 conv, stride 1, no max-pool
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    model.feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    return model


@register_backbone("resnet18")
def resnet18(in_channels: int = 3, image_size: int = 32, small_stem: bool | None = None) -> nn.Module:
    small = image_size <= 64 if small_stem is None else small_stem
    return adapt(tv_resnet18(weights=None), in_channels, small)


@register_backbone("resnet50")
def resnet50(in_channels: int = 3, image_size: int = 32, small_stem: bool | None = None) -> nn.Module:
    small = image_size <= 64 if small_stem is None else small_stem
    return adapt(tv_resnet50(weights=None), in_channels, small)
