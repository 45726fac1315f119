"""2-D maps of embeddings for people to look at: t-SNE (scikit-learn) on L2-normalised vectors."""
from __future__ import annotations

import numpy as np


def even_sample(n: int, limit: int) -> np.ndarray:
    """Indices of at most `limit` of `n` items, evenly spread (deterministic)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def project_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) embeddings -> (N, 2) t-SNE coordinates scaled to [-1, 1] (cosine geometry: the
    vectors are L2-normalised first). Fewer than 4 points are placed on a line."""
    x = np.asarray(vectors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    if n < 4:
        coords = np.stack([np.linspace(-1, 1, n) if n > 1 else np.zeros(n), np.zeros(n)], 1)
        return coords.astype(np.float32)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, (n - 1) / 3))
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                  max_iter=500).fit_transform(x)
    coords -= coords.mean(0)
    return (coords / max(float(np.abs(coords).max()), 1e-12)).astype(np.float32)
