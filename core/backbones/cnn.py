"""A small CNN for CPU-sized runs (four conv blocks, global average pool)."""
from __future__ import annotations

from torch import Tensor, nn

from core.backbones.registry import register_backbone


def conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 3, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            conv_block(in_channels, width, 1),
            conv_block(width, width * 2, 2),
            conv_block(width * 2, width * 4, 2),
            conv_block(width * 4, width * 8, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = width * 8

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


@register_backbone("small_cnn")
def small_cnn(in_channels: int = 3, image_size: int = 32, width: int = 32) -> SmallCNN:
    return SmallCNN(in_channels, width)
