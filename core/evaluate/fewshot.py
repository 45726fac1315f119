"""Few-shot (semi-supervised) linear evaluation: a linear probe trained on 1% and 10% of the
labels, class-balanced, averaged over fixed seeds (the low-label protocol of SimCLR,
arXiv:2002.05709 §4, and BYOL, arXiv:2006.07733 §4.2, here with a frozen encoder)."""
from __future__ import annotations

from torch import Tensor

from core.evaluate.linear import DEFAULT_WEIGHT_DECAYS, balanced_subset, linear_probe


def few_shot(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int = 0,
             fractions=(0.01, 0.1), repeats: int = 3, weight_decays=DEFAULT_WEIGHT_DECAYS,
             max_iter: int = 200) -> dict[str, float]:
    """{'top1@1pct': mean top-1 over `repeats` seeded subsets, ...} for each label fraction."""
    out = {}
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise ValueError(f"few-shot fractions must be in (0, 1]; got {fraction}")
        accs = []
        for r in range(repeats):
            idx = balanced_subset(train_y, fraction, seed + 1000 * r)
            result = linear_probe(train_x[idx], train_y[idx], test_x, test_y, seed=seed + r,
                                  weight_decays=weight_decays, max_iter=max_iter)
            accs.append(result["top1"])
        out[f"top1@{fraction * 100:g}pct"] = sum(accs) / len(accs)
    return out
