"""Span masking (fairseq compute_mask_indices) and distractor sampling."""
from __future__ import annotations

import torch

from core.augment.spans import sample_distractors, span_mask


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_masked_fraction_matches_the_expected_span_coverage():
    valid = torch.ones(400, 200, dtype=torch.bool)
    mask = span_mask(valid, 0.65, 10, gen(0), same_count=False)
    # 13 starts (of 190) a row on average; frame t is masked unless no start is in the 10 before it
    expected = 1 - (1 - 13 / 190) ** 10
    assert abs(mask.float().mean().item() - expected) < 0.03


def test_spans_are_runs_of_the_span_length_and_never_pass_the_padding():
    lengths = torch.tensor([200, 120, 60, 25])
    valid = torch.arange(200)[None] < lengths[:, None]
    mask = span_mask(valid, 0.3, 10, gen(1), same_count=False)
    assert not (mask & ~valid).any()
    for row, n in zip(mask, lengths.tolist()):
        runs, run = [], 0
        for flag in row[:n].tolist() + [False]:
            if flag:
                run += 1
            elif run:
                runs.append(run)
                run = 0
        assert runs and all(r >= 10 or r == sum(row[n - r:n].tolist()) for r in runs)  # only the end cuts a span


def test_same_count_gives_every_row_the_fewest_rows_count():
    lengths = torch.tensor([200, 150, 40])
    valid = torch.arange(200)[None] < lengths[:, None]
    free = span_mask(valid, 0.65, 10, gen(2), same_count=False)
    mask = span_mask(valid, 0.65, 10, gen(2))
    counts = mask.sum(1)
    assert (counts == counts[0]).all() and counts[0] == free.sum(1).min()
    assert not (mask & ~valid).any()


def test_masks_and_distractors_are_a_function_of_the_generator():
    valid = torch.arange(50)[None] < torch.tensor([50, 30])[:, None]
    assert torch.equal(span_mask(valid, 0.65, 10, gen(3)), span_mask(valid, 0.65, 10, gen(3)))
    assert not torch.equal(span_mask(valid, 0.65, 10, gen(3)), span_mask(valid, 0.65, 10, gen(4)))
    mask = span_mask(valid, 0.65, 10, gen(5))
    assert torch.equal(sample_distractors(mask, 7, gen(6)), sample_distractors(mask, 7, gen(6)))


def test_distractors_are_other_masked_frames_of_the_same_sequence_drawn_uniformly():
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[0, [2, 3, 4, 10, 20]] = True
    mask[1, 5:9] = True
    picks = sample_distractors(mask, 4000, gen(7))
    for b in range(2):
        masked = mask[b].nonzero().squeeze(1)
        for t in masked.tolist():
            drawn = picks[b, t]
            assert set(drawn.tolist()) == set(masked.tolist()) - {t}
            counts = torch.bincount(drawn, minlength=30)[masked]
            share = counts[masked != t].float() / len(drawn)
            assert (share - 1 / (len(masked) - 1)).abs().max() < 0.03
