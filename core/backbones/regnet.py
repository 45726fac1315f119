"""RegNetY (Radosavovic et al., 2020, arXiv:2003.13678) from torchvision's implementation (random
init, never downloaded weights), with an optional small-image stem; SEER's sizes included.

A RegNet is named by its design-space parameters (depth, w_0, w_a, w_m, group_width); torchvision's
`BlockParams` quantises them into per-stage depths and widths. The named sizes below use the values
of torchvision's `regnet_y_*` builders (`regnet_y_256gf` is SEER's, from VISSL's
configs/config/pretrain/swav/models/regnet256Gf_1.yaml); `regnet_y` takes the parameters
themselves, for tiny CPU-sized widths. `parameter_count` sizes a RegNet from its parameters alone,
so a service can refuse a 1.3-billion-parameter model without building it."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchvision.models.regnet import BlockParams, RegNet
from torchvision.ops.misc import Conv2dNormActivation

from core.backbones.registry import register_backbone

STEM_WIDTH = 32  # torchvision's RegNet default (pycls's STEM_W)
SE_RATIO = 0.25  # the "Y" of RegNetY: squeeze-excitation at a quarter of the block's input width


class Design(NamedTuple):
    depth: int
    w_0: int
    w_a: float
    w_m: float
    group_width: int


# torchvision.models.regnet regnet_y_* builders (the pycls model zoo's values); 256GF: SEER's.
SIZES = {
    "400mf": Design(16, 48, 27.89, 2.09, 8),
    "800mf": Design(14, 56, 38.84, 2.4, 16),
    "1_6gf": Design(27, 48, 20.71, 2.65, 24),
    "3_2gf": Design(21, 80, 42.63, 2.66, 24),
    "8gf": Design(17, 192, 76.82, 2.19, 56),
    "16gf": Design(18, 200, 106.23, 2.48, 112),
    "32gf": Design(20, 232, 115.89, 2.53, 232),
    "128gf": Design(27, 456, 160.83, 2.52, 264),
    "256gf": Design(27, 640, 230.83, 2.53, 373),  # VISSL regnet256Gf_1.yaml (SEER, arXiv:2103.01988)
}


def block_params(design: Design) -> BlockParams:
    """torchvision's per-stage settings. Computed on the CPU even inside a `torch.device("meta")`
    block (the quantisation reads tensor values back); ValueError for settings it refuses."""
    with torch.device("cpu"):
        return BlockParams.from_init_params(*design, se_ratio=SE_RATIO)


def build(design: Design, in_channels: int, small_stem: bool) -> RegNet:
    model = RegNet(block_params(design), stem_width=STEM_WIDTH)
    # torchvision's stem is a 3x3 stride-2 conv on 3 channels; the small-image stem keeps the
    # resolution (pycls's ResStemCifar: 3x3, stride 1, BN, ReLU), as ResNet's CIFAR stem does
    if small_stem or in_channels != 3:
        model.stem = Conv2dNormActivation(in_channels, STEM_WIDTH, kernel_size=3, stride=1 if small_stem else 2,
                                          norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU)
    model.feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    return model


def parameter_count(design: Design, in_channels: int = 3) -> int:
    """Parameters plus buffers (BatchNorm statistics and counters) of the backbone without its
    classifier, from the design alone: torchvision's ResBottleneckBlock term by term."""

    def conv_bn(cin: int, cout: int, kernel: int, groups: int = 1) -> int:
        return cin // groups * cout * kernel * kernel + 4 * cout + 1  # BN weight, bias, mean, var, count

    params = block_params(design)
    total = conv_bn(in_channels, STEM_WIDTH, 3)
    width_in = STEM_WIDTH
    for width_out, stride, depth, group_width, multiplier in params._get_expanded_params():
        for i in range(depth):
            w_in, w_b = width_in if i == 0 else width_out, int(round(width_out * multiplier))
            if w_in != width_out or (stride != 1 and i == 0):
                total += conv_bn(w_in, width_out, 1)  # projection shortcut
            se = int(round(params.se_ratio * w_in))
            total += conv_bn(w_in, w_b, 1) + conv_bn(w_b, w_b, 3, w_b // group_width) + conv_bn(w_b, width_out, 1)
            total += (w_b * se + se) + (se * w_b + w_b)  # squeeze-excitation: two 1x1 convs with biases
        width_in = width_out
    return total


def feature_dim(design: Design) -> int:
    return block_params(design).widths[-1]


def default_small(image_size: int, small_stem: bool | None) -> bool:
    return image_size <= 64 if small_stem is None else small_stem


def register_size(size: str, design: Design) -> None:
    def builder(in_channels: int = 3, image_size: int = 32, small_stem: bool | None = None) -> RegNet:
        return build(design, in_channels, default_small(image_size, small_stem))

    builder.__name__ = f"regnet_y_{size}"
    register_backbone(f"regnet_y_{size}")(builder)


for _size, _design in SIZES.items():
    register_size(_size, _design)


@register_backbone("regnet_y")
def regnet_y(in_channels: int = 3, image_size: int = 32, depth: int = 16, w_0: int = 48, w_a: float = 27.89,
             w_m: float = 2.09, group_width: int = 8, small_stem: bool | None = None) -> RegNet:
    """Any RegNetY of the design space (defaults: 400MF's); w_0 a multiple of 8, w_m above 1."""
    return build(Design(depth, w_0, w_a, w_m, group_width), in_channels, default_small(image_size, small_stem))
