"""Representation health: per-dimension std (collapse shows as std -> 0, arXiv:2011.10566 §4.1),
RankMe effective rank (arXiv:2210.02885: exp of the entropy of the normalised singular values),
and alignment / uniformity on the hypersphere (arXiv:2005.10242)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def per_dim_std(z: Tensor) -> Tensor:
    """Std of each dimension of L2-normalised embeddings (1/sqrt(D) when spread, 0 when collapsed)."""
    return F.normalize(z.float(), dim=1).std(0)


def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """exp(H(p)), p_k = sigma_k / sum(sigma) + eps: a smooth rank in [1, min(N, D)]."""
    s = torch.linalg.svdvals(z.double())
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> float:
    """E ||f(x) - f(y)||^alpha over positive pairs (rows of z1, z2), on normalised embeddings."""
    a, b = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    return float((a - b).norm(dim=1).pow(alpha).mean())


def uniformity(z: Tensor, t: float = 2.0) -> float:
    """log E exp(-t ||f(x) - f(y)||^2) over distinct pairs, on normalised embeddings."""
    x = F.normalize(z.float(), dim=1)
    return float(torch.pdist(x).pow(2).mul(-t).exp().mean().log())


def health_stats(z: Tensor) -> dict[str, float]:
    std = per_dim_std(z)
    rank = rankme(z)
    return {"std_mean": float(std.mean()), "std_min": float(std.min()), "rankme": rank,
            "rankme_ratio": rank / z.shape[1], "uniformity": uniformity(z)}


def collapse_reason(stats: dict[str, float], dim: int, std_floor: float = 0.05,
                    rank_fraction: float = 0.01) -> str | None:
    """Why the representation looks collapsed, or None. A spread embedding has per-dim std about
    1/sqrt(D); collapse is a mean std below std_floor/sqrt(D), or a RankMe below rank_fraction * D
    (and always a RankMe within 1e-3 of 1, i.e. a single direction)."""
    if stats["std_mean"] * dim ** 0.5 < std_floor:
        return f"mean per-dim std {stats['std_mean']:.2e} is below {std_floor:g}/sqrt({dim})"
    if stats["rankme"] < max(1.0 + 1e-3, rank_fraction * dim):
        return f"RankMe {stats['rankme']:.2f} is below {rank_fraction:.0%} of the dimension {dim}"
    return None


def class_alignment(z: Tensor, labels: Tensor, max_pairs: int = 10_000, seed: int = 0) -> float | None:
    """Alignment over pairs of items sharing a label (a labelled stand-in for augmentation pairs)."""
    gen = torch.Generator().manual_seed(seed)
    i = torch.randint(len(z), (max_pairs,), generator=gen)
    j = torch.randint(len(z), (max_pairs,), generator=gen)
    keep = (labels[i] == labels[j]) & (i != j)
    if not bool(keep.any()):
        return None
    return alignment(z[i[keep]], z[j[keep]])


def health(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int = 0,
           max_items: int = 4096) -> dict[str, float]:
    """Health statistics of the test features (a seeded subset of at most max_items)."""
    if len(test_x) > max_items:
        idx = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(seed))[:max_items]
        test_x, test_y = test_x[idx], test_y[idx]
    out = health_stats(test_x)
    aligned = class_alignment(test_x, test_y, seed=seed)
    if aligned is not None:  # None when no two items share a label
        out["class_alignment"] = aligned
    return out
