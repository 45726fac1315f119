"""wav2vec 2.0's contrastive and diversity losses against independent formulas."""
from __future__ import annotations

import math

import numpy as np
import torch

from core.losses.wav2vec2 import contrastive_loss, diversity_loss


def loop_loss(c, q, mask, neg, temperature, invalid):
    """Eq. 3 frame by frame in numpy."""
    total, count = 0.0, 0
    for b in range(c.shape[0]):
        for t in range(c.shape[1]):
            if not mask[b, t]:
                continue
            cos = lambda u, v: float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
            logits = [cos(c[b, t], q[b, t]) / temperature]
            logits += [cos(c[b, t], q[b, j]) / temperature for j, bad in zip(neg[b, t], invalid[b, t]) if not bad]
            logits = np.array(logits)
            total += -(logits[0] - np.log(np.exp(logits).sum()))
            count += 1
    return total / count


def fixed(seed=0, b=2, t=6, d=5, k=4):
    g = torch.Generator().manual_seed(seed)
    c, q = torch.randn(b, t, d, generator=g, dtype=torch.float64), torch.randn(b, t, d, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) < 0.6
    mask[:, 0] = True
    neg = torch.randint(0, t, (b, t, k), generator=g)
    invalid = torch.rand(b, t, k, generator=g) < 0.2
    return c, q, mask, neg, invalid


def test_contrastive_loss_matches_the_frame_by_frame_formula():
    c, q, mask, neg, invalid = fixed()
    got = contrastive_loss(c, q, mask, neg, 0.1, invalid)
    assert math.isclose(float(got), loop_loss(c.numpy(), q.numpy(), mask.numpy(), neg.numpy(), 0.1, invalid.numpy()),
                        rel_tol=1e-5)
    none = torch.zeros_like(invalid)
    assert math.isclose(float(contrastive_loss(c, q, mask, neg, 0.5)),
                        loop_loss(c.numpy(), q.numpy(), mask.numpy(), neg.numpy(), 0.5, none.numpy()), rel_tol=1e-5)


def test_contrastive_loss_gradcheck():
    c, q, mask, neg, invalid = fixed(seed=1, t=4, d=3, k=3)
    c.requires_grad_(), q.requires_grad_()
    assert torch.autograd.gradcheck(lambda c, q: contrastive_loss(c, q, mask, neg, 0.1, invalid), (c, q),
                                    eps=1e-6, atol=1e-6)


def test_diversity_loss_is_zero_for_uniform_use_and_near_one_for_a_single_entry():
    g, v = 2, 320
    assert abs(float(diversity_loss(torch.full((g, v), 1 / v)))) < 1e-4
    one = torch.zeros(g, v)
    one[:, 0] = 1
    assert math.isclose(float(diversity_loss(one)), (g * v - g) / (g * v), rel_tol=1e-5)
    probs = torch.softmax(torch.randn(g, v, generator=torch.Generator().manual_seed(0)), -1)
    entropy = -(probs * torch.log(probs + 1e-7)).sum(-1)
    assert math.isclose(float(diversity_loss(probs)), float((g * v - entropy.exp().sum()) / (g * v)), rel_tol=1e-5)
