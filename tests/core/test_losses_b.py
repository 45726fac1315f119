"""Losses of DINO, SwAV, DeepCluster-v2, Barlow Twins and VICReg against independent numpy
re-computations and their known limits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.losses.barlow_twins import barlow_twins_loss
from core.losses.deepcluster import deepcluster_loss, spherical_kmeans
from core.losses.dino import dino_loss, updated_center
from core.losses.swav import sinkhorn, swav_loss
from core.losses.vicreg import covariance, invariance, variance, vicreg_loss


def log_softmax_np(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def softmax_np(x):
    return np.exp(log_softmax_np(x))


def decorrelated(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """(n, d) columns with zero mean, unit biased variance and zero correlation."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))
    return (q * n**0.5).float()


def test_dino_loss_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(5, 7, generator=g) for _ in range(4)]
    teacher = [torch.randn(5, 7, generator=g) for _ in range(2)]
    center = torch.randn(7, generator=g)
    expected, pairs = 0.0, 0
    for gi, t in enumerate(teacher):
        p = softmax_np((t.numpy() - center.numpy()) / 0.04)
        for vi, s in enumerate(student):
            if vi == gi:
                continue
            logq = log_softmax_np(s.numpy() / 0.1)
            expected += np.mean([-(p[b] * logq[b]).sum() for b in range(5)])
            pairs += 1
    assert pairs == 6
    got = dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.04)
    assert got.item() == pytest.approx(expected / pairs, rel=1e-5)


def test_dino_loss_is_the_entropy_when_student_equals_teacher():
    t = torch.randn(6, 9, generator=torch.Generator().manual_seed(1))
    p = torch.softmax(t / 0.2, -1)
    entropy = -(p * p.log()).sum(-1).mean()
    got = dino_loss([t, t], [t, t], torch.zeros(9), student_temp=0.2, teacher_temp=0.2)
    assert got.item() == pytest.approx(entropy.item(), rel=1e-5)


def test_dino_targets_carry_no_gradient():
    g = torch.Generator().manual_seed(2)
    student = [torch.randn(4, 5, generator=g, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(4, 5, generator=g, requires_grad=True) for _ in range(2)]
    dino_loss(student, teacher, torch.zeros(5)).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)


def test_center_update_is_the_ema_of_the_teacher_batch_mean():
    g = torch.Generator().manual_seed(3)
    center = torch.randn(4, generator=g)
    teacher = [torch.randn(3, 4, generator=g) for _ in range(2)]
    mean = np.concatenate([t.numpy() for t in teacher]).mean(0)
    expected = 0.9 * center.numpy() + 0.1 * mean
    np.testing.assert_allclose(updated_center(center, teacher, 0.9).numpy(), expected, rtol=1e-6)


def sinkhorn_np(scores, eps, iterations):
    q = np.exp(scores / eps).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(1, keepdims=True)
        q /= k
        q /= q.sum(0, keepdims=True)
        q /= b
    return (q * b).T


def test_sinkhorn_matches_numpy_and_has_the_expected_marginals():
    scores = torch.nn.functional.normalize(torch.randn(12, 4, generator=torch.Generator().manual_seed(4)), dim=1)
    q = sinkhorn(scores, epsilon=0.05, iterations=3)
    np.testing.assert_allclose(q.numpy(), sinkhorn_np(scores.double().numpy(), 0.05, 3), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(q.sum(1), torch.ones(12))  # each sample's codes sum to 1
    converged = sinkhorn(scores, epsilon=0.5, iterations=500)
    torch.testing.assert_close(converged.sum(1), torch.ones(12))
    torch.testing.assert_close(converged.sum(0), torch.full((4,), 12 / 4), rtol=1e-4, atol=1e-4)  # equipartition


def test_sinkhorn_codes_carry_no_gradient():
    scores = torch.randn(8, 3, requires_grad=True)
    assert not sinkhorn(scores).requires_grad


def test_swav_loss_matches_a_naive_loop():
    g = torch.Generator().manual_seed(5)
    scores = [torch.randn(4, 6, generator=g) for _ in range(3)]
    codes = [torch.softmax(torch.randn(4, 6, generator=g), -1) for _ in range(2)]
    expected, pairs = 0.0, 0
    for a, q in enumerate(codes):
        for v, s in enumerate(scores):
            if v != a:
                logp = log_softmax_np(s.numpy() / 0.1)
                expected += -(q.numpy() * logp).sum(1).mean()
                pairs += 1
    assert swav_loss(scores, codes, 0.1).item() == pytest.approx(expected / pairs, rel=1e-5)


def test_barlow_twins_matches_numpy():
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g) * 3 + 1
    a = (z1.numpy() - z1.numpy().mean(0)) / np.sqrt(z1.numpy().var(0) + 1e-5)
    b = (z2.numpy() - z2.numpy().mean(0)) / np.sqrt(z2.numpy().var(0) + 1e-5)
    c = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            c[i, j] = (a[:, i] * b[:, j]).sum() / 16
    expected = sum((1 - c[i, i]) ** 2 for i in range(5)) + 5e-3 * sum(
        c[i, j] ** 2 for i in range(5) for j in range(5) if i != j)
    assert barlow_twins_loss(z1, z2, 5e-3).item() == pytest.approx(expected, rel=1e-4)


def test_barlow_twins_is_zero_for_identical_decorrelated_inputs():
    z = decorrelated(64, 8)
    assert barlow_twins_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert barlow_twins_loss(z, torch.roll(z, 1, dims=1)).item() > 1.0  # cross-matched dimensions


def test_vicreg_terms_match_numpy():
    g = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(10, 4, generator=g) * 0.5, torch.randn(10, 4, generator=g) * 2
    x, y = z1.double().numpy(), z2.double().numpy()
    inv = ((x - y) ** 2).mean()

    def var_np(z):
        return np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4)).mean()

    def cov_np(z):
        c = np.cov(z, rowvar=False)
        return sum(c[i, j] ** 2 for i in range(4) for j in range(4) if i != j) / 4

    loss, terms = vicreg_loss(z1, z2)
    assert terms["invariance"].item() == pytest.approx(inv, rel=1e-5)
    assert terms["variance"].item() == pytest.approx((var_np(x) + var_np(y)) / 2, rel=1e-5)
    assert terms["covariance"].item() == pytest.approx(cov_np(x) + cov_np(y), rel=1e-4)
    expected = 25 * inv + 25 * (var_np(x) + var_np(y)) / 2 + cov_np(x) + cov_np(y)
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_vicreg_limits():
    z = decorrelated(64, 8)
    assert variance(2 * z).item() == 0.0  # std >= 1 everywhere
    assert variance(0.5 * z).item() == pytest.approx(0.5 - 0.0, abs=1e-2)
    assert covariance(z).item() == pytest.approx(0.0, abs=1e-8)
    assert invariance(z, z).item() == 0.0
    assert variance(torch.ones(16, 4)).item() == pytest.approx(1 - 1e-2, rel=1e-6)  # collapse: sqrt(eps)


def kmeans_np(x, c, iterations):
    c = c.copy()
    for _ in range(iterations):
        assign = np.array([np.argmax([xi @ ck for ck in c]) for xi in x])
        for k in range(len(c)):
            members = x[assign == k]
            if len(members):
                m = members.sum(0)
                c[k] = m / np.linalg.norm(m)
    return c, np.array([np.argmax([xi @ ck for ck in c]) for xi in x])


def test_spherical_kmeans_matches_a_naive_loop():
    x = torch.nn.functional.normalize(torch.randn(40, 3, generator=torch.Generator().manual_seed(8)), dim=1)
    init = x[:5].clone()
    centroids, assign = spherical_kmeans(x, init, iterations=4)
    c_np, a_np = kmeans_np(x.double().numpy(), init.double().numpy(), 4)
    np.testing.assert_allclose(centroids.numpy(), c_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(assign.numpy(), a_np)


def test_spherical_kmeans_recovers_separated_clusters_and_keeps_empty_ones():
    g = torch.Generator().manual_seed(9)
    centers = torch.eye(3)
    x = torch.nn.functional.normalize(centers.repeat_interleave(10, 0) + 0.05 * torch.randn(30, 3, generator=g), dim=1)
    far = torch.tensor([[0.0, 0.0, -1.0]])
    init = torch.cat([x[[0, 10, 20]], far])
    centroids, assign = spherical_kmeans(x, init, iterations=5)
    assert torch.equal(assign, torch.arange(3).repeat_interleave(10))
    torch.testing.assert_close(centroids[3], far[0])  # an empty cluster keeps its centroid
    assert (centroids[:3] * centers).sum(1).min() > 0.99


def test_deepcluster_loss_matches_numpy():
    g = torch.Generator().manual_seed(10)
    scores = [torch.randn(6, 5, generator=g) for _ in range(3)]
    target = torch.randint(0, 5, (6,), generator=g)
    expected = np.mean([-log_softmax_np(s.numpy() / 0.1)[np.arange(6), target.numpy()].mean() for s in scores])
    assert deepcluster_loss(scores, target, 0.1).item() == pytest.approx(expected, rel=1e-5)
