"""RegNetY backbones (torchvision's) and SwAV's SEER recipe: each size counts what torchvision's
builder counts, the estimate needs no module, the small stem keeps the resolution, and a tiny
SEER run trains on CPU and resumes exactly."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision.models as tv
from torchvision.models import regnet as tv_regnet

from core.backbones import build_backbone
from core.backbones.sizes import check_options, estimate_parameters
from core.methods import build_resolved
from core.recipes import resolve
from core.train import Callbacks, TrainConfig, train
from tests.core.tiny import digits_16

TINY_DESIGN = {"depth": 4, "w_0": 8, "w_a": 8.0, "w_m": 2.0, "group_width": 8}  # stages of 8, 16, 32 channels


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


def torchvision_trunk(size: str) -> torch.nn.Module:
    model = getattr(tv, f"regnet_y_{size}")(weights=None)
    model.fc = torch.nn.Identity()
    return model


@pytest.mark.parametrize("size", ["400mf", "800mf", "1_6gf", "3_2gf"])
def test_small_sizes_build_and_count_what_torchvision_counts(size):
    torch.manual_seed(0)
    model = build_backbone(f"regnet_y_{size}", in_channels=3, image_size=64)
    reference = torchvision_trunk(size)
    assert count(model) == count(reference) == estimate_parameters(f"regnet_y_{size}", 3, 64, {})
    assert model.feature_dim == reference.trunk_output[-1][-1].f.c[0].out_channels
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, model.feature_dim)


@pytest.mark.parametrize("size, billions", [("8gf", 0.0375), ("16gf", 0.0808), ("32gf", 0.1415), ("128gf", 0.638)])
def test_large_sizes_estimate_what_torchvision_builds_on_meta(size, billions, monkeypatch):
    """torchvision's own builder on the meta device (no weights allocated); its width quantisation
    reads tensor values, so only that arithmetic runs on the CPU."""
    quantise = tv_regnet.BlockParams.from_init_params.__func__

    def on_cpu(cls, *args, **kwargs):
        with torch.device("cpu"):
            return quantise(cls, *args, **kwargs)

    monkeypatch.setattr(tv_regnet.BlockParams, "from_init_params", classmethod(on_cpu))
    with torch.device("meta"):
        reference = count(torchvision_trunk(size))
        ours = build_backbone(f"regnet_y_{size}", in_channels=3, image_size=224)
    assert estimate_parameters(f"regnet_y_{size}", 3, 224, {}) == reference == count(ours)
    assert reference == pytest.approx(billions * 1e9, rel=0.01)


def test_seer_256gf_is_sized_without_building_it():
    """SEER's RegNetY-256GF (VISSL regnet256Gf_1.yaml): 1.27e9 trunk parameters, 10444 features as
    in VISSL's SEER head (d10444_d8192_d8192_d256); the estimate is arithmetic alone."""
    estimate = estimate_parameters("regnet_y_256gf", 3, 224, {})
    assert estimate == pytest.approx(1.27e9, rel=0.01)
    with torch.device("meta"):
        model = build_backbone("regnet_y_256gf", in_channels=3, image_size=224)
    assert count(model) == estimate and model.feature_dim == 10444
    stages = [len(stage) for stage in model.trunk_output]
    assert stages == [2, 7, 17, 1]


def test_the_design_space_backbone_counts_like_its_build():
    for options in (TINY_DESIGN, {}, {"depth": 10, "w_0": 24, "w_a": 36.0, "w_m": 2.5, "group_width": 8}):
        model = build_backbone("regnet_y", in_channels=1, image_size=16, **options)
        assert estimate_parameters("regnet_y", 1, 16, options) == count(model)


@pytest.mark.parametrize("small_stem, stem_side, final_side", [(True, 32, 4), (False, 16, 2)])
def test_small_stem_keeps_the_resolution(small_stem, stem_side, final_side):
    model = build_backbone("regnet_y", in_channels=3, image_size=32, small_stem=small_stem, **TINY_DESIGN).eval()
    seen = {}
    model.stem.register_forward_hook(lambda m, i, o: seen.update(stem=o.shape))
    model.trunk_output.register_forward_hook(lambda m, i, o: seen.update(trunk=o.shape))
    with torch.no_grad():
        features = model(torch.zeros(2, 3, 32, 32))
    assert features.shape == (2, model.feature_dim) and model.feature_dim == 32
    assert seen["stem"][-2:] == (stem_side, stem_side)
    assert seen["trunk"] == (2, 32, final_side, final_side)


def test_small_stem_defaults_by_image_size():
    small = build_backbone("regnet_y_400mf", in_channels=1, image_size=32)
    large = build_backbone("regnet_y_400mf", in_channels=1, image_size=224)
    assert small.stem[0].stride == (1, 1) and large.stem[0].stride == (2, 2)
    assert small.stem[0].in_channels == large.stem[0].in_channels == 1


def test_bad_designs_are_refused_before_building():
    with pytest.raises(ValueError, match="w_a must be a number in"):
        check_options("regnet_y", {"w_a": 5000.0})
    with pytest.raises(ValueError, match="depth must be an integer"):
        check_options("regnet_y", {"depth": 1000})
    check_options("regnet_y", {"w_a": 230.83, "w_0": 640, "group_width": 373})  # SEER's own design passes
    assert estimate_parameters("regnet_y", 3, 32, {"w_0": 12}) is None  # not a multiple of 8
    with pytest.raises(ValueError, match="Invalid RegNet settings"):
        build_backbone("regnet_y", w_0=12)


class Recorder(Callbacks):
    def __init__(self, keep_at: int | None = None):
        self.losses, self.keep_at, self.kept = {}, keep_at, None

    def on_log(self, step, logs):
        self.losses[step] = logs["loss"]

    def on_checkpoint(self, step, state, final):
        if step == self.keep_at:
            self.kept = copy.deepcopy(state)


def tiny_seer(n_items: int, steps: int) -> dict:
    """SwAV's seer recipe, at a tiny RegNetY and head, for a short CPU run at batch 32."""
    return resolve("swav", 16, n_items, {
        "scale": "seer", "backbone": "regnet_y", "backbone_options": TINY_DESIGN, "batch_size": 32, "steps": steps,
        "method_options": {"proj_hidden_dim": 64, "proj_dim": 32, "num_prototypes": 48}})


def seer_method(recipe: dict, seed: int):
    torch.manual_seed(seed)
    return build_resolved(recipe, in_channels=1, mean=[0.3], std=[0.35])


def test_seer_recipe_keeps_its_sources_and_builds_its_head():
    recipe = resolve("swav", 224, 10**9, {"scale": "seer"})
    assert recipe["backbone"] == "regnet_y_256gf"
    assert recipe["train"]["batch_size"] == 8192 and recipe["train"]["lr"] == pytest.approx(9.6)
    assert recipe["method_options"]["sinkhorn_iterations"] == 10 and recipe["method_options"]["queue_size"] == 0
    assert [(c["count"], round(c["size"] * 224)) for c in recipe["views"]["crops"]] == [(2, 160), (4, 96)]
    assert set(recipe["sources"]) >= {"backbone", "optimizer", "base_lr", "batch_size", "epochs", "warmup_epochs",
                                      "weight_decay", "method_options", "views"}
    assert "one machine" in recipe["notes"]
    method = seer_method(tiny_seer(512, 2), seed=0)
    linears = [m for m in method.projector if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and not any(isinstance(m, torch.nn.BatchNorm1d) for m in method.projector)
    assert method.sinkhorn_iterations == 10 and method.prototypes.weight.shape == (48, 32)


def test_a_seer_step_trains_on_cpu_at_a_tiny_width():
    images, _ = digits_16(256)
    recipe = tiny_seer(len(images), 3)
    method = seer_method(recipe, seed=0)
    before = {k: v.clone() for k, v in method.backbone.state_dict().items() if v.is_floating_point()}
    recorder = Recorder()
    result = train(method, images, TrainConfig(**{**recipe["train"], "log_every": 1, "seed": 0}), callbacks=recorder)
    assert result.reason == "completed" and all(torch.isfinite(torch.tensor(list(recorder.losses.values()))))
    moved = max(float((method.backbone.state_dict()[k] - v).abs().max()) for k, v in before.items())
    assert moved > 0


def test_seer_resume_replays_the_uninterrupted_run():
    images, _ = digits_16(256)
    recipe = tiny_seer(len(images), 6)
    config = TrainConfig(**{**recipe["train"], "log_every": 1, "seed": 0, "checkpoint_every": 3})
    whole = Recorder(keep_at=3)
    straight = seer_method(recipe, seed=0)
    train(straight, images, config, callbacks=whole)
    assert whole.kept is not None, "no checkpoint at step 3"
    resumed, second = seer_method(recipe, seed=123), Recorder()  # another init: all must come from the state
    train(resumed, images, config, callbacks=second, resume=whole.kept)
    for step in (4, 5, 6):
        assert second.losses[step] == pytest.approx(whole.losses[step], rel=1e-5, abs=1e-6)
    for key, value in straight.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(resumed.state_dict()[key], value), key
