"""Weighted kNN on cosine similarity (Wu et al., 2018; the DINO protocol)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_predict(train_features: Tensor, train_labels: Tensor, query: Tensor, k: int = 20,
                temperature: float = 0.07, num_classes: int | None = None, chunk: int = 1024) -> Tensor:
    """Class scores (Q, num_classes): each of the k most cosine-similar training items votes for its
    label with weight exp(similarity / temperature)."""
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, len(train_features))
    bank = F.normalize(train_features.float(), dim=1)
    scores = []
    for q in F.normalize(query.float(), dim=1).split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(q), num_classes, device=q.device)
        votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                 k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 accuracy of weighted kNN, in [0, 1]."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes).argmax(1)
    return float((pred == test_labels).float().mean())
