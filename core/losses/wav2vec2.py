"""wav2vec 2.0's losses (arXiv:2006.11477 eq. 2-4): the contrastive task over distractors from
the same utterance, and the codebook diversity penalty."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def contrastive_loss(context: Tensor, targets: Tensor, mask: Tensor, distractors: Tensor, temperature: float = 0.1,
                     invalid: Tensor | None = None) -> Tensor:
    """Eq. 3: -log exp(sim(c_t, q_t)/kappa) / sum over {q_t} + distractors of exp(sim(c_t, q~)/kappa),
    sim the cosine similarity, averaged over the masked frames.
    context, targets: (B, T, D); mask: (B, T) bool, the frames scored; distractors: (B, T, K)
    indices into T of the same row's targets; invalid: (B, T, K) bool, distractors left out
    (fairseq drops those equal to the target)."""
    dtype = torch.promote_types(context.dtype, torch.float32)  # fp32 at least (under autocast too)
    c = F.normalize(context.to(dtype), dim=-1, eps=1e-8)
    q = F.normalize(targets.to(dtype), dim=-1, eps=1e-8)
    similarity = c @ q.transpose(1, 2) / temperature  # (B, T, T): context frame i against target frame j
    positive = similarity.diagonal(dim1=1, dim2=2)[..., None]
    negative = similarity.gather(2, distractors)
    if invalid is not None:
        negative = negative.masked_fill(invalid, float("-inf"))
    nll = -torch.cat([positive, negative], -1).log_softmax(-1)[..., 0]
    weight = mask.to(nll.dtype)
    return (nll * weight).sum() / weight.sum().clamp_min(1)


def diversity_loss(avg_probs: Tensor) -> Tensor:
    """Eq. 4 as fairseq computes it: (G*V - perplexity) / (G*V), with perplexity the sum over the
    G codebooks of exp(entropy of the softmax averaged over frames). avg_probs: (G, V)."""
    groups, entries = avg_probs.shape
    perplexity = torch.exp(-(avg_probs * torch.log(avg_probs + 1e-7)).sum(-1)).sum()
    return (groups * entries - perplexity) / (groups * entries)
