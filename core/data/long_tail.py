"""Long-tailed subsets of a labelled dataset: the class frequencies of an uncurated collection
(SEER's Instagram images, iNaturalist) made from a balanced one, for measuring how pretraining
copes with them."""
from __future__ import annotations

import numpy as np


def power_law_counts(available: list[int], alpha: float, largest: int | None = None) -> list[int]:
    """Items to keep per class, class c (in the given order) keeping largest * (c + 1) ** -alpha,
    at least 1, at most what it has. `largest` defaults to the first class's count."""
    top = available[0] if largest is None else largest
    return [max(1, min(have, round(top * (rank + 1) ** -alpha))) for rank, have in enumerate(available)]


def long_tailed_indices(labels: np.ndarray, alpha: float, largest: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices of a subset whose class frequencies follow a power law of exponent `alpha`; which
    class is frequent is drawn with `seed` (so no digit is favoured by its label's value)."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    members = [rng.permutation(np.nonzero(labels == c)[0]) for c in classes]
    counts = power_law_counts([len(m) for m in members], alpha, largest)
    return np.sort(np.concatenate([m[:n] for m, n in zip(members, counts)]))
