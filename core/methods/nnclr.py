"""NNCLR (Dwibedi et al., 2021, arXiv:2104.14548): each projection's nearest neighbour in a
support set of past projections is the positive for the other view's prediction."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.losses.infonce import info_nce
from core.methods.base import Method
from core.methods.feature_queue import FeatureQueue
from core.methods.registry import register

# NNCLR uses BYOL's augmentation (its sec. 4.1).
VIEWS = ViewConfig(crops=[CropSpec(count=1, scale=(0.08, 1.0), blur_p=1.0),
                          CropSpec(count=1, scale=(0.08, 1.0), blur_p=0.1, solarize_p=0.2)])


def nearest_neighbour(z: Tensor, support: Tensor) -> Tensor:
    """z: (batch, dim), support: (size, dim), both L2-normalised. Returns (batch, dim): for each
    row of z the support row of highest cosine similarity (no gradient flows through it)."""
    return support[(z @ support.T).argmax(dim=1)]


@register("nnclr", family="contrastive", default_backbone="resnet18", views=VIEWS, paper="arXiv:2104.14548")
class NNCLR(Method):
    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 256, pred_hidden_dim: int = 4096,
                 support_size: int = 98304, temperature: float = 0.1):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=3, last_bn=True)
        self.predictor = mlp(proj_dim, pred_hidden_dim, proj_dim)
        self.support = FeatureQueue(support_size, proj_dim)
        self.temperature = temperature

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        z1, z2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        support = self.support.items.clone()  # the push below must not change what the loss saw
        nn1, nn2 = nearest_neighbour(z1.detach(), support), nearest_neighbour(z2.detach(), support)
        # Eq. 2, symmetrised: NN(z1) against the predictions of view 2, and vice versa.
        loss = (info_nce(nn1, p2, temperature=self.temperature) + info_nce(nn2, p1, temperature=self.temperature)) / 2
        self.support.push(z1)
        return loss, {}

    def parts(self):
        return {"backbone": self.backbone, "heads": nn.ModuleDict({"projector": self.projector,
                                                                   "predictor": self.predictor})}
