"""fp32 islands: under bf16 autocast the statistics of Barlow Twins, VICReg, SwAV, DeepCluster-v2,
DINO and data2vec still compute in float32 and equal the value computed without autocast; without
the island the same code would compute in bf16 (which these tests would catch)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.losses.barlow_twins import cross_correlation
from core.losses.deepcluster import nearest_centroid, spherical_kmeans
from core.losses.dino import dino_loss, teacher_targets, updated_center
from core.losses.latent import top_k_average
from core.losses.precision import fp32
from core.losses.swav import prototype_scores, sinkhorn
from core.losses.vicreg import covariance, variance


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def unit(*shape, seed=0):
    return F.normalize(randn(*shape, seed=seed), dim=-1)


# name -> (island, inputs); inputs are float32 and are also given to the islands in bf16
ISLANDS = {
    "barlow_twins_cross_correlation": (cross_correlation, lambda: (randn(64, 32), randn(64, 32, seed=1))),
    "vicreg_covariance": (covariance, lambda: (randn(64, 32),)),
    "vicreg_variance": (variance, lambda: (randn(64, 32) * 0.5,)),
    "swav_prototype_scores": (prototype_scores, lambda: (unit(64, 16), unit(10, 16, seed=1))),
    "swav_sinkhorn": (sinkhorn, lambda: (unit(64, 16) @ unit(10, 16, seed=1).T,)),
    "deepcluster_kmeans": (spherical_kmeans, lambda: (unit(96, 8), unit(6, 8, seed=1))),
    "dino_teacher_targets": (teacher_targets, lambda: ([randn(16, 40), randn(16, 40, seed=1)], randn(40, seed=2))),
    "dino_center": (updated_center, lambda: (randn(40, seed=2), [randn(16, 40), randn(16, 40, seed=1)])),
    "data2vec_targets": (top_k_average, lambda: ([randn(4, 9, 24, seed=i) for i in range(3)], 2)),
}


def floats(value) -> list[torch.Tensor]:
    """The floating-point tensors of a result (a tensor, or nested tuples/lists of them)."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    return [t for v in value for t in floats(v)]


def ints(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [] if value.is_floating_point() else [value]
    return [t for v in value for t in ints(v)]


def to_bf16(value):
    if isinstance(value, torch.Tensor):
        return value.bfloat16()
    if isinstance(value, (list, tuple)):
        return type(value)(to_bf16(v) for v in value)
    return value


def to_fp32(value):
    if isinstance(value, torch.Tensor):
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(to_fp32(v) for v in value)
    return value


@pytest.mark.parametrize("name", ISLANDS)
def test_island_under_bf16_autocast_returns_the_float32_value_computed_without_autocast(name):
    island, inputs = ISLANDS[name]
    args = inputs()
    expected = island(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = island(*args)
    assert floats(got) and all(t.dtype == torch.float32 for t in floats(got)), name
    for g, e in zip(floats(got), floats(expected)):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)
    for g, e in zip(ints(got), ints(expected)):
        assert torch.equal(g, e), name


@pytest.mark.parametrize("name", ISLANDS)
def test_island_given_bf16_inputs_computes_in_float32(name):
    """Activations from a bf16 network: the island upcasts them and everything after is fp32."""
    island, inputs = ISLANDS[name]
    args = to_bf16(inputs())
    expected = island(*to_fp32(args))  # the same (rounded) inputs, upcast, no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = island(*args)
    assert all(t.dtype == torch.float32 for t in floats(got)), name
    for g, e in zip(floats(got), floats(expected)):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ISLANDS)
def test_without_the_island_the_same_code_computes_in_bf16(name):
    """The regression these islands prevent: the undecorated body, under autocast, on the
    activations of a bf16 network, returns bf16."""
    island, inputs = ISLANDS[name]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = island.__wrapped__(*to_bf16(inputs()))
    assert any(t.dtype == torch.bfloat16 for t in floats(raw)), name


@pytest.mark.parametrize("name", ["barlow_twins_cross_correlation", "vicreg_covariance", "swav_prototype_scores"])
def test_a_float32_cast_alone_does_not_hold_under_autocast(name):
    """Why the islands switch autocast off: even with float32 inputs (what `.float()` gives), the
    matmul inside runs in bf16 and the result is off by far more than fp32 rounding."""
    island, inputs = ISLANDS[name]
    args = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = island.__wrapped__(*args)
    assert raw.dtype == torch.bfloat16
    assert (raw.float() - island(*args)).abs().max() > 1e-4


def test_cluster_assignments_under_autocast_are_the_fp32_ones_where_bf16_would_flip_near_ties():
    x, centroids = unit(2000, 8), unit(50, 8, seed=1)
    expected = nearest_centroid(x, centroids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nearest_centroid(x, centroids)
        raw = nearest_centroid.__wrapped__(x, centroids)
        _, kmeans_labels = spherical_kmeans(x, centroids, iterations=0)
    assert torch.equal(got, expected) and torch.equal(kmeans_labels, expected)
    assert (raw != expected).sum() > 0  # without the island some points change cluster


def test_swav_codes_under_autocast_match_fp32_where_bf16_scores_would_not():
    z, prototypes = unit(64, 16), unit(10, 16, seed=1)
    expected = sinkhorn(prototype_scores(z, prototypes))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = sinkhorn(prototype_scores(z, prototypes))
        bf16_scores = z @ prototypes.T  # the scores the loss sees under autocast
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert bf16_scores.dtype == torch.bfloat16
    assert (sinkhorn(bf16_scores) - expected).abs().max() > 1e-3  # exp(score / 0.05) magnifies rounding


def test_dino_loss_under_autocast_equals_the_fp32_loss_on_the_same_logits():
    student = [randn(8, 40, seed=i).bfloat16() for i in range(4)]
    teacher = [randn(8, 40, seed=10 + i).bfloat16() for i in range(2)]
    center = randn(40, seed=20)
    expected = dino_loss([s.float() for s in student], [t.float() for t in teacher], center)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = dino_loss(student, teacher, center)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_fp32_switches_autocast_off_inside_and_restores_it_after():
    seen = {}

    @fp32
    def probe(x):
        seen["enabled"] = torch.is_autocast_enabled("cpu")
        seen["dtype"] = x.dtype
        return x @ x.T

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = probe(torch.ones(3, 4, dtype=torch.bfloat16))
        assert torch.is_autocast_enabled("cpu")
    assert seen == {"enabled": False, "dtype": torch.float32} and out.dtype == torch.float32


def test_islands_keep_gradients():
    z1, z2 = randn(32, 8).requires_grad_(), randn(32, 8, seed=1).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (cross_correlation(z1.bfloat16(), z2).pow(2).sum() + covariance(z1) + variance(z2)).backward()
    assert z1.grad is not None and z2.grad is not None
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
