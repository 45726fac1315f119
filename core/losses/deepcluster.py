"""DeepCluster-v2 pieces (Caron et al., 2020, arXiv:2006.09882, appendix A): spherical k-means
on a memory bank of embeddings, and the cross-entropy of prototype scores against clusters."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core.losses.precision import fp32

UNASSIGNED = -100  # the official code's fill value for images without a cluster; ignored by the loss


@fp32
@torch.no_grad()
def spherical_kmeans(x: Tensor, centroids: Tensor, iterations: int = 10) -> tuple[Tensor, Tensor]:
    """k-means with cosine similarity, in float32 with autocast off (a bf16 matmul would flip
    near-tied assignments). x: (N, D) unit-norm points; centroids: (K, D) initial unit-norm
    centroids. Each iteration assigns every point to its most similar centroid and replaces
    each centroid by the normalised mean of its points; an empty cluster keeps its centroid.
    Returns (centroids (K, D), assignments (N,) of the points to the final centroids), as the
    official `cluster_memory` (swav/main_deepclusterv2.py)."""
    centroids = centroids.clone()
    k = len(centroids)
    for _ in range(iterations):
        assignments = (x @ centroids.T).argmax(1)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, x)
        counts = torch.bincount(assignments, minlength=k)
        filled = counts > 0
        centroids[filled] = F.normalize(sums[filled], dim=1)
    return centroids, (x @ centroids.T).argmax(1)


@fp32
@torch.no_grad()
def nearest_centroid(x: Tensor, centroids: Tensor) -> Tensor:
    """(..., N) index of the most similar of centroids (..., K, D) for each of x (..., N, D), in fp32."""
    return (x @ centroids.transpose(-1, -2)).argmax(-1)


def deepcluster_loss(scores: list[Tensor], assignments: Tensor, temperature: float = 0.1) -> Tensor:
    """scores: V tensors (B, K), prototype (centroid) scores of every crop; assignments: (B,)
    cluster of each image, UNASSIGNED (-100) for none. Returns the mean over crops of
    cross_entropy(scores / temperature) over the assigned images (the official
    CrossEntropyLoss(ignore_index=-100)); 0, with gradient graph, when none is assigned."""
    assigned = (assignments != UNASSIGNED).sum().clamp(min=1)
    total = sum(F.cross_entropy(s.float() / temperature, assignments, ignore_index=UNASSIGNED, reduction="sum")
                for s in scores)
    return total / assigned / len(scores)
