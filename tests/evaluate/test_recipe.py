"""The Fashion-MNIST recipe is a valid pretrain spec whose method builds (on the meta device)."""
from __future__ import annotations

import json
from types import SimpleNamespace

from jobs.specs import PretrainSpec
from jobs.submit import try_build
from tests.conftest import ROOT


def test_fashion_mnist_recipe_validates_and_builds():
    spec = PretrainSpec.model_validate(json.loads((ROOT / "recipes" / "fashion-mnist-simclr.json").read_text()))
    assert spec.dataset == "fashion-mnist" and spec.health_every and spec.stop_on_collapse
    assert [e.protocol for e in spec.evaluations] == ["knn", "linear", "clustering"]
    assert spec.total_steps(60_000) == 100 * (60_000 // 512)
    try_build(spec, SimpleNamespace(stats={"channels": 1, "image_size": 28}))
