"""Linear probe on frozen features: multinomial logistic regression fitted full-batch with
L-BFGS (the protocol of CPC/SimCLR-style evaluations, e.g. arXiv:2002.05709 §B.6 and the
VISSL/DINO probes). Weight decay is chosen on a held-out 10% of train, then the probe is refit
on all of train. L-BFGS uses a strong-Wolfe line search, so the step size needs no sweep."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2)


def standardize(train_x: Tensor, *others: Tensor) -> list[Tensor]:
    """Zero-mean, unit-variance per dimension using train statistics only."""
    mean = train_x.mean(0)
    std = train_x.std(0).clamp_min(1e-6) if len(train_x) > 1 else torch.ones(train_x.shape[1])
    return [(x - mean) / std for x in (train_x, *others)]


def fit_linear(x: Tensor, y: Tensor, num_classes: int, weight_decay: float, max_iter: int = 200,
               seed: int = 0) -> tuple[Tensor, Tensor]:
    """(weight (C, D), bias (C,)) minimising mean cross-entropy + weight_decay/2 * |W|^2."""
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(num_classes, x.shape[1], generator=gen) * 0.01).requires_grad_()
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + weight_decay / 2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def topk_accuracy(logits: Tensor, y: Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    return float((logits.topk(k, dim=1).indices == y[:, None]).any(1).float().mean())


def holdout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * fraction)))
    return order[n_val:], order[:n_val]


def choose_weight_decay(x: Tensor, y: Tensor, num_classes: int, weight_decays, seed: int, max_iter: int,
                        holdout: float = 0.1) -> float:
    """The weight decay with the best top-1 on a seeded held-out fraction of train."""
    weight_decays = list(weight_decays)
    if len(weight_decays) == 1 or len(x) * holdout < 10:
        return weight_decays[len(weight_decays) // 2]
    fit_idx, val_idx = holdout_split(len(x), holdout, seed)
    xf, xv = standardize(x[fit_idx], x[val_idx])
    best, best_acc = weight_decays[0], -1.0
    for wd in weight_decays:
        w, b = fit_linear(xf, y[fit_idx], num_classes, wd, max_iter, seed)
        acc = topk_accuracy(xv @ w.T + b, y[val_idx], 1)
        if acc > best_acc:
            best, best_acc = wd, acc
    return best


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int = 0,
                 weight_decays=DEFAULT_WEIGHT_DECAYS, max_iter: int = 200) -> dict[str, float]:
    """top1 (and top5 when there are at least 10 classes) of a linear probe."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    train_x, test_x = train_x.float(), test_x.float()
    wd = choose_weight_decay(train_x, train_y, num_classes, weight_decays, seed, max_iter)
    xs, xt = standardize(train_x, test_x)
    w, b = fit_linear(xs, train_y, num_classes, wd, max_iter, seed)
    logits = xt @ w.T + b
    out = {"top1": topk_accuracy(logits, test_y, 1)}
    if num_classes >= 10:
        out["top5"] = topk_accuracy(logits, test_y, 5)
    return out


def balanced_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices of a class-balanced subset: round(fraction * n_c) items (at least 1) of each class."""
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().squeeze(1)
        n = max(1, int(round(fraction * len(idx))))
        picked.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
    return torch.cat(picked).sort().values
