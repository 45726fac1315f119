"""The demo's pretrain specs are valid job specs, and the loop receives what they ask for."""
from __future__ import annotations

import pytest

from client.demo import SPECS
from jobs.specs import PretrainSpec


@pytest.mark.parametrize("name, side, n_items", [("fashion-mnist", 28, 60_000), ("digits", 8, 1_437)])
def test_demo_spec_resolves_to_the_recipe_with_only_its_own_changes(name, side, n_items):
    spec = PretrainSpec.model_validate({**SPECS[name], "kind": "pretrain", "dataset": "ds"})
    recipe = spec.resolve(side, n_items)
    train = recipe["train"]
    assert train["optimizer"] == "lars" and recipe["method_options"]["temperature"] == 0.2  # SimCLR's small recipe
    assert train["steps"] == SPECS[name]["steps"]
    batch = SPECS[name].get("batch_size", 256)
    assert train["batch_size"] == batch and train["lr"] == pytest.approx(0.4 * batch / 256)  # the linear rule
    assert train["warmup_steps"] == max(1, round(0.01 * train["steps"]))  # 10 of 1000 epochs


def test_fashion_mnist_demo_crops_20_to_100_percent_and_keeps_simclr_s_colour_distortion():
    spec = PretrainSpec.model_validate({**SPECS["fashion-mnist"], "kind": "pretrain", "dataset": "ds"})
    views = spec.resolve(28, 60_000)["views"]
    assert [(c["count"], c["scale"], c["blur_p"]) for c in views["crops"]] == [(2, [0.2, 1.0], 0.0)]
    assert views["jitter_p"] == 0.8 and views["brightness"] == 0.8 and views["flip_p"] == 0.5
