"""MAE, I-JEPA, data2vec and LeJEPA: losses against independent numpy formulas, masks, and where
gradients may and may not flow."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.augment.masks import block_mask, complement, jepa_blocks, random_keep
from core.backbones import build_backbone
from core.losses.latent import feature_norm, latent_regression, top_k_average
from core.losses.masked import masked_mse, patch_pixels
from core.losses.sigreg import epps_pulley, random_directions, sigreg, view_prediction
from tests.core.tiny import build_tiny, digits_16


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- losses


def test_patch_pixels_matches_a_loop():
    x = torch.randn(2, 3, 8, 8)
    got = patch_pixels(x, 4)
    for b in range(2):
        for i in range(2):
            for j in range(2):
                patch = x[b, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].permute(1, 2, 0).reshape(-1)
                torch.testing.assert_close(got[b, i * 2 + j], patch)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_masked_mse_matches_numpy(norm_pix):
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(3, 5, 12)), rng.normal(2.0, 3.0, size=(3, 5, 12))
    expected = []
    for b in range(3):
        for m in range(5):
            t = target[b, m]
            if norm_pix:
                t = (t - t.mean()) / math.sqrt(t.var(ddof=1) + 1e-6)
            expected.append(((pred[b, m] - t) ** 2).mean())
    got = masked_mse(torch.tensor(pred), torch.tensor(target), norm_pix=norm_pix)
    assert float(got) == pytest.approx(np.mean(expected), rel=1e-10)


def test_top_k_average_is_one_layer_norm_of_the_raw_average_matching_numpy():
    rng = np.random.default_rng(1)
    layers = [rng.normal(i, 1 + i, size=(2, 3, 6)) for i in range(4)]
    average = np.mean(layers[-3:], axis=0)
    mu, var = average.mean(-1, keepdims=True), average.var(-1, keepdims=True)
    expected = (average - mu) / np.sqrt(var + 1e-5)
    got = top_k_average([torch.tensor(layer) for layer in layers], 3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError):
        top_k_average([torch.tensor(layer) for layer in layers], 5)


def test_latent_regression_smooth_l1_and_mse():
    pred, target = torch.tensor([[0.0, 1.0, 5.0]]), torch.tensor([[0.5, -2.0, 5.0]])
    # beta 2: |d| < 2 -> d^2 / (2 * 2); else |d| - 1
    assert float(latent_regression(pred, target, "smooth_l1", beta=2.0)) == pytest.approx((0.0625 + 2.0 + 0) / 3)
    assert float(latent_regression(pred, target, "mse")) == pytest.approx((0.25 + 9.0) / 3)
    assert torch.allclose(feature_norm(torch.tensor([[1.0, 3.0]])), torch.tensor([[-1.0, 1.0]]), atol=1e-4)


def naive_epps_pulley(x: np.ndarray, t_max: float = 3.0, knots: int = 17) -> float:
    """N * integral over [-t_max, t_max] of |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2), trapezoid rule."""
    t = np.linspace(-t_max, t_max, 2 * knots - 1)
    values = []
    for ti in t:
        ecf = np.mean(np.exp(1j * ti * x))
        values.append(abs(ecf - np.exp(-ti**2 / 2)) ** 2 * np.exp(-ti**2 / 2))
    values = np.array(values)
    dt = t[1] - t[0]
    return len(x) * dt * (values.sum() - (values[0] + values[-1]) / 2)


def test_epps_pulley_matches_naive_integral_and_separates_distributions():
    rng = np.random.default_rng(2)
    samples = {"gauss": rng.normal(size=4000), "uniform": rng.uniform(-1.7, 1.7, size=4000),
               "collapsed": np.full(4000, 0.3), "shifted": rng.normal(1.0, 1.0, size=4000)}
    stats = {}
    for name, x in samples.items():
        got = float(epps_pulley(torch.tensor(x)[:, None])[0])
        assert got == pytest.approx(naive_epps_pulley(x), rel=1e-9)
        stats[name] = got
    # under N(0,1), N * statistic stays O(1) (its mean is about 1.06); otherwise it grows with N
    assert stats["gauss"] < 2
    assert min(stats["uniform"], stats["collapsed"], stats["shifted"]) > 50 * stats["gauss"]


def test_sigreg_directions_are_unit_and_reproducible():
    d1, d2 = random_directions(8, 16, gen(3), "cpu"), random_directions(8, 16, gen(3), "cpu")
    assert torch.equal(d1, d2)
    torch.testing.assert_close(d1.norm(dim=0), torch.ones(16))
    z = torch.randn(2, 500, 8, generator=gen(4))
    # an isotropic Gaussian passes, a low-rank one does not
    assert float(sigreg(z, d1)) < 3 < 30 < float(sigreg(z * torch.tensor([1.0] + [0.01] * 7), d1))


def test_view_prediction_matches_numpy():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(5, 4, 3))
    centre = z[:2].mean(0)
    expected = np.mean([((centre - z[v]) ** 2).mean() for v in range(5)])
    assert float(view_prediction(torch.tensor(z), 2)) == pytest.approx(expected)


# ---------------------------------------------------------------- masks


def test_random_keep_counts_and_distinct_indices():
    keep = random_keep(64, 49, 0.75, gen(6), "cpu")
    assert keep.shape == (64, round(0.25 * 49))
    assert all(len(set(row.tolist())) == keep.shape[1] for row in keep)
    assert keep.min() >= 0 and keep.max() < 49
    hidden = complement(keep, 49)
    assert torch.equal(torch.cat([keep, hidden], 1).sort(1).values, torch.arange(49).expand(64, -1))
    assert not torch.equal(keep[0], keep[1])


@pytest.mark.parametrize("grid", [4, 8, 14])
def test_jepa_context_and_targets_are_disjoint_and_on_the_grid(grid):
    context, targets = jepa_blocks(32, grid, grid, "cpu")
    n = grid * grid
    assert targets.shape[:2] == (32, 4) and context.shape[1] >= 1
    assert context.min() >= 0 and context.max() < n and targets.min() >= 0 and targets.max() < n
    for b in range(32):
        assert len(set(context[b].tolist())) == context.shape[1]
        assert not set(context[b].tolist()) & set(targets[b].flatten().tolist())
        for block in targets[b]:
            rows, cols = block // grid, block % grid
            h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
            assert h * w == len(block) == len(set(block.tolist()))  # a full rectangle
    if grid == 14:  # the paper's 15-20% target blocks
        assert 0.1 <= targets.shape[2] / n <= 0.25


def test_block_mask_ratio_and_blocks():
    mask = block_mask(64, 14, 0.6, gen(7), "cpu")
    counts = mask.sum(1).float()
    assert counts.max() <= round(0.6 * 196) and counts.mean() > 0.5 * 196
    assert not torch.equal(mask[0], mask[1])


# ---------------------------------------------------------------- gradient flow


def step_once(name: str):
    torch.manual_seed(0)
    method = build_tiny(name)
    images, _ = digits_16(32)
    loss, _ = method.training_step(images, gen(8), 0, 10)
    loss.backward()
    return method, loss


@pytest.mark.parametrize("name,frozen", [("ijepa", "target"), ("data2vec", "teacher")])
def test_ema_encoders_get_no_gradient_and_follow_the_online_one(name, frozen):
    method, loss = step_once(name)
    assert torch.isfinite(loss)
    target = getattr(method, frozen)
    assert all(p.grad is None and not p.requires_grad for p in target.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())
    assert method.parts()["backbone"] is target
    before = [p.clone() for p in target.parameters()]
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    method.after_step(0, 10)
    m = method.momentum  # step 0: the schedule's start
    for b, p, o in zip(before, target.parameters(), method.backbone.parameters()):
        torch.testing.assert_close(p, m * b + (1 - m) * o)


def test_lejepa_gradient_reaches_encoder_and_projector():
    method, loss = step_once("lejepa")
    assert torch.isfinite(loss)
    for module in (method.backbone, method.projector):
        assert all(p.grad is not None for p in module.parameters() if p.requires_grad)


def test_mae_encoder_never_sees_masked_patches():
    torch.manual_seed(0)
    vit = build_backbone("vit_tiny", in_channels=1, image_size=16, dim=32, depth=2, heads=2, patch_size=4)
    x = torch.randn(4, 1, 16, 16)
    keep = random_keep(4, 16, 0.75, gen(9), "cpu")
    hidden = complement(keep, 16)
    changed = x.clone()  # noise written into the hidden patches only
    for b in range(4):
        for idx in hidden[b].tolist():
            i, j = divmod(idx, 4)
            changed[b, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4] = torch.randn(1, 4, 4) * 10
    torch.testing.assert_close(vit.tokens(changed, keep), vit.tokens(x, keep))
    assert not torch.allclose(vit.tokens(changed), vit.tokens(x))


def test_vit_mask_tokens_replace_masked_patches_only():
    torch.manual_seed(0)
    vit = build_backbone("vit_tiny", in_channels=1, image_size=16, dim=32, depth=2, heads=2, patch_size=4)
    x = torch.randn(2, 1, 16, 16)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :5] = True
    token = torch.randn(32)
    plain, masked = vit.patchify(x), vit.patchify(x, mask, token)
    torch.testing.assert_close(masked[:, 5:], plain[:, 5:])
    torch.testing.assert_close(masked[:, :5], (token + vit.pos_embed[0, :5]).expand(2, -1, -1))
    torch.testing.assert_close(vit.tokens(x, mask=torch.zeros_like(mask), mask_token=token), vit.tokens(x))
