"""DeepCluster-v2 pieces (Caron et al., 2020, arXiv:2006.09882, appendix A): spherical k-means
on a memory bank of embeddings, and the cross-entropy of prototype scores against clusters."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def spherical_kmeans(x: Tensor, centroids: Tensor, iterations: int = 10) -> tuple[Tensor, Tensor]:
    """k-means with cosine similarity. x: (N, D) unit-norm points; centroids: (K, D) initial
    unit-norm centroids. Each iteration assigns every point to its most similar centroid and
    replaces each centroid by the normalised mean of its points; an empty cluster keeps its
    centroid. Returns (centroids (K, D), assignments (N,) of the points to the final centroids)."""
    x = x.float()
    centroids = centroids.float().clone()
    k = len(centroids)
    for _ in range(iterations):
        assignments = (x @ centroids.T).argmax(1)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, x)
        counts = torch.bincount(assignments, minlength=k)
        filled = counts > 0
        centroids[filled] = F.normalize(sums[filled], dim=1)
    return centroids, (x @ centroids.T).argmax(1)


def deepcluster_loss(scores: list[Tensor], assignments: Tensor, temperature: float = 0.1) -> Tensor:
    """scores: V tensors (B, K), prototype (centroid) scores of every crop; assignments: (B,)
    cluster of each image. Returns the mean over crops of cross_entropy(scores / temperature)."""
    return sum(F.cross_entropy(s.float() / temperature, assignments) for s in scores) / len(scores)
