"""Span masking of frame sequences and distractor sampling (wav2vec 2.0, arXiv:2006.11477 sec. 3.1
and 3.3; fairseq's compute_mask_indices and sample_negatives), in tensor ops on the device from a
torch.Generator: no host sync, so a step never waits for the device."""
from __future__ import annotations

import torch
from torch import Tensor


def _ranks(scores: Tensor) -> Tensor:
    """Each entry's rank within its row (0 = smallest)."""
    return scores.argsort(1).argsort(1)


def span_mask(valid: Tensor, mask_prob: float, span: int, gen: torch.Generator, min_masks: int = 2,
              same_count: bool = True) -> Tensor:
    """(B, T) bool, True at masked frames. valid: (B, T) bool, True at the frames of each sequence
    (padding after them). As fairseq's compute_mask_indices (static lengths, overlap allowed):
    a sequence of n frames draws int(mask_prob * n / span + U[0,1)) span starts (at least
    min_masks) without replacement among its first n - span frames (more when n is short), and
    masks `span` frames from each start, never past its end. mask_prob is the expected share of
    frames that start a span times `span` (fairseq 0.65 = the paper's p = 0.065 with M = 10).
    same_count: every row keeps as many masked frames as the row with fewest, chosen at random."""
    b, t = valid.shape
    device = valid.device
    lengths = valid.sum(1)
    draw = torch.rand(b, generator=gen, device=device)
    count = (mask_prob * lengths / span + draw).floor().long().clamp_min(min_masks)
    # starts lie in [0, high): n - span, or count + 1 when a short sequence leaves fewer (fairseq's min_len)
    high = torch.where(lengths - span > count, lengths - span, count + 1).clamp(max=t)
    count = torch.minimum(count, high).clamp_max(lengths.clamp_min(0))
    position = torch.arange(t, device=device)
    eligible = position[None] < high[:, None]
    scores = torch.rand(b, t, generator=gen, device=device).masked_fill(~eligible, 2.0)
    starts = (_ranks(scores) < count[:, None]) & eligible
    ends = starts.long().cumsum(1)
    before = torch.nn.functional.pad(ends, (span, 0))[:, :t]  # starts more than `span` frames back
    mask = (ends - before > 0) & valid
    if same_count and b > 1:
        fewest = mask.sum(1).min()
        scores = torch.rand(b, t, generator=gen, device=device).masked_fill(~mask, 2.0)
        mask = _ranks(scores) < fewest
    return mask


def sample_distractors(mask: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """(B, T, k) frame indices: for each masked frame, k distractors drawn uniformly with
    replacement from the other masked frames of the same sequence (fairseq sample_negatives on
    the masked frames). A row with a single masked frame draws that frame itself (the loss
    drops distractors equal to the target). Entries at unmasked frames are valid indices that
    the loss ignores."""
    b, t = mask.shape
    count = mask.sum(1)[:, None, None]  # (B, 1, 1)
    masked_first = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)  # masked frames first, in time order
    own = (mask.long().cumsum(1) - 1).clamp_min(0)[..., None]  # each masked frame's place among them
    draw = (torch.rand(b, t, k, generator=gen, device=mask.device) * (count - 1).clamp_min(1)).long()
    draw = (draw + (draw >= own).long()).clamp(max=(count - 1).clamp_min(0))
    return masked_first.gather(1, draw.reshape(b, t * k)).reshape(b, t, k)
