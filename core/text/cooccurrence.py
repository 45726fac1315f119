"""GloVe's co-occurrence counts (glove's cooccur.c): within each document, every pair of
vocabulary words at most `window` apart adds 1/distance, in both directions (symmetric);
out-of-vocabulary words are dropped before the window is laid, and no window crosses documents."""
from __future__ import annotations

import numpy as np
import torch

from core.seeds import step_seed
from core.text.words import split_words


def word_ids(texts: list[str], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(flat int64 ids of the vocabulary words of every text, the document of each)."""
    ids, docs = [], []
    for d, text in enumerate(texts):
        row = [index[w] for w in split_words(text) if w in index]
        ids.extend(row)
        docs.extend([d] * len(row))
    return np.asarray(ids, dtype=np.int64), np.asarray(docs, dtype=np.int64)


def cooccurrence(texts: list[str], index: dict[str, int], window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, counts) of the nonzero entries of X, sorted by (row, col)."""
    from scipy.sparse import coo_matrix

    ids, docs = word_ids(texts, index)
    rows, cols, weights = [], [], []
    for distance in range(1, window + 1):
        same = docs[:-distance] == docs[distance:]
        left, right = ids[:-distance][same], ids[distance:][same]
        weight = np.full(len(left), 1.0 / distance)
        rows += [left, right]
        cols += [right, left]
        weights += [weight, weight]
    n = len(index)
    if not rows or not sum(len(r) for r in rows):
        raise ValueError("no two vocabulary words share a window: the corpus is too small for GloVe")
    matrix = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    matrix.sum_duplicates()
    matrix.sort_indices()
    coo = matrix.tocoo()
    return coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64)


class CooccurrenceBatches:
    """A core.train BatchStream of (B, 3) float64 rows (word id, context id, count): each epoch a
    seeded permutation of the nonzero entries, cut into batches (the last one of an epoch
    smaller), a function of (seed, step) so that a resumed run sees the same batches."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray):
        self.entries = torch.from_numpy(np.stack([rows.astype(np.float64), cols.astype(np.float64), counts], 1))

    def __len__(self) -> int:
        return len(self.entries)

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-len(self.entries) // batch_size)

    def batches(self, batch_size: int, seed: int, start_step: int):
        per_epoch = self.steps_per_epoch(batch_size)
        step = start_step
        order, order_epoch = None, None
        while True:
            epoch, within = divmod(step, per_epoch)
            if epoch != order_epoch:
                generator = torch.Generator().manual_seed(step_seed(seed, epoch, stream=1))
                order, order_epoch = torch.randperm(len(self.entries), generator=generator), epoch
            yield self.entries[order[within * batch_size : (within + 1) * batch_size]]
            step += 1
