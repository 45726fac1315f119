"""core/augment ops against independent formulas and known values, and ViewMaker's trace."""
from __future__ import annotations

import math

import pytest
import torch

from core.augment import CropSpec, ViewConfig, ViewMaker
from core.augment import ops

SIGMAS = 4.5  # binomial / mean tolerance, in standard errors


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 4, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=gen(seed))


def assert_rate(mask: torch.Tensor, p: float, what: str) -> None:
    """The empirical rate of a bool mask is within SIGMAS binomial standard errors of p."""
    n = mask.numel()
    rate = mask.float().mean().item()
    tolerance = SIGMAS * math.sqrt(p * (1 - p) / n) + 1e-9
    assert abs(rate - p) <= tolerance, f"{what}: rate {rate:.4f} over {n}, expected {p} +- {tolerance:.4f}"


def expected_size(crop: CropSpec, side: int) -> int:
    return int(round(crop.size * side)) if crop.size <= 1 else int(crop.size)


def assert_views_follow(config: ViewConfig, trace: list[dict], side: int, views: list[torch.Tensor] | None = None,
                        channels: int = 3) -> None:
    """What a ViewMaker made (its trace, and its views when given) matches `config`: views per crop
    spec and their sizes, crop areas in each spec's scale, aspects in `ratio` where a crop of that
    area fits, and flip / jitter / grayscale / blur / solarize rates per spec within binomial tolerance."""
    specs = [index for index, crop in enumerate(config.crops) for _ in range(crop.count)]
    assert [record["spec"] for record in trace] == specs, "views per crop spec, in order"
    assert [record["size"] for record in trace] == [expected_size(config.crops[i], side) for i in specs]
    if views is not None:
        assert [view.shape[-1] for view in views] == [record["size"] for record in trace]
    for index, crop in enumerate(config.crops):
        made = [record for record in trace if record["spec"] == index]
        pooled = {key: torch.cat([record[key] for record in made]) for key in made[0]
                  if key not in ("spec", "size")}
        area, aspect = pooled["area"], pooled["aspect"]
        low, high = crop.scale
        assert area.min() >= low - 1e-5 and area.max() <= high + 1e-5, f"spec {index}: area outside {crop.scale}"
        standard_error = (high - low) / math.sqrt(12 * area.numel())
        assert abs(area.mean().item() - (low + high) / 2) <= SIGMAS * standard_error + 1e-6, f"spec {index}: mean"
        fit_low = torch.tensor(config.ratio[0]).clamp(area, 1 / area)
        fit_high = torch.tensor(config.ratio[1]).clamp(area, 1 / area)
        assert ((aspect >= fit_low * (1 - 1e-4)) & (aspect <= fit_high * (1 + 1e-4))).all(), f"spec {index}: aspect"
        grayscale_p = config.grayscale_p if channels == 3 else 0.0
        for key, p in [("flip", config.flip_p), ("jitter", config.jitter_p), ("grayscale", grayscale_p),
                       ("blur", crop.blur_p), ("solarize", crop.solarize_p)]:
            assert_rate(pooled[key], p, f"spec {index} {key}")
        for key in ("brightness", "contrast") + (("saturation",) if channels == 3 else ()):
            strength = getattr(config, key)
            if strength > 0:
                assert pooled[key].min() >= 1 - strength and pooled[key].max() <= 1 + strength, key
        if config.hue > 0 and channels == 3:
            assert pooled["hue"].abs().max() <= config.hue
        if crop.blur_p > 0:
            assert pooled["sigma"].min() >= config.blur_sigma[0] - 1e-6
            assert pooled["sigma"].max() <= config.blur_sigma[1] + 1e-6


# --- random resized crop and flip -------------------------------------------------------------

def test_full_crop_without_flip_is_identity():
    x = images()
    out = ops.resized_crop_flip(x, 16, (1.0, 1.0), (1.0, 1.0), 0.0, gen())
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_flip_p1_mirrors_horizontally():
    x = images()
    out = ops.resized_crop_flip(x, 16, (1.0, 1.0), (1.0, 1.0), 1.0, gen())
    torch.testing.assert_close(out, x.flip(-1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.2, 1.0), (0.9, 1.0), (0.05, 0.4), (0.5, 0.5)])
def test_realised_crop_area_is_uniform_in_scale(scale):
    n, trace = 20000, {}
    ops.resized_crop_flip(torch.zeros(n, 1, 2, 2), 2, scale, (3 / 4, 4 / 3), 0.5, gen(1), trace)
    area = trace["area"]
    assert area.min() >= scale[0] - 1e-6 and area.max() <= scale[1] + 1e-6
    low, high = scale
    assert abs(area.mean().item() - (low + high) / 2) <= SIGMAS * (high - low) / math.sqrt(12 * n) + 1e-6
    for q in (0.25, 0.5, 0.75):  # the empirical CDF of uniform(scale) at its quartiles
        if high > low:
            assert_rate(area <= low + q * (high - low), q, f"P(area <= quartile {q})")


def test_aspect_is_log_uniform_in_ratio_where_the_crop_fits():
    n, trace = 20000, {}
    ops.resized_crop_flip(torch.zeros(n, 1, 2, 2), 2, (0.08, 0.5), (3 / 4, 4 / 3), 0.5, gen(2), trace)
    log_aspect = trace["aspect"].log()
    assert log_aspect.min() >= math.log(3 / 4) - 1e-5 and log_aspect.max() <= math.log(4 / 3) + 1e-5
    assert abs(log_aspect.mean().item()) <= SIGMAS * 2 * math.log(4 / 3) / math.sqrt(12 * n)
    assert_rate(trace["flip"], 0.5, "flip")


def test_area_wins_when_no_aspect_in_ratio_fits():
    """A wide ratio range with a large area: the crop keeps its area and takes the widest aspect that fits."""
    trace = {}
    ops.resized_crop_flip(torch.zeros(1000, 1, 2, 2), 2, (0.9, 1.0), (1.5, 2.0), 0.0, gen(3), trace)
    area = trace["area"]
    assert area.min() >= 0.9 - 1e-6
    torch.testing.assert_close(trace["aspect"], 1 / area, rtol=1e-4, atol=0)


def test_traced_crop_is_the_crop_sampled_from():
    """A linear ramp resamples exactly, so the output's spread in x and y gives the crop's w and h."""
    side, size, n = 256, 8, 64
    ramp = (torch.arange(side) + 0.5) / side
    x = torch.stack([ramp.view(1, -1).expand(side, side), ramp.view(-1, 1).expand(side, side)])
    trace = {}
    out = ops.resized_crop_flip(x.expand(n, 2, side, side), size, (0.08, 1.0), (3 / 4, 4 / 3), 0.5, gen(4), trace)
    spread = (size - 1) / size
    w = (out[:, 0, 0, -1] - out[:, 0, 0, 0]) / spread
    h = (out[:, 1, -1, 0] - out[:, 1, 0, 0]) / spread
    torch.testing.assert_close(w.abs() * h, trace["area"], atol=1e-4, rtol=0)
    torch.testing.assert_close(w.abs() / h, trace["aspect"], atol=1e-3, rtol=1e-3)
    assert torch.equal(w < 0, trace["flip"])


# --- colour ------------------------------------------------------------------------------------

def test_grayscale_uses_luma_weights():
    x = images()
    out = ops.random_grayscale(x, 1.0, gen())
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for channel in range(3):
        torch.testing.assert_close(out[:, channel], luma)
    assert torch.equal(ops.random_grayscale(x, 0.0, gen()), x)


def test_solarize_inverts_only_pixels_at_or_above_half():
    x = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.51, 0.8, 1.0]).view(1, 1, 1, -1).repeat(4, 3, 1, 1)
    out = ops.solarize(x, 1.0, gen())
    expected = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.49, 0.2, 0.0]).view(1, 1, 1, -1).expand_as(x)
    torch.testing.assert_close(out, expected)
    assert torch.equal(ops.solarize(x, 0.0, gen()), x)


def test_brightness_factor_scales_the_image_clamped():
    x, trace = images(8), {}
    out = ops.color_jitter(x, 1.0, 0.8, 0.0, 0.0, 0.0, gen(), trace)
    factor = trace["brightness"]
    assert factor.min() >= 0.2 and factor.max() <= 1.8 and (factor > 1).any() and (factor < 1).any()
    torch.testing.assert_close(out, (factor.view(-1, 1, 1, 1) * x).clamp(0, 1))
    torch.testing.assert_close(ops.blend(x, torch.zeros_like(x), torch.full((8,), 2.0)), (2 * x).clamp(0, 1))


def test_saturation_factor_blends_with_the_grayscale_image():
    x, trace = images(8), {}
    out = ops.color_jitter(x, 1.0, 0.0, 0.0, 0.9, 0.0, gen(), trace)
    s = trace["saturation"].view(-1, 1, 1, 1)
    luma = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:])
    torch.testing.assert_close(out, (s * x + (1 - s) * luma).clamp(0, 1))


def test_hue_rotation_keeps_luma_and_a_full_turn_is_identity():
    x = 0.4 + 0.2 * images(8)  # mid-range, so a small rotation never clamps
    torch.testing.assert_close(ops.rotate_hue(x, torch.ones(8)), x, atol=1e-5, rtol=0)
    rotated = ops.rotate_hue(x, torch.full((8,), 0.05))
    assert not torch.allclose(rotated, x, atol=1e-3)
    torch.testing.assert_close(ops.gray(rotated), ops.gray(x), atol=1e-5, rtol=0)


def test_jitter_with_p0_is_identity():
    x, trace = images(), {}
    assert torch.equal(ops.color_jitter(x, 0.0, 0.4, 0.4, 0.2, 0.1, gen(), trace), x)
    assert not trace["jitter"].any()


# --- blur --------------------------------------------------------------------------------------

def test_blur_preserves_a_constant_image():
    x = torch.full((4, 3, 32, 32), 0.37)
    torch.testing.assert_close(ops.gaussian_blur(x, 1.0, (0.1, 2.0), gen()), x)


@pytest.mark.parametrize("sigma, side", [(0.8, 201), (1.5, 201), (2.0, 201), (0.8, 33), (2.0, 33), (2.0, 49)])
def test_blurred_impulse_has_variance_sigma_squared(sigma, side):
    """The kernel reaches 4 sigma each way whatever the image side (at 32 px it once had 3 taps,
    a variance of 0.6 for sigma 2), so truncation shrinks the variance by 0.1 % at most."""
    trace = {}
    x = torch.zeros(1, 1, side, side)
    x[0, 0, side // 2, side // 2] = 1.0
    out = ops.gaussian_blur(x, 1.0, (sigma, sigma), gen(), trace)[0, 0]
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    offsets = torch.arange(side) - side // 2
    for marginal in (out.sum(0), out.sum(1)):
        assert (marginal * offsets).sum().item() == pytest.approx(0.0, abs=1e-5)
        assert (marginal * offsets**2).sum().item() == pytest.approx(sigma**2, rel=0.02)
    torch.testing.assert_close(trace["sigma"], torch.tensor([sigma]))
    assert trace["blur"].all()


# --- ViewMaker ---------------------------------------------------------------------------------

FULL = ViewConfig(crops=[CropSpec(count=2, size=1.0, scale=(0.3, 1.0), blur_p=0.5, solarize_p=0.2),
                         CropSpec(count=3, size=0.5, scale=(0.05, 0.3), blur_p=0.3)])


def test_trace_changes_no_random_draw():
    maker = ViewMaker(FULL, [0.5] * 3, [0.25] * 3)
    x = (images(16, 32) * 255).to(torch.uint8)
    plain_gen, traced_gen = gen(5), gen(5)
    plain = maker(x, plain_gen)
    maker.trace = []
    traced = maker(x, traced_gen)
    assert len(maker.trace) == len(traced) == 5
    assert all(torch.equal(a, b) for a, b in zip(plain, traced))
    assert torch.equal(plain_gen.get_state(), traced_gen.get_state())


def test_view_maker_makes_what_its_config_says():
    maker = ViewMaker(FULL, [0.5] * 3, [0.25] * 3)
    maker.trace = []
    x = (images(1024, 32) * 255).to(torch.uint8)
    views = maker(x, gen(6))
    assert_views_follow(FULL, maker.trace, 32, views)
    assert [record["size"] for record in maker.trace] == [32, 32, 16, 16, 16]


def test_trace_records_the_rates_of_a_one_channel_config():
    config = ViewConfig(crops=[CropSpec(count=2, scale=(0.5, 1.0))], grayscale_p=0.7, jitter_p=0.3)
    maker = ViewMaker(config, [0.5], [0.25])
    maker.trace = []
    views = maker(torch.randint(0, 256, (512, 1, 16, 16), generator=gen(7), dtype=torch.uint8), gen(8))
    assert_views_follow(config, maker.trace, 16, views, channels=1)
