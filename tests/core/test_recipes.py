"""The recipe resolver: the image scale picks the recipe, the LR follows the linear scaling rule,
epoch-denominated schedule points become steps, and the spec's explicit fields win.

Most tests resolve a toy method whose recipes are declared here, so every expected number can be
worked out by hand; the last ones resolve a real registered method."""
from __future__ import annotations

from dataclasses import fields, replace

import pytest

from core.augment import ViewConfig
from core.methods import registry
from core.methods.base import Method
from core.recipes import Recipe, epoch_point, resolve
from core.train import TrainConfig


class Toy(Method):
    def __init__(self, backbone, views, temperature: float = 0.2, queue_size: int = 16):
        super().__init__(backbone, views)


SMALL = Recipe(backbone="small_cnn", optimizer="lars", base_lr=0.4, batch_size=128, epochs=100, warmup_epochs=10,
               weight_decay=1e-5, freeze_last_layer_epochs=1, method_options={"temperature": 0.5},
               backbone_options={"width": 8}, views=ViewConfig(flip_p=0.25))
LARGE = Recipe(backbone="resnet18", optimizer="adamw", base_lr=5e-4, lr_scaling="none", batch_size=256, epochs=300,
               warmup_epochs=40, weight_decay=0.04, final_weight_decay=0.4, grad_clip=3.0,
               grad_clip_mode="per_parameter")
TOY = registry.MethodInfo("toy", "test", Toy, {"small": SMALL, "large": LARGE})


@pytest.fixture(autouse=True)
def toy_method(monkeypatch):
    real = registry.method_info
    monkeypatch.setattr(registry, "method_info", lambda name: TOY if name == "toy" else real(name))


def test_image_size_picks_the_scale_and_an_explicit_scale_wins():
    assert resolve("toy", 32, 1000)["scale"] == "small"
    assert resolve("toy", 64, 1000)["scale"] == "small"
    assert resolve("toy", 65, 1000)["scale"] == "large"
    assert resolve("toy", 224, 1000)["backbone"] == "resnet18"
    explicit = resolve("toy", 32, 1000, {"scale": "large"})
    assert explicit["scale"] == "large" and explicit["backbone"] == "resnet18"
    assert explicit["train"]["optimizer"] == "adamw"
    assert resolve("toy", 224, 1000, {"scale": "small"})["backbone"] == "small_cnn"


def test_unknown_scale_raises():
    with pytest.raises(ValueError, match="no 'tiny' recipe"):
        resolve("toy", 32, 1000, {"scale": "tiny"})


def test_lr_follows_the_linear_scaling_rule():
    assert resolve("toy", 32, 10_000)["train"]["lr"] == pytest.approx(0.4 * 128 / 256)
    assert resolve("toy", 32, 10_000, {"batch_size": 512})["train"]["lr"] == pytest.approx(0.4 * 512 / 256)
    assert resolve("toy", 32, 10_000, {"base_lr": 1.0, "batch_size": 64})["train"]["lr"] == pytest.approx(0.25)
    assert resolve("toy", 224, 10_000, {"batch_size": 1024})["train"]["lr"] == 5e-4  # lr_scaling "none"


def test_an_explicit_lr_wins_unscaled():
    resolved = resolve("toy", 32, 10_000, {"lr": 0.05, "batch_size": 512})
    assert resolved["train"]["lr"] == 0.05
    assert resolved["train"]["batch_size"] == 512


@pytest.mark.parametrize("epochs, recipe_epochs, total_steps, steps_per_epoch, expected", [
    (10, 100, 100 * 390, 390, 3900),  # as long as the recipe: absolute, 10 epochs of 390 steps
    (10, 100, 200 * 390, 390, 3900),  # longer: still absolute
    (10, 1000, 50 * 390, 390, 195),  # a 50-epoch run of a 1000-epoch recipe keeps 1 %: 19500 / 100
    (2.5, 100, 10 * 100, 100, 25),  # proportional 2.5 / 100 of 1000 steps
    (10, 1000, 150, 3, 2),  # proportional 1.5 steps, rounded up
    (10, 1000, 5, 1, 1),  # at least one step
    (0, 100, 1000, 10, 0),  # none
    (1, 300, 2100, 10, 7),  # 1/300 of 2100 is 7 exactly (not 7.000000000000001, rounded up to 8)
    (1.1, 100, 10_000, 10, 11),  # absolute 1.1 epochs of 10 steps
])
def test_epoch_point_is_absolute_for_long_runs_and_proportional_for_short_ones(
        epochs, recipe_epochs, total_steps, steps_per_epoch, expected):
    assert epoch_point(epochs, recipe_epochs, total_steps, steps_per_epoch) == expected


def test_warmup_epochs_become_steps():
    # 1000 items, batch 128: 7 steps per epoch; the recipe is 100 epochs with 10 of warm-up
    default = resolve("toy", 32, 1000)
    assert default["steps_per_epoch"] == 7 and default["train"]["steps"] == 700
    assert default["train"]["warmup_steps"] == 70  # 10 epochs of 7 steps
    assert default["train"]["freeze_last_layer_steps"] == 7
    assert default["schedule_points"] == "absolute"
    longer = resolve("toy", 32, 1000, {"epochs": 300})
    assert longer["train"]["steps"] == 2100 and longer["train"]["warmup_steps"] == 70
    shorter = resolve("toy", 32, 1000, {"epochs": 20})  # absolute epochs, as solo-learn and DINO keep them
    assert shorter["train"]["steps"] == 140 and shorter["train"]["warmup_steps"] == 70
    assert shorter["train"]["freeze_last_layer_steps"] == 7
    by_steps = resolve("toy", 32, 1000, {"steps": 33})
    assert by_steps["train"]["steps"] == 33 and by_steps["train"]["warmup_steps"] == 33  # capped at the run
    assert by_steps["epochs"] == pytest.approx(33 / 7, abs=1e-4)


def test_proportional_schedule_points_only_when_the_spec_asks():
    shorter = resolve("toy", 32, 1000, {"epochs": 20, "schedule_points": "proportional"})
    assert shorter["train"]["warmup_steps"] == 14  # 10 % of the run, as the recipe's 10 of 100 epochs
    assert shorter["train"]["freeze_last_layer_steps"] == 2  # 1 % of 140 = 1.4, rounded up
    assert shorter["schedule_points"] == "proportional"
    by_steps = resolve("toy", 32, 1000, {"steps": 33, "schedule_points": "proportional"})
    assert by_steps["train"]["warmup_steps"] == 4  # 3.3 rounded up
    with pytest.raises(ValueError, match="schedule_points"):
        resolve("toy", 32, 1000, {"schedule_points": "fraction"})


def test_explicit_warmup_wins():
    assert resolve("toy", 32, 1000, {"warmup_steps": 5})["train"]["warmup_steps"] == 5
    assert resolve("toy", 32, 1000, {"warmup_epochs": 2})["train"]["warmup_steps"] == 14
    assert resolve("toy", 32, 1000, {"warmup_steps": 5, "warmup_epochs": 2})["train"]["warmup_steps"] == 5


def test_explicit_epoch_points_count_epochs_of_the_run_itself():
    # a proportional 20-epoch run of the 100-epoch recipe: the recipe's own points shrink to 20 % ...
    short = resolve("toy", 32, 1000, {"epochs": 20, "schedule_points": "proportional"})["train"]
    assert (short["warmup_steps"], short["freeze_last_layer_steps"]) == (14, 2)
    # ... but 2 warm-up epochs asked for in the spec are 2 epochs of this run (14 steps), not 20 % of them
    given = resolve("toy", 32, 1000, {"epochs": 20, "warmup_epochs": 2, "freeze_last_layer_epochs": 1,
                                      "schedule_points": "proportional"})["train"]
    assert (given["warmup_steps"], given["freeze_last_layer_steps"]) == (14, 7)
    by_steps = resolve("toy", 32, 1000, {"steps": 33, "warmup_epochs": 2})["train"]
    assert by_steps["warmup_steps"] == 14


def test_spec_overrides_win():
    resolved = resolve("toy", 32, 1000, {
        "optimizer": "sgd", "base_lr": 0.2, "weight_decay": 0.123, "batch_size": 64, "final_lr": 1e-6,
        "grad_clip": 1.5,
        "method_options": {"queue_size": 64}, "augment": {"flip_p": 0.0, "jitter_p": 0.1},
        "optimizer_options": {"momentum": 0.8, "betas": [0.5, 0.6], "eta": 0.001, "clip_lr": False},
        "backbone_options": {"width": 4}, "final_weight_decay": None,  # None: not given
    })
    train = resolved["train"]
    assert (train["optimizer"], train["weight_decay"], train["batch_size"]) == ("sgd", 0.123, 64)
    assert (train["final_lr"], train["grad_clip"], train["final_weight_decay"]) == (1e-6, 1.5, None)
    assert (train["momentum"], train["betas"], train["eta"], train["clip_lr"]) == (0.8, [0.5, 0.6], 0.001, False)
    assert resolved["steps_per_epoch"] == 15 and train["steps"] == 1500
    # the class default, the recipe's value and the spec's value, the spec on top
    assert resolved["method_options"] == {"temperature": 0.5, "queue_size": 64}
    assert resolved["backbone_options"] == {"width": 4}
    assert resolved["views"]["flip_p"] == 0.0 and resolved["views"]["jitter_p"] == 0.1
    assert resolve("toy", 32, 1000)["views"]["flip_p"] == 0.25  # the recipe's own views otherwise


def test_another_optimizer_needs_its_own_lr():
    with pytest.raises(ValueError, match="give lr or base_lr"):
        resolve("toy", 32, 1000, {"optimizer": "adamw"})  # the toy's LARS LR 0.4 x batch/256 is no AdamW LR
    assert resolve("toy", 32, 1000, {"optimizer": "adamw", "lr": 1e-3})["train"]["lr"] == 1e-3
    assert resolve("toy", 32, 1000, {"optimizer": "adamw", "base_lr": 1e-3})["train"]["lr"] == pytest.approx(5e-4)
    assert resolve("toy", 32, 1000, {"optimizer": "lars"})["train"]["optimizer"] == "lars"  # the recipe's own


def test_final_lr_follows_the_lr_unless_the_spec_gives_it():
    toy = replace(SMALL, final_lr=0.001 * 0.4 * 128 / 256)  # Barlow Twins' end_lr = 0.001 x peak
    TOY.recipes["small"] = toy
    try:
        assert resolve("toy", 32, 10_000)["train"]["final_lr"] == pytest.approx(0.001 * 0.4 * 128 / 256)
        bigger = resolve("toy", 32, 10_000, {"batch_size": 512})["train"]
        assert bigger["lr"] == pytest.approx(0.8) and bigger["final_lr"] == pytest.approx(0.001 * 0.8)
        assert resolve("toy", 32, 10_000, {"lr": 0.1})["train"]["final_lr"] == pytest.approx(1e-4)
        assert resolve("toy", 32, 10_000, {"batch_size": 512, "final_lr": 0.01})["train"]["final_lr"] == 0.01
    finally:
        TOY.recipes["small"] = SMALL


def test_recipe_defaults_reach_the_train_config():
    train = resolve("toy", 224, 10_000)["train"]
    assert (train["final_weight_decay"], train["grad_clip"], train["grad_clip_mode"]) == (0.4, 3.0, "per_parameter")
    assert set(train) <= {f.name for f in fields(TrainConfig)}
    TrainConfig(**train)  # every resolved value is something the loop reads


def test_unknown_optimizer_options_raise():
    with pytest.raises(ValueError, match="unknown optimizer_options: nesterov"):
        resolve("toy", 32, 1000, {"optimizer_options": {"nesterov": True}})


@pytest.mark.parametrize("overrides", [{"optimizer": "adam"}, {"grad_clip_mode": "layer"}])
def test_invalid_optimizer_or_clip_mode_raise(overrides):
    with pytest.raises(ValueError):
        resolve("toy", 32, 1000, overrides)


def test_a_recipe_batch_larger_than_the_dataset_is_capped_and_a_given_one_raises():
    capped = resolve("toy", 32, 100)  # the recipe's batch of 128
    assert capped["train"]["batch_size"] == 100 and capped["steps_per_epoch"] == 1
    assert capped["adjustments"] == ["batch_size capped to the dataset: 100 (the 'small' recipe's is 128)"]
    with pytest.raises(ValueError, match=r"batch_size 2048 \(set in the spec\) is larger than the dataset"):
        resolve("toy", 32, 1000, {"batch_size": 2048})
    assert resolve("toy", 32, 128)["steps_per_epoch"] == 1  # exactly one batch is fine


def test_epochs_and_steps_together_raise():
    with pytest.raises(ValueError, match="epochs or steps"):
        resolve("toy", 32, 1000, {"epochs": 2, "steps": 10})


def registered_method_info():
    try:
        from core.methods import method_info

        return method_info("simclr")
    except Exception as error:  # method files are edited in parallel; the toy tests above still run
        pytest.fail(f"core.methods does not import: {error!r}")


def test_resolves_a_registered_method():
    info = registered_method_info()
    small = resolve("simclr", 32, 50_000)
    recipe = info.recipes["small"]
    assert small["scale"] == "small" and small["backbone"] == recipe.backbone
    train = small["train"]
    assert train["batch_size"] == recipe.batch_size and train["optimizer"] == recipe.optimizer
    scaled = recipe.base_lr * recipe.batch_size / 256 if recipe.lr_scaling == "linear" else recipe.base_lr
    assert train["lr"] == pytest.approx(scaled)
    steps_per_epoch = 50_000 // recipe.batch_size
    assert train["steps"] == recipe.epochs * steps_per_epoch
    assert train["warmup_steps"] == epoch_point(recipe.warmup_epochs, recipe.epochs, train["steps"], steps_per_epoch)
    TrainConfig(**train)
    large = resolve("simclr", 224, 50_000, {"epochs": 1, "optimizer": "sgd", "lr": 0.01})
    assert large["scale"] == "large" and large["train"]["optimizer"] == "sgd" and large["train"]["lr"] == 0.01
