"""Each protocol on synthetic data with a known answer, against independent formulas, and seeded."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from core.evaluate.finetune import finetune
from core.evaluate.health import alignment, collapse_reason, health_stats, rankme, uniformity
from core.evaluate.linear import balanced_subset
from core.evaluate.protocols import check_options, protocol_names, run_protocol


def clusters(n_per_class=60, classes=10, dim=16, spread=0.3, seed=0):
    """Well separated Gaussian clusters: train and test from the same centres."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen) * 3
    def draw():
        y = torch.arange(classes).repeat_interleave(n_per_class)
        return centres[y] + spread * torch.randn(len(y), dim, generator=gen), y
    (a, ay), (b, by) = draw(), draw()
    return a, ay, b, by


def random_labels(n=600, classes=10, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, dim, generator=gen), torch.randint(classes, (n,), generator=gen),
            torch.randn(n, dim, generator=gen), torch.randint(classes, (n,), generator=gen))


@pytest.mark.parametrize("name,metric", [("knn", "top1@k20"), ("knn", "top1@k200"), ("linear", "top1"),
                                         ("linear", "top5"), ("few-shot", "top1@10pct"), ("clustering", "nmi"),
                                         ("clustering", "ari")])
def test_separable_clusters_score_near_perfect(name, metric):
    out = run_protocol(name, *clusters(), seed=0)
    assert out[metric] > 0.97, out


@pytest.mark.parametrize("name,metric", [("knn", "top1@k20"), ("linear", "top1"), ("few-shot", "top1@10pct")])
def test_random_labels_score_near_chance(name, metric):
    out = run_protocol(name, *random_labels(), seed=0)
    assert 0.03 < out[metric] < 0.2, out  # chance is 0.1


def test_clustering_on_random_labels_is_near_zero():
    out = run_protocol("clustering", *random_labels(), seed=0)
    assert abs(out["ari"]) < 0.05 and out["nmi"] < 0.1, out


def test_few_shot_reports_both_fractions_and_one_percent_uses_few_labels():
    out = run_protocol("few-shot", *clusters(n_per_class=100), seed=0)
    assert set(out) == {"top1@1pct", "top1@10pct"}
    y = torch.arange(10).repeat_interleave(100)
    idx = balanced_subset(y, 0.01, seed=3)
    assert len(idx) == 10 and sorted(y[idx].tolist()) == list(range(10))  # one per class


@pytest.mark.parametrize("name", ["knn", "linear", "few-shot", "clustering", "health"])
def test_protocols_are_deterministic_under_a_seed(name):
    data = random_labels(n=300)
    assert run_protocol(name, *data, seed=5) == run_protocol(name, *data, seed=5)


def test_knn_matches_a_naive_loop():
    tx, ty, qx, qy = random_labels(n=80, classes=3, dim=5, seed=1)
    got = run_protocol("knn", tx, ty, qx, qy, k=[7], temperature=0.1)["top1@k7"]
    correct = 0
    for q, label in zip(qx.numpy(), qy.numpy()):
        sims = [float(np.dot(q, t) / np.linalg.norm(q) / np.linalg.norm(t)) for t in tx.numpy()]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:7]
        votes = [0.0] * 3
        for i in order:
            votes[int(ty[i])] += math.exp(sims[i] / 0.1)
        correct += int(np.argmax(votes) == label)
    assert got == pytest.approx(correct / len(qx))


def test_health_statistics_against_formulas():
    z = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    s = np.linalg.svd(z.double().numpy(), compute_uv=False)
    p = s / s.sum() + 1e-7
    assert rankme(z) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-6)
    assert 7 < rankme(z) <= 8
    n = torch.nn.functional.normalize(z, dim=1).numpy()
    pairs = [np.exp(-2 * np.sum((n[i] - n[j]) ** 2)) for i in range(60) for j in range(i + 1, 60)]
    assert uniformity(z[:60]) == pytest.approx(float(np.log(np.mean(pairs))), rel=1e-5)
    assert alignment(z, z) == pytest.approx(0.0, abs=1e-12)
    assert alignment(z, -z) == pytest.approx(4.0, rel=1e-5)  # ||a - (-a)||^2 = 4 on the sphere
    spread = health_stats(z)
    assert collapse_reason(spread, 8) is None
    collapsed = torch.randn(1, 8).repeat(500, 1) + 1e-6 * torch.randn(500, 8)
    assert collapse_reason(health_stats(collapsed), 8) is not None
    one_direction = torch.randn(500, 1) * torch.randn(1, 8)  # spread std, but rank 1
    assert "RankMe" in collapse_reason(health_stats(one_direction), 8)


def test_finetune_learns_separable_images_and_is_seeded():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat(40)
    images = (torch.rand(80, 1, 4, 4, generator=gen) * 60 + y.view(-1, 1, 1, 1) * 180).to(torch.uint8)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 8))
    encoder.feature_dim = 8
    before = [p.clone() for p in encoder.parameters()]
    args = (encoder, images, y, images, y, [0.5], [0.25])
    out = finetune(*args, seed=1, steps=40, batch_size=16, lr=1e-2)
    assert out["top1"] == 1.0 and "top5" not in out
    assert finetune(*args, seed=1, steps=40, batch_size=16, lr=1e-2) == out
    assert all(torch.equal(a, b) for a, b in zip(before, encoder.parameters()))  # a copy is trained
    stops = finetune(*args, seed=1, steps=40, should_stop=lambda step: step >= 0)
    assert 0 <= stops["top1"] <= 1


def test_unknown_protocol_or_option_is_a_clear_error():
    assert {"knn", "linear", "few-shot", "finetune", "clustering", "health"} <= set(protocol_names())
    with pytest.raises(ValueError, match="unknown protocol"):
        check_options("nope", {})
    with pytest.raises(ValueError, match="unknown options"):
        check_options("knn", {"kk": 3})
    check_options("finetune", {"steps": 3})


def test_health_leaves_out_class_alignment_without_same_class_pairs():
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    out = run_protocol("health", z, torch.arange(5), z, torch.arange(5))
    assert "class_alignment" not in out and all(math.isfinite(v) for v in out.values())
