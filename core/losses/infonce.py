"""InfoNCE (van den Oord et al., 2018, arXiv:1807.03748) in the forms MoCo and NNCLR use."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core import distributed


def info_nce(query: Tensor, positive: Tensor, negatives: Tensor | None = None, temperature: float = 0.2) -> Tensor:
    """query, positive: (batch, dim), row i of `positive` being query i's positive key.
    With `negatives` (K, dim), query i's logits are [q_i.k_i, q_i.n_1 .. q_i.n_K] (MoCo,
    arXiv:1911.05722 eq. 1); without, they are q_i.k_j over the batch, the other rows being the
    negatives (MoCo v3, NNCLR). Vectors are L2-normalised here. Returns the mean cross entropy.

    Without `negatives`, the keys are gathered from every rank (the batch is the global one) and
    this rank's queries find their positives at its offset, as MoCo v3's concat_all_gather."""
    q, k = F.normalize(query, dim=1), F.normalize(positive, dim=1)
    if negatives is None:
        k = distributed.gather(k)
        logits = q @ k.T
        targets = torch.arange(len(q), device=q.device) + distributed.offset(len(q))
    else:
        n = F.normalize(negatives, dim=1).to(q.dtype)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ n.T], dim=1)
        targets = torch.zeros(len(q), dtype=torch.long, device=q.device)
    return F.cross_entropy(logits / temperature, targets)
