"""Fine-tuning evaluation: the encoder and a linear head trained end to end on the labels for a
step budget (the fine-tune protocol of SimCLR, arXiv:2002.05709 §B.5, and MAE,
arXiv:2111.06377 §A.1, reduced to AdamW with a cosine schedule and no augmentation). Needs the
encoder itself, not cached features, so the worker calls it directly."""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.augment import normalize
from core.evaluate.linear import topk_accuracy


def finetune(encoder: nn.Module, train_images: Tensor, train_labels: Tensor, test_images: Tensor,
             test_labels: Tensor, mean: list[float], std: list[float], *, seed: int = 0, steps: int = 200,
             batch_size: int = 64, lr: float = 1e-3, head_lr: float | None = None, weight_decay: float = 0.05,
             device: str | torch.device = "cpu", should_stop: Callable[[int], bool] | None = None) -> dict[str, float]:
    """Train a copy of `encoder` + a linear head on uint8 images; top-1 (top-5 with >= 10 classes)
    on the test images. `should_stop(step)` may end training early (cancel)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    model = copy.deepcopy(encoder).to(device).train()
    head = nn.Linear(encoder.feature_dim, num_classes).to(device)
    opt = torch.optim.AdamW([{"params": model.parameters(), "lr": lr},
                             {"params": head.parameters(), "lr": head_lr or lr * 10}], weight_decay=weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(train_images))
    for step in range(steps):
        if should_stop is not None and should_stop(step):
            break
        scale = 0.5 * (1 + math.cos(math.pi * step / steps))
        for group, lr0 in zip(opt.param_groups, base):
            group["lr"] = lr0 * scale
        idx = torch.randint(len(train_images), (batch_size,), generator=gen)
        x = normalize(train_images[idx].to(device).float() / 255, mean, std)
        loss = F.cross_entropy(head(model(x)), train_labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    logits = []
    with torch.no_grad():
        for chunk in test_images.split(512):
            logits.append(head(model(normalize(chunk.to(device).float() / 255, mean, std))).float().cpu())
    logits = torch.cat(logits)
    out = {"top1": topk_accuracy(logits, test_labels, 1)}
    if num_classes >= 10:
        out["top5"] = topk_accuracy(logits, test_labels, 5)
    return out
