"""MLM masking (15 %, 80/10/10, specials never chosen, a function of the generator), the loss
on selected tokens only, and SimCSE's loss against a hand-written eq. 1, with a gradient check."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.losses.mlm import masked_lm_loss
from core.losses.simcse import simcse_loss
from core.text.masking import IGNORE, mask_tokens
from core.text.tokenizer import CLS, MASK, PAD, SEP, SPECIAL_TOKENS

VOCAB = 1000


def corpus_batch(n: int = 400, length: int = 60) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(len(SPECIAL_TOKENS), VOCAB, (n, length), generator=gen)
    ids[:, 0], ids[:, -1] = CLS, SEP
    ids[::2, 40:] = PAD  # half the rows are shorter
    ids[::2, 39] = SEP
    return ids


def test_selection_and_80_10_10_proportions():
    ids = corpus_batch()
    inputs, targets = mask_tokens(ids, torch.Generator().manual_seed(0), VOCAB)
    ordinary = (ids != PAD) & (ids != CLS) & (ids != SEP)
    selected = targets != IGNORE
    assert not (selected & ~ordinary).any()  # never PAD, CLS or SEP
    n_ordinary, n_selected = int(ordinary.sum()), int(selected.sum())
    # binomial(n, 0.15): 5 standard deviations
    assert abs(n_selected - 0.15 * n_ordinary) < 5 * math.sqrt(n_ordinary * 0.15 * 0.85)
    assert torch.equal(targets[selected], ids[selected]) and torch.equal(inputs[~selected], ids[~selected])
    masked = int((inputs[selected] == MASK).sum())
    kept = int((inputs[selected] == ids[selected]).sum())
    changed = n_selected - masked - kept  # replaced by another token (a random draw may also hit itself)
    sd = math.sqrt(n_selected * 0.1 * 0.9)
    assert abs(masked - 0.8 * n_selected) < 5 * math.sqrt(n_selected * 0.16)
    assert abs(kept - 0.1 * n_selected) < 5 * sd and abs(changed - 0.1 * n_selected) < 5 * sd
    assert (inputs[selected & (inputs != MASK)] >= len(SPECIAL_TOKENS)).all()  # random tokens are ordinary


def test_masks_are_a_function_of_the_generator_seed():
    ids = corpus_batch(20)
    a = mask_tokens(ids, torch.Generator().manual_seed(7), VOCAB)
    b = mask_tokens(ids, torch.Generator().manual_seed(7), VOCAB)
    c = mask_tokens(ids, torch.Generator().manual_seed(8), VOCAB)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_mlm_loss_is_cross_entropy_on_selected_tokens_only():
    from core.backbones import build_backbone
    from core.methods.mlm import MLM

    torch.manual_seed(0)
    method = MLM(build_backbone("text_tiny", vocab_size=VOCAB, max_length=64, dropout=0.0)).eval()
    ids = corpus_batch(8)
    inputs, targets = mask_tokens(ids, torch.Generator().manual_seed(0), VOCAB)
    logits, chosen = method.predict(inputs, targets)
    tokens = method.backbone.tokens(inputs)
    full = method.head(tokens.flatten(0, 1), method.backbone.token_embed.weight)  # every position
    keep = (targets != IGNORE).flatten()
    expected = -torch.log_softmax(full, 1)[keep].gather(1, targets.flatten()[keep][:, None]).mean()
    assert torch.allclose(masked_lm_loss(logits, chosen), expected, atol=1e-5)
    # changing what an unselected position "should" be changes nothing
    other = torch.where(targets == IGNORE, IGNORE, targets)
    assert torch.equal(other, targets)
    empty = masked_lm_loss(logits[:0], chosen[:0])
    assert empty.item() == 0.0 and empty.requires_grad


def simcse_by_hand(z1, z2, t):
    total = 0.0
    for i in range(len(z1)):
        sims = [F.cosine_similarity(z1[i], z2[j], dim=0) / t for j in range(len(z2))]
        total += -(sims[i] - torch.logsumexp(torch.stack(sims), 0))
    return total / len(z1)


def test_simcse_loss_matches_equation_1():
    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 16, generator=gen), torch.randn(6, 16, generator=gen)
    assert torch.allclose(simcse_loss(z1, z2, 0.05), simcse_by_hand(z1, z2, 0.05), atol=1e-5)
    assert simcse_loss(z1, z1, 0.05) < simcse_loss(z1, z2, 0.05)  # identical views: near zero


def test_simcse_loss_gradients():
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: simcse_by_hand(a, b, 0.5), (z1, z2))
    loss = simcse_loss(z1, z2, 0.5)
    grads = torch.autograd.grad(loss, (z1, z2))
    by_hand = torch.autograd.grad(simcse_by_hand(z1, z2, 0.5), (z1, z2))
    assert all(torch.allclose(g.double(), h, atol=1e-5) for g, h in zip(grads, by_hand))
