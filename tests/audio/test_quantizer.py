"""The Gumbel product quantizer against hand-written formulas on fixed inputs."""
from __future__ import annotations

import math

import torch

from core.heads.quantizer import GumbelQuantizer, gumbel_temperature, perplexity


def quantizer(seed: int = 0) -> GumbelQuantizer:
    torch.manual_seed(seed)
    return GumbelQuantizer(dim=6, codebook_dim=4, groups=2, entries=5)


def test_eval_picks_the_argmax_entry_of_each_codebook_and_concatenates_them():
    q = quantizer().eval()
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(1))
    out = q(x, temperature=2.0)
    logits = (x @ q.weight_proj.weight.T + q.weight_proj.bias).view(2, 3, 2, 5)
    books = q.codebooks.view(2, 5, 2)
    for b in range(2):
        for t in range(3):
            chosen = [int(logits[b, t, g].argmax()) for g in range(2)]
            assert out["codes"][b, t].tolist() == chosen
            expected = torch.cat([books[g, chosen[g]] for g in range(2)])
            assert torch.allclose(out["quantized"][b, t], expected)


def test_training_codes_follow_the_gumbel_noise_and_gradients_go_through_the_soft_probabilities():
    q = quantizer().train()
    x = torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(2))
    out = q(x, temperature=0.7, gen=torch.Generator().manual_seed(3))
    # the same noise by hand: g = -log(-log(u)), soft = softmax((logits + g) / tau)
    u = torch.rand(1, 4, 2, 5, generator=torch.Generator().manual_seed(3)).clamp(1e-10, 1 - 1e-7)
    logits = (x @ q.weight_proj.weight.T + q.weight_proj.bias).view(1, 4, 2, 5)
    soft = torch.softmax((logits - torch.log(-torch.log(u))) / 0.7, -1)
    assert torch.equal(out["codes"], soft.argmax(-1))
    hard = torch.nn.functional.one_hot(soft.argmax(-1), 5).float()
    books = q.codebooks.view(2, 5, 2)
    expected = torch.einsum("btgv,gvd->btgd", hard, books).reshape(1, 4, 4)
    assert torch.allclose(out["quantized"], expected, atol=1e-6)
    # straight-through: d/dW of sum(w * quantized) is that of the soft selection
    w = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(4))
    (out["quantized"] * w).sum().backward()
    straight = q.weight_proj.weight.grad.clone()
    q.zero_grad()
    logits = q.weight_proj(x).view(1, 4, 2, 5)
    soft = torch.softmax((logits - torch.log(-torch.log(u))) / 0.7, -1)
    (torch.einsum("btgv,gvd->btgd", soft, books.detach()).reshape(1, 4, 4) * w).sum().backward()
    assert torch.allclose(straight, q.weight_proj.weight.grad, atol=1e-6)


def test_perplexity_is_the_sum_of_exp_entropies_and_averages_only_the_weighted_frames():
    probs = torch.tensor([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert math.isclose(float(perplexity(probs)), 2.0 + 3.0, rel_tol=1e-5)
    q = quantizer().eval()
    x = torch.randn(1, 5, 6, generator=torch.Generator().manual_seed(5))
    weights = torch.tensor([[True, False, True, False, False]])
    out = q(x, temperature=1.0, weights=weights)
    logits = q.weight_proj(x).view(1, 5, 2, 5)
    average = logits[0, [0, 2]].softmax(-1).mean(0)
    assert torch.allclose(out["avg_probs"], average, atol=1e-6)
    hard = torch.nn.functional.one_hot(logits[0, [0, 2]].argmax(-1), 5).float().mean(0)
    assert math.isclose(float(out["code_perplexity"]), float(perplexity(hard)), rel_tol=1e-5)


def test_temperature_anneals_from_two_by_the_factor_per_update_down_to_its_floor():
    assert gumbel_temperature(0) == 2.0
    assert math.isclose(gumbel_temperature(1000), 2.0 * 0.999995**1000)
    assert gumbel_temperature(10**7) == 0.5
    assert gumbel_temperature(10**7, 2.0, 0.1) == 0.1
