"""The Fashion-MNIST GPU spec is silent on training settings: it gets SimCLR's small recipe."""
from __future__ import annotations

import json

from core.methods import method_info
from jobs.specs import PretrainSpec
from jobs.checks import try_build
from tests.conftest import ROOT


def test_fashion_mnist_spec_resolves_to_the_small_simclr_recipe_and_builds():
    spec = PretrainSpec.model_validate(json.loads((ROOT / "recipes" / "fashion-mnist-simclr.json").read_text()))
    assert spec.dataset == "fashion-mnist" and spec.health_every and spec.stop_on_collapse
    assert [e.protocol for e in spec.evaluations] == ["knn", "linear", "clustering"]
    recipe = spec.resolve(28, 60_000)
    small = method_info("simclr").recipes["small"]
    assert recipe["scale"] == "small" and recipe["backbone"] == small.backbone
    assert recipe["train"]["steps"] == 100 * (60_000 // small.batch_size)
    assert recipe["train"]["optimizer"] == small.optimizer
    assert recipe["train"]["lr"] == small.base_lr * small.batch_size / 256
    assert recipe["train"]["precision"] == "bf16"
    try_build("simclr", recipe, channels=1)
