"""Every image method's training_step makes the views its recipe declares, as ViewMaker's trace
records them: views per crop spec and their sizes, crop areas, and augmentation rates."""
from __future__ import annotations

import pytest
import torch

from core.augment import ViewConfig
from core.methods import build, method_info, method_names
from core.recipes import scale_for
from tests.core.test_augment import assert_views_follow
from tests.core.tiny import tiny_options

IMAGE_METHODS = [name for name in method_names() if method_info(name).modality == "image"]
TINY_VIT = {"dim": 32, "depth": 1, "heads": 2, "patch_size": 4}
TINY_CNN = {"width": 8}
BANK = 1024  # queues and memory banks hold at least one batch (DeepCluster v2's must)


def traced_method(name: str, image_size: int = 32, augment: dict | None = None):
    """`name` built from its recipe for the image scale, with a tiny backbone of the recipe's kind."""
    recipe = method_info(name).recipes[scale_for(image_size)]
    vit = recipe.backbone.startswith("vit")
    backbone, backbone_options = ("vit_tiny", dict(TINY_VIT)) if vit else ("small_cnn", dict(TINY_CNN))
    if vit and image_size > 64:
        backbone_options["patch_size"] = 16  # 36 tokens at 96 px instead of 576
    torch.manual_seed(0)
    options = {**tiny_options(name), **{k: BANK for k in ("queue_size", "support_size") if k in tiny_options(name)}}
    method = build(name, backbone=backbone, in_channels=3, image_size=image_size, augment=augment,
                   backbone_options=backbone_options, **options)
    method.views.trace = []
    return method


def run_one_step(method, n: int, image_size: int) -> list[dict]:
    """One training step on n random images; returns the trace of the views it made."""
    images = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    loss, _ = method.training_step(images, torch.Generator().manual_seed(2), 0, 100)
    assert torch.isfinite(loss)
    return method.views.trace


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_training_step_makes_the_small_recipe_views(name):
    method = traced_method(name)
    assert_views_follow(method_info(name).recipes["small"].views, run_one_step(method, 512, 32), 32)


@pytest.mark.parametrize("name", ["byol", "dino"])
def test_training_step_makes_the_large_recipe_views(name):
    method = traced_method(name, image_size=96)
    assert_views_follow(method_info(name).recipes["large"].views, run_one_step(method, 128, 96), 96)


@pytest.mark.parametrize("name", ["simclr", "dino"])
def test_augment_override_is_what_the_views_use(name):
    override = {"jitter_p": 0.0, "grayscale_p": 1.0}
    expected = ViewConfig.from_dict(override, base=method_info(name).recipes["small"].views)
    method = traced_method(name, augment=override)
    trace = run_one_step(method, 256, 32)
    assert method.views.config == expected
    assert_views_follow(expected, trace, 32)
    assert not any(record["jitter"].any() for record in trace) and all(record["grayscale"].all() for record in trace)
