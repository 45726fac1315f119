"""MoCo v2/v3, NNCLR, BYOL and SimSiam: losses against naive re-computations, gradient flow,
queues, momentum targets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from core.losses.byol import normalized_mse
from core.losses.infonce import info_nce
from core.losses.simsiam import negative_cosine
from core.methods import method_info
from core.methods.feature_queue import FeatureQueue
from core.methods.momentum import ema_update, frozen_copy, momentum_at
from core.methods.nnclr import nearest_neighbour
from tests.core.tiny import build_tiny, digits_16

METHODS_A = ["moco_v2", "moco_v3", "nnclr", "byol", "simsiam"]


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def naive_cross_entropy(logits_row: list[float], target: int) -> float:
    top = max(logits_row)
    return -(logits_row[target] - top - math.log(sum(math.exp(v - top) for v in logits_row)))


@pytest.fixture
def vectors():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(3)]


# ---- losses ----

def test_info_nce_with_queue_matches_a_loop(vectors):
    q, k, negatives = vectors
    qn, kn, nn_ = unit(q.numpy()), unit(k.numpy()), unit(negatives.numpy())
    expected = np.mean([naive_cross_entropy([float(qn[i] @ kn[i]) / 0.2] + [float(qn[i] @ n) / 0.2 for n in nn_], 0)
                        for i in range(len(q))])
    assert float(info_nce(q, k, negatives, temperature=0.2)) == pytest.approx(expected, rel=1e-9)


def test_info_nce_in_batch_matches_a_loop(vectors):
    q, k, _ = vectors
    qn, kn = unit(q.numpy()), unit(k.numpy())
    expected = np.mean([naive_cross_entropy([float(qn[i] @ kn[j]) / 0.1 for j in range(len(k))], i)
                        for i in range(len(q))])
    assert float(info_nce(q, k, temperature=0.1)) == pytest.approx(expected, rel=1e-9)


def test_info_nce_is_zero_for_separable_keys_and_chance_for_identical_ones():
    basis = torch.eye(8)
    assert float(info_nce(basis[:4], basis[:4], basis[4:], temperature=0.01)) < 1e-6
    assert float(info_nce(basis, basis, temperature=0.01)) < 1e-6
    same = torch.ones(4, 3)
    assert float(info_nce(same, same, torch.ones(7, 3), temperature=0.2)) == pytest.approx(math.log(8))


def test_normalized_mse_matches_formula_and_limits(vectors):
    p, z, _ = vectors
    expected = np.mean(np.sum((unit(p.numpy()) - unit(z.numpy())) ** 2, axis=1))
    assert float(normalized_mse(p, z)) == pytest.approx(expected, rel=1e-9)
    assert float(normalized_mse(p, 3 * p)) == pytest.approx(0.0, abs=1e-12)
    assert float(normalized_mse(p, -p)) == pytest.approx(4.0)


def test_negative_cosine_matches_formula_and_limits(vectors):
    p, z, _ = vectors
    expected = -np.mean(np.sum(unit(p.numpy()) * unit(z.numpy()), axis=1))
    assert float(negative_cosine(p, z)) == pytest.approx(expected, rel=1e-9)
    assert float(negative_cosine(p, 2 * p)) == pytest.approx(-1.0)
    assert float(negative_cosine(p, -p)) == pytest.approx(1.0)


def test_losses_stop_the_gradient_into_their_targets(vectors):
    p, z, _ = (v.clone().requires_grad_(True) for v in vectors)
    for loss in (negative_cosine, normalized_mse):
        grad_p, grad_z = torch.autograd.grad(loss(p, z), [p, z], allow_unused=True)
        assert grad_z is None
        assert grad_p.abs().sum() > 0


def test_cosine_losses_are_computed_in_fp32_for_half_precision_inputs(vectors):
    p, z, _ = vectors
    for loss in (negative_cosine, normalized_mse):
        half = loss(p.bfloat16(), z.bfloat16())
        assert half.dtype == torch.float32
        assert float(half) == pytest.approx(float(loss(p, z)), abs=2e-2)


def test_nearest_neighbour_matches_a_loop(vectors):
    z, support = torch.nn.functional.normalize(vectors[0], dim=1), torch.nn.functional.normalize(vectors[2], dim=1)
    result = nearest_neighbour(z, support)
    for i in range(len(z)):
        best = max(range(len(support)), key=lambda j: float(z[i] @ support[j]))
        assert torch.equal(result[i], support[best])


def test_moco_v3_loss_is_symmetric_cross_entropy_scaled_by_two_tau(vectors):
    method = build_tiny("moco_v3")
    q, k, _ = vectors
    expected = 2 * 0.2 * float(info_nce(q, k, temperature=0.2))
    assert float(method.contrastive(q, k)) == pytest.approx(expected)
    assert method.temperature == 0.2


# ---- queues ----

def test_queue_is_fifo_and_its_pointer_wraps():
    queue = FeatureQueue(5, 2)
    first, second = torch.arange(6.0).view(3, 2), 10 + torch.arange(6.0).view(3, 2)
    queue.push(first)
    assert int(queue.ptr) == 3
    torch.testing.assert_close(queue.items[:3], first)
    queue.push(second)
    assert int(queue.ptr) == 1
    torch.testing.assert_close(queue.items, torch.cat([second[2:], first[1:], second[:2]]))
    assert queue.ptr.dtype == torch.long and "ptr" in dict(queue.named_buffers())


def test_queue_keeps_the_newest_rows_of_an_oversized_batch():
    queue = FeatureQueue(4, 1)
    queue.push(torch.arange(6.0).view(6, 1))
    assert int(queue.ptr) == 0
    torch.testing.assert_close(queue.items.flatten(), torch.tensor([2.0, 3.0, 4.0, 5.0]))


@pytest.mark.parametrize("name, queue_attr, per_step", [("moco_v2", "queues.0", 1), ("moco_v2", "queues.1", 1),
                                                         ("nnclr", "support", 1)])
def test_training_step_pushes_unit_projections(name, queue_attr, per_step):
    method = build_tiny(name)
    images, _ = digits_16(16)
    queue = method.get_submodule(queue_attr)
    before = queue.items.clone()
    loss, _ = method.training_step(images, torch.Generator().manual_seed(0), 0, 10)
    loss.backward()
    written = per_step * len(images)
    assert int(queue.ptr) == written % len(queue.items)
    assert not torch.equal(queue.items[:written], before[:written])
    torch.testing.assert_close(queue.items[written:], before[written:])
    torch.testing.assert_close(queue.items.norm(dim=1), torch.ones(len(queue.items)))


# ---- momentum targets ----

def test_frozen_copy_is_independent_and_gets_no_gradient():
    online = nn.Linear(3, 2)
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    torch.testing.assert_close(target.weight, online.weight)
    assert target.weight.data_ptr() != online.weight.data_ptr()


def test_ema_update_equals_the_formula():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target[1].running_mean.fill_(7.0)
    old = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update(target, online, 0.9)
    for key, value in online.named_parameters():
        torch.testing.assert_close(target.state_dict()[key], 0.9 * old[key] + 0.1 * value.detach())
    torch.testing.assert_close(target[1].running_mean, torch.full((4,), 7.0))


def test_momentum_schedule_is_the_byol_cosine():
    assert momentum_at(0, 100, 0.996) == pytest.approx(0.996)
    assert momentum_at(100, 100, 0.996) == pytest.approx(1.0)
    for k in (13, 50, 77):
        assert momentum_at(k, 100, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi * k / 100) + 1) / 2)


MOMENTUM_PAIRS = [("momentum_backbone", "backbone"), ("momentum_projector", "projector")]
TARGET_PAIRS = [("target_backbone", "backbone"), ("target_projector", "projector")]


@pytest.mark.parametrize("name, pairs", [("moco_v2", MOMENTUM_PAIRS), ("moco_v3", MOMENTUM_PAIRS),
                                         ("byol", TARGET_PAIRS)])
def test_after_step_moves_targets_by_the_scheduled_momentum(name, pairs):
    method = build_tiny(name)
    with torch.no_grad():
        for _, online in pairs:
            for p in getattr(method, online).parameters():
                p.add_(torch.randn_like(p))
    old = {t: [p.clone() for p in getattr(method, t).parameters()] for t, _ in pairs}
    method.after_step(30, 100)
    m = momentum_at(30, 100, method.momentum, getattr(method, "final_momentum", 1.0))
    for target, online in pairs:
        now = getattr(method, target).parameters()
        for before, after, o in zip(old[target], now, getattr(method, online).parameters(), strict=True):
            torch.testing.assert_close(after, m * before + (1 - m) * o.detach())


# ---- gradient flow ----

FROZEN = {"moco_v2": ["momentum_backbone", "momentum_projector"],
          "moco_v3": ["momentum_backbone", "momentum_projector"],
          "byol": ["target_backbone", "target_projector"], "nnclr": [], "simsiam": []}
TRAINED = {"moco_v2": ["backbone", "projector"], "moco_v3": ["backbone", "projector", "predictor"],
           "byol": ["backbone", "projector", "predictor"], "nnclr": ["backbone", "projector", "predictor"],
           "simsiam": ["backbone", "projector", "predictor"]}


@pytest.mark.parametrize("name", METHODS_A)
def test_gradients_reach_the_online_network_and_never_the_targets(name):
    method = build_tiny(name).train()
    images, _ = digits_16(16)
    loss, _ = method.training_step(images, torch.Generator().manual_seed(1), 0, 10)
    loss.backward()
    assert torch.isfinite(loss)
    for attr in FROZEN[name]:
        for key, p in getattr(method, attr).named_parameters():
            assert not p.requires_grad and p.grad is None, f"{attr}.{key}"
    for attr in TRAINED[name]:
        grads = [p.grad for p in getattr(method, attr).parameters()]
        assert all(g is not None for g in grads), attr
        assert sum(float(g.abs().sum()) for g in grads) > 0, attr


def test_simsiam_target_branch_gets_no_gradient():
    method = build_tiny("simsiam").train()
    views = method.views(digits_16(8)[0], torch.Generator().manual_seed(2))
    z1, z2 = (method.projector(method.backbone(v)) for v in views[:2])
    p1 = method.predictor(z1)
    grad_z1, grad_z2 = torch.autograd.grad(negative_cosine(p1, z2), [z1, z2], allow_unused=True)
    assert grad_z2 is None
    assert grad_z1.abs().sum() > 0


# ---- registry and parts ----

def test_paper_defaults_are_registered():
    byol = method_info("byol")
    assert [(c.blur_p, c.solarize_p) for c in byol.recipes["large"].views.crops] == [(1.0, 0.0), (0.1, 0.2)]
    assert byol.options()["momentum"] == 0.996
    assert method_info("moco_v3").default_backbone == "vit_small"
    assert method_info("moco_v2").options()["temperature"] == 0.2
    assert method_info("moco_v3").options()["temperature"] == 0.2
    assert method_info("nnclr").options()["temperature"] == 0.1
    assert method_info("simsiam").options()["pred_hidden_dim"] < method_info("simsiam").options()["proj_dim"]


def test_byol_hands_out_the_target_encoder():
    method = build_tiny("byol")
    parts = method.parts()
    assert parts["backbone"] is method.target_backbone and parts["online"] is method.backbone
    assert method.downstream_encoder() is method.target_backbone


@pytest.mark.parametrize("name, keys", [("moco_v2", ["queues.0.items", "queues.1.ptr", "momentum_backbone."]),
                                        ("moco_v3", ["momentum_backbone.", "momentum_projector."]),
                                        ("nnclr", ["support.items", "support.ptr"]),
                                        ("byol", ["target_backbone.", "target_projector."])])
def test_queues_and_targets_are_in_the_state_dict(name, keys):
    state = build_tiny(name).state_dict()
    for key in keys:
        assert any(k.startswith(key) for k in state), key
    assert not any(k.startswith("views") for k in state)
