"""Clustering quality of frozen features: k-means with as many clusters as classes on
L2-normalised features, scored by NMI and ARI against the labels (as in SwAV/DINO analyses,
arXiv:2006.09882, and the SCAN k-means baseline, arXiv:2005.12320)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def kmeans_scores(features: Tensor, labels: Tensor, seed: int = 0, n_clusters: int | None = None,
                  n_init: int = 10) -> dict[str, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    n_clusters = n_clusters or int(labels.unique().numel())
    x = F.normalize(features.float(), dim=1).numpy()
    assigned = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(x)
    y = labels.numpy()
    return {"nmi": float(normalized_mutual_info_score(y, assigned)), "ari": float(adjusted_rand_score(y, assigned))}


def clustering(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int = 0,
               n_init: int = 10) -> dict[str, float]:
    """k-means on the test split's features (no training labels are used)."""
    return kmeans_scores(test_x, test_y, seed=seed, n_init=n_init)
